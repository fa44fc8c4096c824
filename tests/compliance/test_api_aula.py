"""Aula's own district resources through the API: live sessions and attendance, exam results and the access
log of the district's students, each behind its scope and inside the district."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from classrooms import services as classroom_services
from exams import services as exam_services
from exams.models import Exam, Question
from tests.compliance.test_api import assert_error, bearer, make_api_client, token_for

pytestmark = pytest.mark.django_db

ALL = "roster.read results.read audit.read"


@pytest.fixture
def auth(client, world):
    return bearer(token_for(client, make_api_client(world.district, "aula", scopes=ALL), scope=ALL))


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


def submitted_attempt(course, student):
    now = timezone.now()
    exam = exam_services.exam_upsert(course=course, title=f"Quiz {course.code}", opens_at=now - dt.timedelta(hours=1),
                                     closes_at=now + dt.timedelta(hours=1), status=Exam.Status.PUBLISHED)
    bank = exam_services.bank_create(course=course, title="bank")
    question = exam_services.question_create(bank=bank, kind=Question.Kind.SINGLE, prompt="1+1", options=["1", "2"],
                                             correct=[1])
    exam_services.section_add(exam=exam, questions=[question])
    attempt = exam_services.attempt_start(exam=exam, student=student)
    exam_services.answer_save(attempt_id=attempt.pk, student=student, question_id=question.pk, value=[1], version=1)
    return exam_services.attempt_submit(attempt_id=attempt.pk, student=student)


def test_live_sessions_of_the_district_with_filters(client, world, auth):
    assert {s["id"] for s in results(client.get("/api/v1/sessions/", **auth))} == {world.session_a.pk,
                                                                                   world.session_b.pk}
    only_a = results(client.get("/api/v1/sessions/", {"course": world.course_a.pk}, **auth))
    assert [s["id"] for s in only_a] == [world.session_a.pk]
    assert only_a[0]["course"] == world.course_a.pk and only_a[0]["title"] == "Live A"
    assert results(client.get("/api/v1/sessions/", {"status": "live"}, **auth)) == []
    assert client.get(f"/api/v1/sessions/{world.session_a.pk}/", **auth).json()["id"] == world.session_a.pk


def test_attendance_needs_results_read_and_stays_in_the_district(client, world, auth):
    t0 = (timezone.now() - dt.timedelta(hours=1)).timestamp()
    for session, student in ((world.session_a, world.student_a), (world.session_c, world.student_c)):
        classroom_services.attendance_interval_record(session_id=session.pk, user_id=student.pk,
                                                      conn_id=f"c{session.pk}", joined_at=t0, left_at=t0 + 1200)
        classroom_services.attendance_compute(session=session)
    rows = results(client.get(f"/api/v1/sessions/{world.session_a.pk}/attendance/", **auth))
    assert [(r["student"], r["status"]) for r in rows] == [(world.student_a.pk, "present")]
    assert rows[0]["present_seconds"] == 1200
    assert_error(client.get(f"/api/v1/sessions/{world.session_c.pk}/attendance/", **auth), 404, "not_found")
    roster_only = bearer(token_for(client, make_api_client(world.district, "ro")))
    assert_error(client.get(f"/api/v1/sessions/{world.session_a.pk}/attendance/", **roster_only), 403,
                 "permission_denied")


def test_exam_results(client, world, auth):
    mine = submitted_attempt(world.course_a, world.student_a)
    submitted_attempt(world.course_c, world.student_c)
    rows = results(client.get("/api/v1/results/", **auth))
    assert [r["id"] for r in rows] == [mine.pk]
    assert rows[0]["student"] == world.student_a.pk and rows[0]["course"] == world.course_a.pk
    assert rows[0]["score"] == "1.00" and rows[0]["max_score"] == "1.00" and rows[0]["released"] is False
    assert results(client.get("/api/v1/results/", {"course": world.course_c.pk}, **auth)) == []
    assert results(client.get("/api/v1/results/", {"student": world.student_c.pk}, **auth)) == []
    roster_only = bearer(token_for(client, make_api_client(world.district, "ro")))
    assert_error(client.get("/api/v1/results/", **roster_only), 403, "permission_denied")


def test_access_log_of_the_districts_students(client, world, auth):
    from compliance import audit
    from compliance.models import AccessEntry

    def access(student, purpose):
        audit.record_access(actor=world.staff_a, objects=[student], purpose=purpose, via="page")
        return AccessEntry.objects.order_by("-pk").first()

    mine = access(world.student_a, "attendance review")
    access(world.student_c, "other district")
    access(world.teacher_a, "not a student")
    rows = results(client.get("/api/v1/audit/access/", **auth))
    assert [(r["student"], r["actor"], r["purpose"], r["institution"]) for r in rows
            if r["purpose"] != "api.list"] == [(world.student_a.pk, world.staff_a.pk, "attendance review",
                                                world.school_a.pk)]
    assert mine.pk in {r["id"] for r in rows}
    assert results(client.get("/api/v1/audit/access/", {"student": world.student_c.pk}, **auth)) == []
    later = (timezone.now() + dt.timedelta(minutes=1)).isoformat()
    assert results(client.get("/api/v1/audit/access/", {"since": later}, **auth)) == []
    assert_error(client.get("/api/v1/audit/access/", {"since": ""}, **auth), 400, "invalid")
    roster_only = bearer(token_for(client, make_api_client(world.district, "ro")))
    assert_error(client.get("/api/v1/audit/access/", **roster_only), 403, "permission_denied")


def test_disclosure_log_of_the_districts_students(client, world, auth):
    from compliance import disclosures
    from tests import factories

    for student, school in ((world.student_a, world.school_a), (world.student_c, world.school_c)):
        disclosures.record_manual_disclosure(student=student, institution_id=school.pk, party="County clinic",
                                             basis="health_safety", interest="emergency", categories=["health"],
                                             disclosed_at=timezone.now(), actor=factories.staff_of(school))
    rows = results(client.get("/api/v1/audit/disclosures/", **auth))
    assert [(r["student"], r["receiving_party"]) for r in rows] == [(world.student_a.pk, "County clinic")]
    assert results(client.get("/api/v1/audit/disclosures/", {"student": world.student_c.pk}, **auth)) == []
    roster_only = bearer(token_for(client, make_api_client(world.district, "ro2")))
    assert_error(client.get("/api/v1/audit/disclosures/", **roster_only), 403, "permission_denied")
