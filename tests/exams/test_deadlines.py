"""Exam-week paths under load: the deadline wave closed in batches, the close scheduled once per exam and
second, and attempts that never wait for each other's locks (real PostgreSQL and Redis, real threads)."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.realtime.models import RoomEvent
from exams import realtime, services
from exams.models import Attempt, Exam, IntegrityEvent, Notification
from tests import factories
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db(transaction=True)


def class_of(ex: ExamWorld, n: int) -> list[Attempt]:
    attempts = []
    for i in range(n):
        student = factories.user(f"wave{i}", age=15)
        factories.enroll(ex.w.course_a, student)
        attempts.append(services.attempt_start(exam=ex.exam, student=student))
    return attempts


def all_due(attempts: list[Attempt]) -> dt.datetime:
    """Every attempt's deadline is the same second, just passed (the end of an exam period)."""
    deadline = timezone.now() - dt.timedelta(seconds=1)
    Attempt.objects.filter(pk__in=[a.pk for a in attempts]).update(deadline=deadline)
    return deadline


def run_in_threads(target, n: int) -> list[Exception]:
    errors: list[Exception] = []

    def run():
        try:
            target()
        except Exception as exc:  # collected and asserted on
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_a_deadline_wave_is_closed_once_in_batches_by_parallel_workers_then_graded(world):
    ex = ExamWorld(world)
    attempts = class_of(ex, 12)
    services.answer_save(attempt_id=attempts[0].pk, student=attempts[0].student, question_id=ex.q_single.pk,
                         value=[1], version=1)
    deadline = all_due(attempts)
    # Three workers share the wave (SKIP LOCKED chunks of 5), plus the sweeper at the same moment.
    errors = run_in_threads(lambda: services.attempts_close_due(exam_id=ex.exam.pk, chunk=5), 3)
    errors += run_in_threads(services.attempts_finalize_due, 1)
    assert not errors
    ids = [a.pk for a in attempts]
    for attempt in Attempt.objects.filter(pk__in=ids):
        assert attempt.state == Attempt.State.SUBMITTED and attempt.finish_reason == "deadline"
        assert attempt.finished_at == deadline and attempt.finalized_at >= deadline
        assert services.integrity_verify(attempt) == (True, None)
        # The student's own room has the stored, sequenced status event (for resume after a reconnect).
        event = RoomEvent.objects.filter(room_key=realtime.attempt_room(attempt.institution_id, attempt.pk),
                                         type="attempt.status").order_by("-seq").first()
        assert event is not None and event.payload["state"] == "submitted"
    assert IntegrityEvent.objects.filter(attempt_id__in=ids, kind="auto_submitted").count() == 12
    # Closing is only the close: grading and the notice follow on the bulk queue, once.
    assert not Notification.objects.filter(attempt_id__in=ids).exists()
    assert services.attempts_after_close(attempt_ids=ids) == 12
    assert services.attempts_after_close(attempt_ids=ids) == 0
    assert services.attempts_after_close_due(older_than_seconds=0) == 0
    assert Notification.objects.filter(attempt_id__in=ids, kind="submitted").count() == 12
    first = Attempt.objects.get(pk=attempts[0].pk)
    assert first.score == Decimal(1) and first.max_score == Decimal(10)


def test_a_wave_respects_grace_and_discard_policies(world):
    grace = ExamWorld(world, expiry_policy=Exam.Expiry.GRACE, grace_minutes=5)
    attempts = class_of(grace, 3)
    all_due(attempts)
    assert services.attempts_close_due(exam_id=grace.exam.pk, chunk=2) == 3
    assert set(Attempt.objects.filter(pk__in=[a.pk for a in attempts]).values_list("state", flat=True)) == \
        {Attempt.State.OVERDUE}
    assert services.attempts_close_due(exam_id=grace.exam.pk) == 0  # nothing more until grace ends


def _broker_messages(queue: str) -> list[dict]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    raw = client.lrange(f"{settings.AULA_REDIS_KEY_PREFIX}:{queue}", 0, -1)
    return [json.loads(m)["headers"] for m in raw]


def test_a_class_ending_in_the_same_second_queues_one_close_task(world):
    now = timezone.now()
    exam = services.exam_upsert(course=world.course_a, title="Ends together", opens_at=now - dt.timedelta(hours=1),
                                closes_at=now + dt.timedelta(minutes=10), time_limit_minutes=60,
                                status=Exam.Status.PUBLISHED)
    ex = ExamWorld.__new__(ExamWorld)
    ex.w, ex.exam = world, exam
    attempts = class_of(ex, 5)
    assert {a.deadline for a in attempts} == {exam.closes_at}
    closes = [h for h in _broker_messages("deadlines") if h["task"] == "exams.tasks.attempts_close_due"]
    assert len(closes) == 1
    assert dt.datetime.fromisoformat(closes[0]["eta"]).timestamp() == math.ceil(exam.closes_at.timestamp())


class Holder:
    """Another connection in a transaction that holds what `work` locks until released."""

    def __init__(self, work):
        self.holding, self.release = threading.Event(), threading.Event()

        def run():
            try:
                with transaction.atomic():
                    work()
                    self.holding.set()
                    self.release.wait(10)
            finally:
                connection.close()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.holding.wait(10)

    def done(self) -> None:
        self.release.set()
        self.thread.join()


def test_one_attempts_lock_never_holds_up_another_attempt_of_the_same_exam(world):
    """A slow save (or a finalisation) holds its own attempt's row, never the exam's: the other students
    save, and the deadline sweeper closes them, without waiting."""
    ex = ExamWorld(world)
    slow, other = class_of(ex, 2)
    holder = Holder(lambda: services.answer_save(attempt_id=slow.pk, student=slow.student,
                                                 question_id=ex.q_short.pk, value="slow", version=1))
    try:
        with transaction.atomic():
            connection.cursor().execute("SET LOCAL lock_timeout = '2s'")
            _, applied = services.answer_save(attempt_id=other.pk, student=other.student,
                                              question_id=ex.q_short.pk, value="quick", version=1)
        assert applied
    finally:
        holder.done()
    all_due([slow, other])
    holder = Holder(lambda: Attempt.objects.select_for_update().get(pk=slow.pk))  # a finalisation under way
    try:
        assert services.attempts_close_due(exam_id=ex.exam.pk) == 1  # the held one is skipped, not waited for
        assert Attempt.objects.get(pk=other.pk).state == Attempt.State.SUBMITTED
    finally:
        holder.done()
    assert services.attempts_close_due(exam_id=ex.exam.pk) == 1
    assert Attempt.objects.get(pk=slow.pk).state == Attempt.State.SUBMITTED


def test_a_deadline_wave_sends_each_submission_to_a_subscribed_integration_once(world):
    from analytics.models import OutboxEvent, WebhookDelivery, WebhookEndpoint

    WebhookEndpoint.objects.create(institution=world.school_a, name="LRS", url="http://127.0.0.1:9/hook",
                                   secret="s", event_types=["exam.submitted"])
    ex = ExamWorld(world)
    attempts = class_of(ex, 4)
    all_due(attempts)
    assert services.attempts_close_due(exam_id=ex.exam.pk, chunk=3) == 4
    assert services.attempts_close_due(exam_id=ex.exam.pk) == 0
    events = list(OutboxEvent.objects.filter(event_type="exam.submitted"))
    generated = sorted(e.payload["generated"]["id"] for e in events)
    assert generated == sorted(f"urn:aula:attempt:{a.pk}" for a in attempts)
    assert {e.payload["generated"]["extensions"]["finishReason"] for e in events} == {"deadline"}
    assert WebhookDelivery.objects.filter(event__in=events).count() == 4
