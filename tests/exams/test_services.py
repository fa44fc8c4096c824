"""Exam attempts: deadlines, autosave versions, idempotent finalisation, grading and the integrity log."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from exams import services
from exams.models import Attempt, Exam, GradeSync, IntegrityEvent, Notification, Question
from tests import factories
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db


def shift(attempt: Attempt, minutes: float) -> None:
    """Move an attempt's clock: pretend it started `minutes` earlier."""
    delta = dt.timedelta(minutes=minutes)
    Attempt.objects.filter(pk=attempt.pk).update(
        started_at=attempt.started_at - delta, deadline=attempt.deadline - delta,
        grace_until=attempt.grace_until - delta if attempt.grace_until else None)


def test_layout_is_reproducible_from_the_seed_and_differs_between_students(ex):
    a = services.layout_build(ex.exam, 12345)
    assert a == services.layout_build(ex.exam, 12345)
    assert sorted(i["question"] for i in a) == sorted(q.pk for q in ex.fixed)
    orders = {tuple(i["question"] for i in services.layout_build(ex.exam, seed)) for seed in range(20)}
    assert len(orders) > 5
    single = next(i for i in a if i["question"] == ex.q_single.pk)
    assert sorted(single["options"]) == [0, 1, 2]


def test_draw_from_bank_avoids_repeating_a_students_questions(world):
    exam = services.exam_upsert(course=world.course_a, title="Draw", status=Exam.Status.PUBLISHED,
                                attempts_allowed=3, time_limit_minutes=10)
    bank = services.bank_create(course=world.course_a, title="Pool")
    for i in range(6):
        services.question_create(bank=bank, kind=Question.Kind.SHORT, prompt=f"q{i}", correct=["x"])
    services.section_add(exam=exam, draw_bank=bank, draw_count=3)
    first = services.attempt_start(exam=exam, student=world.student_a)
    services.attempt_submit(attempt_id=first.pk, student=world.student_a)
    second = services.attempt_start(exam=exam, student=world.student_a)
    q1 = {i["question"] for i in first.layout}
    q2 = {i["question"] for i in second.layout}
    assert len(q1) == len(q2) == 3 and not q1 & q2


def test_start_is_idempotent_and_the_deadline_is_server_time_plus_accommodation(ex):
    services.accommodation_set(student=ex.w.student_a, institution_id=ex.exam.institution_id, time_multiplier="1.5",
                               extra_minutes=5)
    before = timezone.now()
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    again = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    assert again.pk == attempt.pk and attempt.state == Attempt.State.IN_PROGRESS
    expected = attempt.started_at + dt.timedelta(minutes=30 * 1.5 + 5)
    assert attempt.deadline == expected and attempt.started_at >= before


def test_close_cuts_the_deadline_and_warns_unless_extended_for_that_student(world):
    now = timezone.now()
    exam = services.exam_upsert(course=world.course_a, title="Short window", opens_at=now - dt.timedelta(minutes=5),
                                closes_at=now + dt.timedelta(minutes=40), time_limit_minutes=30,
                                status=Exam.Status.PUBLISHED)
    services.accommodation_set(student=world.student_a, institution_id=exam.institution_id, time_multiplier=2)
    warnings = services.close_cut_warnings(exam)
    assert [w["student_id"] for w in warnings] == [world.student_a.pk]
    services.close_extend_for(exam=exam, student=world.student_a, closes_at=now + dt.timedelta(hours=2),
                              actor=world.teacher_a)
    assert services.close_cut_warnings(exam) == []
    attempt = services.attempt_start(exam=exam, student=world.student_a)
    assert attempt.deadline == attempt.started_at + dt.timedelta(minutes=60)


def test_autosave_versions_refuse_stale_and_replayed_saves(ex):
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    s = ex.w.student_a
    a, applied = services.answer_save(attempt_id=attempt.pk, student=s, question_id=ex.q_short.pk, value="Lyon",
                                      version=1)
    assert applied
    a, applied = services.answer_save(attempt_id=attempt.pk, student=s, question_id=ex.q_short.pk, value="Paris",
                                      version=3)
    assert applied and a.value == "Paris"
    a, applied = services.answer_save(attempt_id=attempt.pk, student=s, question_id=ex.q_short.pk, value="Lyon",
                                      version=2)  # arrives late
    assert not applied and a.value == "Paris" and a.version == 3
    with pytest.raises(ValidationError):
        services.answer_save(attempt_id=attempt.pk, student=s, question_id=ex.q_single.pk, value=[7], version=1)
    with pytest.raises(PermissionDenied):
        services.answer_save(attempt_id=attempt.pk, student=ex.w.student_b, question_id=ex.q_short.pk, value="x",
                             version=9)


def test_save_after_the_deadline_is_refused_and_finalises_on_touch(ex):
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    services.answer_save(attempt_id=attempt.pk, student=ex.w.student_a, question_id=ex.q_single.pk, value=[1],
                         version=1)
    shift(attempt, 31)
    with pytest.raises(services.AttemptClosed):
        services.answer_save(attempt_id=attempt.pk, student=ex.w.student_a, question_id=ex.q_single.pk, value=[0],
                             version=2)
    attempt.refresh_from_db()
    assert attempt.state == Attempt.State.SUBMITTED
    assert attempt.finish_reason == Attempt.FinishReason.DEADLINE
    assert attempt.finished_at == attempt.deadline and attempt.finalized_at >= attempt.deadline
    assert attempt.answers.get(question=ex.q_single).value == [1]


def test_grading_of_every_objective_kind_and_manual_essay(ex):
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    s = ex.w.student_a
    for q, value in [(ex.q_single, [1]), (ex.q_multi, [2, 0]), (ex.q_tf, True), (ex.q_num, "3.14"),
                     (ex.q_short, "  paris "), (ex.q_essay, "Because...")]:
        services.answer_save(attempt_id=attempt.pk, student=s, question_id=q.pk, value=value, version=1)
    services.attempt_submit(attempt_id=attempt.pk, student=s)
    attempt.refresh_from_db()
    assert attempt.score == Decimal(5) and attempt.max_score == Decimal(10)
    assert attempt.needs_manual_grading and attempt.graded_at is None
    assert not GradeSync.objects.filter(attempt=attempt).exists()  # no result leaves Aula before release
    essay = attempt.answers.get(question=ex.q_essay)
    with pytest.raises(ValidationError):
        services.grade_manual(answer_id=essay.pk, grader=ex.w.teacher_a, points=6)
    with pytest.raises(PermissionDenied):
        services.grade_manual(answer_id=essay.pk, grader=ex.w.student_b, points=1)
    services.grade_manual(answer_id=essay.pk, grader=ex.w.teacher_a, points=4, feedback="Good")
    attempt.refresh_from_db()
    assert attempt.score == Decimal(9) and not attempt.needs_manual_grading and attempt.graded_at
    assert not GradeSync.objects.filter(attempt=attempt).exists()
    services.grades_release(exam=ex.exam, actor=ex.w.teacher_a)
    graded = GradeSync.objects.get(attempt=attempt)  # released: the grade webhook gets the finished result
    assert (graded.payload["grading_progress"], graded.payload["score"]) == ("FullyGraded", "9.00")
    services.grade_manual(answer_id=essay.pk, grader=ex.w.teacher_a, points=3)
    regraded = GradeSync.objects.get(attempt=attempt)  # the same row, re-keyed and queued again with the grade
    assert regraded.pk == graded.pk and regraded.idempotency_key != graded.idempotency_key
    assert regraded.payload["score"] == "8.00"


@pytest.mark.django_db(transaction=True)
def test_a_submit_replayed_100_times_concurrently_submits_once(world):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    errors = []

    def submit():
        try:
            for _ in range(10):
                services.attempt_submit(attempt_id=attempt.pk, student=world.student_a)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert IntegrityEvent.objects.filter(attempt=attempt, kind="submitted").count() == 1
    assert Notification.objects.filter(attempt=attempt, kind="submitted").count() == 1
    attempt.refresh_from_db()
    assert attempt.state == Attempt.State.SUBMITTED and attempt.finish_reason == "student"


@pytest.mark.django_db(transaction=True)
def test_finalisation_races_between_deadline_task_sweeper_and_touch_close_once(world):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    shift(attempt, 31)
    errors = []

    def race(i):
        try:
            if i % 3 == 0:
                services.attempt_finalize(attempt_id=attempt.pk)
            elif i % 3 == 1:
                services.attempts_finalize_due()
            else:
                try:
                    services.attempt_submit(attempt_id=attempt.pk, student=world.student_a)
                except services.AttemptClosed:
                    pass
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # The sweeper closes and leaves grading and the notice to the bulk queue: run that part (twice) too.
    services.attempts_after_close_due(older_than_seconds=0)
    services.attempts_after_close_due(older_than_seconds=0)
    assert IntegrityEvent.objects.filter(attempt=attempt, kind="auto_submitted").count() == 1
    assert Notification.objects.filter(attempt=attempt).count() == 1
    attempt.refresh_from_db()
    assert attempt.finish_reason == Attempt.FinishReason.DEADLINE


def test_grace_policy_allows_only_submit_then_closes(world):
    ex = ExamWorld(world, expiry_policy=Exam.Expiry.GRACE, grace_minutes=5)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    assert attempt.grace_until == attempt.deadline + dt.timedelta(minutes=5)
    shift(attempt, 31)
    services.attempts_finalize_due()
    attempt.refresh_from_db()
    assert attempt.state == Attempt.State.OVERDUE
    with pytest.raises(services.AttemptClosed):
        services.answer_save(attempt_id=attempt.pk, student=world.student_a, question_id=ex.q_tf.pk, value=True,
                             version=1)
    services.attempt_submit(attempt_id=attempt.pk, student=world.student_a)
    attempt.refresh_from_db()
    assert attempt.state == Attempt.State.SUBMITTED and attempt.finish_reason == "student"


def test_grace_ends_with_an_automatic_submission(world):
    ex = ExamWorld(world, expiry_policy=Exam.Expiry.GRACE, grace_minutes=5)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    shift(attempt, 37)
    services.attempts_finalize_due()
    services.attempts_finalize_due()
    attempt.refresh_from_db()
    assert attempt.state == Attempt.State.SUBMITTED
    assert attempt.finish_reason == Attempt.FinishReason.GRACE_END and attempt.finished_at == attempt.grace_until


def test_discard_policy_does_not_count_unsubmitted_attempts(world):
    ex = ExamWorld(world, expiry_policy=Exam.Expiry.DISCARD)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    shift(attempt, 31)
    services.attempts_finalize_due()
    attempt.refresh_from_db()
    assert attempt.state == Attempt.State.ABANDONED and attempt.score is None
    assert not Notification.objects.filter(attempt=attempt).exists()


def test_extra_time_mid_attempt_moves_the_deadline_and_close_for_that_student(world):
    now = timezone.now()
    exam = services.exam_upsert(course=world.course_a, title="Tight", opens_at=now - dt.timedelta(minutes=1),
                                closes_at=now + dt.timedelta(minutes=30), time_limit_minutes=30,
                                status=Exam.Status.PUBLISHED)
    attempt = services.attempt_start(exam=exam, student=world.student_a)
    old = attempt.deadline
    with pytest.raises(PermissionDenied):
        services.extra_time_grant(attempt_id=attempt.pk, actor=world.student_a, minutes=10)
    attempt = services.extra_time_grant(attempt_id=attempt.pk, actor=world.teacher_a, minutes=10)
    assert attempt.deadline == old + dt.timedelta(minutes=10)
    assert services.effective_close(exam, world.student_a) == attempt.deadline
    assert services.effective_close(exam, world.student_b) == exam.closes_at
    assert IntegrityEvent.objects.filter(attempt=attempt, kind="extension_granted").exists()


def test_integrity_log_is_hash_chained_and_tampering_is_evident(ex):
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    services.attempt_event(attempt_id=attempt.pk, student=ex.w.student_a, kind="viewed",
                           data={"question": ex.q_tf.pk}, client_time=timezone.now())
    services.attempt_event(attempt_id=attempt.pk, student=ex.w.student_a, kind="focus_lost",
                           data={"duration_ms": 4200})
    services.answer_save(attempt_id=attempt.pk, student=ex.w.student_a, question_id=ex.q_tf.pk, value=False, version=1)
    services.attempt_submit(attempt_id=attempt.pk, student=ex.w.student_a)
    attempt.refresh_from_db()
    kinds = list(IntegrityEvent.objects.filter(attempt=attempt).values_list("kind", flat=True))
    assert kinds == ["started", "viewed", "focus_lost", "answered", "submitted"]
    assert services.integrity_verify(attempt) == (True, None)
    IntegrityEvent.objects.filter(attempt=attempt, kind="focus_lost").update(data={"duration_ms": 1})
    assert services.integrity_verify(attempt) == (False, 2)
    with pytest.raises(ValidationError):
        services.attempt_event(attempt_id=attempt.pk, student=ex.w.student_a, kind="hacked")


def test_precreated_attempts_make_start_cheap_and_each_student_has_a_seed(ex):
    other = factories.user("s2", age=15)
    factories.enroll(ex.w.course_a, other)
    assert services.attempts_precreate(exam=ex.exam) == 2
    assert services.attempts_precreate(exam=ex.exam) == 0
    seeds = set(Attempt.objects.filter(exam=ex.exam).values_list("seed", flat=True))
    assert len(seeds) == 2
    pre = Attempt.objects.get(exam=ex.exam, student=ex.w.student_a)
    started = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    assert started.pk == pre.pk and started.layout == pre.layout


def test_notifications_are_emailed_once(ex, settings):
    from exams.tasks import notification_send

    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    services.attempt_submit(attempt_id=attempt.pk, student=ex.w.student_a)
    n = Notification.objects.get(attempt=attempt)
    notification_send.apply(args=[n.pk])
    notification_send.apply(args=[n.pk])
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [ex.w.student_a.email]


def test_grade_sync_without_an_lms_is_marked_and_with_one_is_delivered_idempotently(ex, settings):
    import http.server
    import json
    import socketserver

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Idempotency-Key"], json.loads(body), self.headers["X-Aula-Signature"]))
            self.send_response(500 if len(received) == 1 else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    ex.exam.questions = None
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    Attempt.objects.filter(pk=attempt.pk).update(layout=[i for i in attempt.layout if i["question"] != ex.q_essay.pk])
    services.attempt_submit(attempt_id=attempt.pk, student=ex.w.student_a)
    services.grades_release(exam=ex.exam, actor=ex.w.teacher_a)
    sync = GradeSync.objects.get(attempt=attempt)
    assert services.grade_sync_attempt(sync_id=sync.pk) == GradeSync.Status.NO_TARGET

    with socketserver.TCPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        settings.AULA_LMS_GRADE_WEBHOOK = f"http://127.0.0.1:{server.server_address[1]}/grades"
        settings.AULA_LMS_GRADE_SECRET = "s" * 40
        GradeSync.objects.filter(pk=sync.pk).update(status=GradeSync.Status.PENDING)
        assert services.grade_sync_attempt(sync_id=sync.pk) == GradeSync.Status.FAILED
        # A duplicate of the first task (queued before that try) does nothing; the retry queued after it delivers.
        assert services.grade_sync_attempt(sync_id=sync.pk, expected_tries=0) == "duplicate"
        assert services.grade_sync_attempt(sync_id=sync.pk, expected_tries=1) == GradeSync.Status.DELIVERED
        assert services.grade_sync_attempt(sync_id=sync.pk) == GradeSync.Status.DELIVERED  # no third POST
        server.shutdown()
    assert len(received) == 2 and received[0][0] == received[1][0]  # same idempotency key on retry
    assert received[1][1]["score"] == str(GradeSync.objects.get(pk=sync.pk).payload["score"])
    assert received[1][2].startswith("sha256=")


def test_the_sweeper_requeues_a_lost_delivery_once_per_claim_and_logs_no_scheduling(ex):
    from auditlog.models import LogEntry

    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    services.attempt_submit(attempt_id=attempt.pk, student=ex.w.student_a)
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    lost = GradeSync.objects.create(institution=ex.w.school_a, attempt=attempt, student=ex.w.student_a,
                                    idempotency_key="lost", payload={}, status=GradeSync.Status.FAILED, tries=2,
                                    next_try_at=long_ago)
    entries = LogEntry.objects.count()
    assert services.grade_syncs_due() == [(lost.pk, 2)]
    assert services.grade_syncs_due() == []  # queued: not fed to a busy queue again every minute
    assert LogEntry.objects.count() == entries  # the queue stamp is scheduling, not a change of the record
    GradeSync.objects.filter(pk=lost.pk).update(next_try_at=long_ago)  # that task was lost too
    assert services.grade_syncs_due() == [(lost.pk, 2)]


def test_transcript_pdf_for_a_graded_attempt(ex, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    services.answer_save(attempt_id=attempt.pk, student=ex.w.student_a, question_id=ex.q_single.pk, value=[1],
                         version=1)
    services.answer_save(attempt_id=attempt.pk, student=ex.w.student_a, question_id=ex.q_essay.pk,
                         value="Ünïcode essay ✓", version=1)
    services.attempt_submit(attempt_id=attempt.pk, student=ex.w.student_a)
    assert services.transcript_store(attempt_id=attempt.pk) is None  # essay ungraded: no transcript yet
    Attempt.objects.filter(pk=attempt.pk).update(graded_at=timezone.now())
    path = services.transcript_store(attempt_id=attempt.pk)
    data = (tmp_path / path).read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 500
    assert services.transcript_store(attempt_id=attempt.pk) == path  # idempotent, same file


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-inf", "1e999", "abc"])
def test_non_finite_numbers_are_refused(ex, bad):
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    with pytest.raises(ValidationError):
        services.answer_save(attempt_id=attempt.pk, student=ex.w.student_a, question_id=ex.q_num.pk, value=bad,
                             version=1)


def _two_overdue(ex) -> tuple[Attempt, Attempt]:
    other = factories.user("s3", age=15)
    factories.enroll(ex.w.course_a, other)
    first = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    second = services.attempt_start(exam=ex.exam, student=other)
    shift(first, 31)
    shift(second, 31)
    return first, second


def test_one_broken_attempt_does_not_stop_the_sweeper(ex, monkeypatch):
    first, second = _two_overdue(ex)
    real = services._close

    def flaky(attempt, now, **kw):
        if attempt.pk == first.pk:
            raise RuntimeError("corrupt row")
        return real(attempt, now, **kw)

    monkeypatch.setattr(services, "_close", flaky)
    services.attempts_finalize_due()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == Attempt.State.IN_PROGRESS  # rolled back, retried by the next sweep
    assert second.state == Attempt.State.SUBMITTED and second.finalized_at is not None
    monkeypatch.setattr(services, "_close", real)
    services.attempts_finalize_due()
    first.refresh_from_db()
    assert first.state == Attempt.State.SUBMITTED
    assert IntegrityEvent.objects.filter(kind="auto_submitted", attempt__in=[first, second]).count() == 2


def test_a_grading_failure_never_delays_the_close_and_is_retried(ex, monkeypatch):
    first, second = _two_overdue(ex)
    real = services.grade_auto

    def flaky(attempt):
        if attempt.pk == first.pk:
            raise RuntimeError("corrupt row")
        return real(attempt)

    monkeypatch.setattr(services, "grade_auto", flaky)
    services.attempts_finalize_due()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == second.state == Attempt.State.SUBMITTED  # both closed on time
    assert services.attempts_after_close_due(older_than_seconds=0) == 1
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.max_score is None and second.max_score == Decimal(10)
    assert not Notification.objects.filter(attempt=first).exists()
    monkeypatch.setattr(services, "grade_auto", real)
    assert services.attempts_after_close_due(older_than_seconds=0) == 1
    first.refresh_from_db()
    assert first.max_score == Decimal(10)
    assert Notification.objects.filter(attempt__in=[first, second], kind="submitted").count() == 2


def test_a_flag_on_an_unanswered_question_is_kept_and_a_save_still_wins(ex):
    attempt = services.attempt_start(exam=ex.exam, student=ex.w.student_a)
    services.attempt_event(attempt_id=attempt.pk, student=ex.w.student_a, kind="flagged",
                           data={"question": ex.q_short.pk})
    answer = attempt.answers.get(question=ex.q_short)
    assert answer.flagged and answer.version == 0 and answer.value is None
    saved, applied = services.answer_save(attempt_id=attempt.pk, student=ex.w.student_a, question_id=ex.q_short.pk,
                                          value="Paris", version=1)
    assert applied and saved.flagged
