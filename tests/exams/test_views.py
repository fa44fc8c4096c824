"""Exam pages through django.test.Client: who sees which exam, starting, the attempt and result pages,
the teacher pages (proctor, grading, release) and the integrity-log export."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.urls import reverse
from django.utils import timezone

from classrooms.models import Role
from exams import services
from exams.models import Answer, Attempt, Exam, IntegrityEvent, Notification
from tests import factories
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db(transaction=True)  # start and attempt pages run on pool threads (config.http)


def as_user(client, user):
    client.force_login(user)
    return client


def other_exam(course, title: str) -> Exam:
    now = timezone.now()
    return services.exam_upsert(course=course, title=title, opens_at=now - dt.timedelta(hours=1),
                                closes_at=now + dt.timedelta(hours=2), status=Exam.Status.PUBLISHED)


def submitted_with_essay(ex: ExamWorld, student, essay: str = "Because <b>reasons</b>") -> Attempt:
    attempt = services.attempt_start(exam=ex.exam, student=student)
    services.answer_save(attempt_id=attempt.pk, student=student, question_id=ex.q_essay.pk, value=essay, version=1)
    services.answer_save(attempt_id=attempt.pk, student=student, question_id=ex.q_single.pk, value=[1], version=1)
    services.answer_save(attempt_id=attempt.pk, student=student, question_id=ex.q_multi.pk, value=[0, 2],
                         version=1)
    return services.attempt_submit(attempt_id=attempt.pk, student=student)


@pytest.fixture
def classmate(world):
    """Another student of course A (same school, same exam)."""
    student = factories.user("classmate", age=14)
    factories.enroll(world.course_a, student)
    return student


@pytest.fixture
def teacher_b(world):
    """A teacher in another school of the same district."""
    teacher = factories.user("teacher_b")
    factories.enroll(world.course_b, teacher, Role.TEACHER)
    return teacher


# --- the exam list -----------------------------------------------------------------------------------------

def test_list_shows_only_the_students_own_course_exams(client, world, ex):
    other_exam(world.course_b, "School B exam")
    other_exam(world.course_c, "District C exam")
    services.exam_upsert(course=world.course_a, title="Draft A", status=Exam.Status.DRAFT)
    page = as_user(client, world.student_a).get(reverse("exam-list"))
    assert page.status_code == 200
    titles = [row["exam"].title for row in page.context["rows"]]
    assert titles == ["Unit test"]
    html = page.content.decode()
    assert "School B exam" not in html and "District C exam" not in html and "Draft A" not in html
    assert 'data-testid="start"' in html and "0 of 1" in html
    assert page.context["teaching"] == []

    client.force_login(world.student_b)
    assert [r["exam"].title for r in client.get(reverse("exam-list")).context["rows"]] == ["School B exam"]


def test_list_shows_resume_attempts_used_and_the_result_link(client, world, ex):
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    html = as_user(client, world.student_a).get(reverse("exam-list")).content.decode()
    assert reverse("attempt", args=[attempt.pk]) in html and 'data-testid="resume"' in html
    assert "1 of 1" in html and 'data-testid="start"' not in html
    services.attempt_submit(attempt_id=attempt.pk, student=world.student_a)
    html = client.get(reverse("exam-list")).content.decode()
    assert 'data-testid="resume"' not in html and 'data-testid="start"' not in html  # every attempt used
    assert reverse("attempt-result", args=[attempt.pk]) not in html  # not released yet
    services.grades_release(exam=ex.exam, actor=world.teacher_a)
    html = client.get(reverse("exam-list")).content.decode()
    assert reverse("attempt-result", args=[attempt.pk]) in html


def test_teachers_see_their_exams_with_links_to_the_teacher_pages(client, world, ex, teacher_b):
    services.exam_upsert(course=world.course_a, title="Draft A", status=Exam.Status.DRAFT)
    other_exam(world.course_b, "School B exam")
    page = as_user(client, world.teacher_a).get(reverse("exam-list"))
    assert sorted(e.title for e in page.context["teaching"]) == ["Draft A", "Unit test"]
    html = page.content.decode()
    assert reverse("exam-proctor", args=[ex.exam.pk]) in html and reverse("exam-grading", args=[ex.exam.pk]) in html
    assert page.context["rows"] == []
    assert [e.title for e in as_user(client, teacher_b).get(reverse("exam-list")).context["teaching"]] \
        == ["School B exam"]


# --- starting ----------------------------------------------------------------------------------------------

def test_start_is_idempotent_and_redirects_to_the_attempt(client, world, ex):
    as_user(client, world.student_a)
    first = client.post(reverse("exam-start", args=[ex.exam.pk]))
    second = client.post(reverse("exam-start", args=[ex.exam.pk]))
    attempt = Attempt.objects.get(exam=ex.exam, student=world.student_a)
    assert first.status_code == second.status_code == 302
    assert first.url == second.url == reverse("attempt", args=[attempt.pk])
    assert attempt.state == Attempt.State.IN_PROGRESS
    assert IntegrityEvent.objects.filter(attempt=attempt, kind="started").count() == 1
    assert client.get(reverse("exam-start", args=[ex.exam.pk])).status_code == 405  # a write is a POST


def test_start_refusals_are_shown_as_messages(client, world, ex):
    as_user(client, world.student_a)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    services.attempt_submit(attempt_id=attempt.pk, student=world.student_a)
    response = client.post(reverse("exam-start", args=[ex.exam.pk]), follow=True)
    assert response.redirect_chain == [(reverse("exam-list"), 302)]
    assert "used every attempt" in response.content.decode()

    now = timezone.now()
    late = services.exam_upsert(course=world.course_a, title="Yesterday", opens_at=now - dt.timedelta(days=1),
                                closes_at=now - dt.timedelta(hours=20), status=Exam.Status.PUBLISHED)
    response = client.post(reverse("exam-start", args=[late.pk]), follow=True)
    assert "has closed" in response.content.decode()
    assert not Attempt.objects.filter(exam=late).exists()


@pytest.mark.parametrize("who", ["student_b", "student_c", "teacher_a", "outsider"])
def test_only_the_courses_students_can_start(client, world, ex, who):
    response = as_user(client, getattr(world, who)).post(reverse("exam-start", args=[ex.exam.pk]))
    assert response.status_code == 404
    assert not Attempt.objects.exists()


# --- the attempt and result pages -----------------------------------------------------------------------

def test_attempt_page_carries_the_questions_without_the_answer_key(client, world, ex):
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    services.answer_save(attempt_id=attempt.pk, student=world.student_a, question_id=ex.q_short.pk,
                         value="Paris", version=3)
    page = as_user(client, world.student_a).get(reverse("attempt", args=[attempt.pk]))
    assert page.status_code == 200
    config = page.context["config"]
    assert config["ws_path"] == f"/ws/v1/attempts/{attempt.pk}/"
    assert config["api"]["answer"] == f"/api/v1/attempts/{attempt.pk}/answers/"
    initial = config["initial"]
    assert [q["id"] for q in initial["questions"]] == [i["question"] for i in attempt.layout]
    assert initial["answers"][str(ex.q_short.pk)]["version"] == 3
    assert initial["attempt"]["deadline"]
    html = page.content.decode()
    assert '"correct"' not in html and "numeric_answer" not in html and "3.1416" not in html
    assert 'id="exam-config"' in html


def test_a_submitted_attempt_page_says_submitted(client, world, ex):
    attempt = submitted_with_essay(ex, world.student_a)
    page = as_user(client, world.student_a).get(reverse("attempt", args=[attempt.pk]))
    assert page.status_code == 200 and page.context["config"]["initial"] is None
    html = page.content.decode()
    assert "Submitted" in html and reverse("attempt-result", args=[attempt.pk]) in html


def test_opening_a_page_after_the_deadline_finalises_the_attempt(client, world, ex):
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    Attempt.objects.filter(pk=attempt.pk).update(deadline=timezone.now() - dt.timedelta(seconds=1))
    page = as_user(client, world.student_a).get(reverse("attempt", args=[attempt.pk]))
    assert page.context["attempt"].state == Attempt.State.SUBMITTED
    assert "Submitted" in page.content.decode()


@pytest.mark.parametrize("page", ["attempt", "attempt-result", "attempt-log"])
@pytest.mark.parametrize("who", ["classmate", "student_b", "student_c", "outsider"])
def test_another_students_attempt_pages_are_not_found(client, world, ex, classmate, page, who):
    attempt = submitted_with_essay(ex, world.student_a)
    user = classmate if who == "classmate" else getattr(world, who)
    assert as_user(client, user).get(reverse(page, args=[attempt.pk])).status_code == 404


def test_own_log_is_not_for_students(client, world, ex):
    attempt = submitted_with_essay(ex, world.student_a)
    assert as_user(client, world.student_a).get(reverse("attempt-log", args=[attempt.pk])).status_code == 404


def test_result_waits_for_release_then_shows_score_and_review(client, world, ex):
    ex.exam.show_review = True
    ex.exam.save()
    attempt = submitted_with_essay(ex, world.student_a, essay="My essay")
    as_user(client, world.student_a)
    page = client.get(reverse("attempt-result", args=[attempt.pk]))
    assert page.status_code == 200 and "not released" in page.content.decode()
    assert 'data-testid="score"' not in page.content.decode()

    services.grades_release(exam=ex.exam, actor=world.teacher_a)
    page = client.get(reverse("attempt-result", args=[attempt.pk]))
    assert "still being graded" in page.content.decode()  # the essay has no points yet

    answer = Answer.objects.get(attempt=attempt, question=ex.q_essay)
    services.grade_manual(answer_id=answer.pk, grader=world.teacher_a, points=3, feedback="Good start")
    html = client.get(reverse("attempt-result", args=[attempt.pk])).content.decode()
    assert 'data-testid="score"' in html and "<strong>5</strong> / 10" in html  # 1 + 1 + 3 of 10
    review = {row["question"].pk: row for row in client.get(reverse("attempt-result", args=[attempt.pk]))
              .context["review"]}
    assert review[ex.q_single.pk]["answer"] == "4"  # the option's label, not its index
    assert review[ex.q_multi.pk]["answer"] in ("2; 5", "5; 2")
    assert review[ex.q_essay.pk]["feedback"] == "Good start" and "Good start" in html
    assert review[ex.q_tf.pk]["answer"] == ""


def test_no_review_unless_the_exam_shows_it(client, world, ex):
    attempt = submitted_with_essay(ex, world.student_a)
    answer = Answer.objects.get(attempt=attempt, question=ex.q_essay)
    services.grade_manual(answer_id=answer.pk, grader=world.teacher_a, points=5)
    services.grades_release(exam=ex.exam, actor=world.teacher_a)
    page = as_user(client, world.student_a).get(reverse("attempt-result", args=[attempt.pk]))
    assert 'data-testid="score"' in page.content.decode() and page.context["review"] == []


# --- teacher pages --------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", ["exam-proctor", "exam-grading"])
@pytest.mark.parametrize("who", ["student_a", "student_b", "teacher_b", "staff_a", "outsider"])
def test_teacher_pages_are_not_found_for_others(client, world, ex, teacher_b, page, who):
    user = teacher_b if who == "teacher_b" else getattr(world, who)
    as_user(client, user)
    assert client.get(reverse(page, args=[ex.exam.pk])).status_code == 404
    assert client.post(reverse("exam-release", args=[ex.exam.pk])).status_code == 404
    ex.exam.refresh_from_db()
    assert ex.exam.grades_released_at is None


@pytest.mark.parametrize("page", ["exam-proctor", "exam-grading"])
def test_teachers_and_tas_of_the_course_see_the_teacher_pages(client, world, ex, page):
    ta = factories.user("ta_a")
    factories.enroll(world.course_a, ta, Role.TA)
    for user in (world.teacher_a, ta):
        assert as_user(client, user).get(reverse(page, args=[ex.exam.pk])).status_code == 200


def test_proctor_page_lists_the_enrolled_students(client, world, ex, classmate):
    page = as_user(client, world.teacher_a).get(reverse("exam-proctor", args=[ex.exam.pk]))
    config = page.context["config"]
    assert config["ws_path"] == f"/ws/v1/exams/{ex.exam.pk}/proctor/"
    assert sorted(s["id"] for s in config["students"]) == sorted([world.student_a.pk, classmate.pk])


def test_grading_a_essay_updates_the_score(client, world, ex):
    attempt = submitted_with_essay(ex, world.student_a)
    assert attempt.needs_manual_grading and attempt.score == 2
    answer = Answer.objects.get(attempt=attempt, question=ex.q_essay)
    page = as_user(client, world.teacher_a).get(reverse("exam-grading", args=[ex.exam.pk]))
    assert [a.pk for a in page.context["queue"]] == [answer.pk]
    assert "Because &lt;b&gt;reasons&lt;/b&gt;" in page.content.decode()  # the student's text, inert

    too_many = client.post(reverse("exam-grading", args=[ex.exam.pk]),
                           data={"answer_id": answer.pk, "points": "6", "feedback": ""}, follow=True)
    assert "between 0 and 5" in too_many.content.decode()
    answer.refresh_from_db()
    assert answer.points is None

    response = client.post(reverse("exam-grading", args=[ex.exam.pk]),
                           data={"answer_id": answer.pk, "points": "4.5", "feedback": "Clear argument"})
    assert response.status_code == 302 and response.url == reverse("exam-grading", args=[ex.exam.pk])
    answer.refresh_from_db()
    attempt.refresh_from_db()
    assert answer.points == 4.5 and answer.feedback == "Clear argument" and answer.graded_by == world.teacher_a
    assert attempt.score == 6.5 and not attempt.needs_manual_grading and attempt.graded_at is not None
    assert list(client.get(reverse("exam-grading", args=[ex.exam.pk])).context["queue"]) == []


def test_grading_an_answer_of_another_exam_is_not_found(client, world, ex):
    attempt = submitted_with_essay(ex, world.student_a)
    answer = Answer.objects.get(attempt=attempt, question=ex.q_essay)
    teacher = factories.user("teacher_other_course")
    course = factories.course(world.school_a, "ART-A")
    factories.enroll(course, teacher, Role.TEACHER)
    elsewhere = other_exam(course, "Art exam")
    response = as_user(client, teacher).post(reverse("exam-grading", args=[elsewhere.pk]),
                                             data={"answer_id": answer.pk, "points": "5"})
    assert response.status_code == 404
    answer.refresh_from_db()
    assert answer.points is None


def test_release_grades(client, world, ex):
    attempt = submitted_with_essay(ex, world.student_a)
    answer = Answer.objects.get(attempt=attempt, question=ex.q_essay)
    services.grade_manual(answer_id=answer.pk, grader=world.teacher_a, points=2)
    response = as_user(client, world.teacher_a).post(reverse("exam-release", args=[ex.exam.pk]), follow=True)
    ex.exam.refresh_from_db()
    assert ex.exam.grades_released_at is not None
    assert "1 graded attempt" in response.content.decode()
    assert Notification.objects.filter(attempt=attempt, kind="graded").count() == 1
    client.post(reverse("exam-release", args=[ex.exam.pk]))  # again: nobody is notified twice
    assert Notification.objects.filter(attempt=attempt, kind="graded").count() == 1
    assert client.get(reverse("exam-release", args=[ex.exam.pk])).status_code == 405


# --- the integrity log ------------------------------------------------------------------------------------

def test_log_json_exports_and_verifies_the_chain(client, world, ex):
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    services.attempt_event(attempt_id=attempt.pk, student=world.student_a, kind="focus_lost")
    services.attempt_event(attempt_id=attempt.pk, student=world.student_a, kind="focus_regained",
                           data={"duration_ms": 4200})
    services.answer_save(attempt_id=attempt.pk, student=world.student_a, question_id=ex.q_short.pk,
                         value="Paris", version=1)
    services.attempt_submit(attempt_id=attempt.pk, student=world.student_a)
    response = as_user(client, world.teacher_a).get(reverse("attempt-log", args=[attempt.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = json.loads(response.content)
    assert body["verification"]["intact"] is True and body["verification"]["first_bad_index"] is None
    kinds = [e["kind"] for e in body["entries"]]
    assert kinds == ["started", "focus_lost", "focus_regained", "answered", "submitted"]
    assert body["entries"][2]["data"] == {"duration_ms": 4200}
    assert body["entries"][0]["prev_hash"] == services.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(body["entries"], body["entries"][1:], strict=False))
    assert body["attempt"]["log_head"] == body["entries"][-1]["hash"]
    assert body["attempt"]["student"]["id"] == world.student_a.pk

    # Someone edits the stored log: the export says where the chain breaks.
    IntegrityEvent.objects.filter(attempt=attempt, index=2).update(data={"duration_ms": 10})
    body = json.loads(client.get(reverse("attempt-log", args=[attempt.pk])).content)
    assert body["verification"] == body["verification"] | {"intact": False, "first_bad_index": 2}


def test_log_json_is_not_for_other_schools_teachers(client, world, ex, teacher_b):
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    assert as_user(client, teacher_b).get(reverse("attempt-log", args=[attempt.pk])).status_code == 404
