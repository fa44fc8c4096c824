"""The autosave write paths outside a caller's transaction, as the socket and the HTTP fallback run them:
two autocommit statements (a plain read, one conditional write), redone under the attempt's row lock when
anything moved in between. Committed data and real threads, so the race is real."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from exams import services
from exams.models import Answer, Attempt, IntegrityEvent
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db(transaction=True)


def save(attempt, student, question, value, version):
    return services.answer_save(attempt_id=attempt.pk, student=student, question_id=question.pk, value=value,
                                version=version)


def test_a_save_is_two_autocommit_statements_and_keeps_the_chain(world):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    with CaptureQueriesContext(connection) as queries:
        answer, applied = save(attempt, world.student_a, ex.q_short, "Lyon", 1)
    assert applied and answer.version == 1
    assert len(queries) == 2 and connection.get_autocommit()
    assert "FOR UPDATE" not in queries[0]["sql"] and "WITH head AS" in queries[1]["sql"]
    assert save(attempt, world.student_a, ex.q_short, "Nice", 1)[1] is False  # a replay changes nothing
    assert save(attempt, world.student_a, ex.q_short, "Paris", 2)[1] is True
    stored = Answer.objects.get(attempt=attempt, question=ex.q_short)
    assert (stored.value, stored.version) == ("Paris", 2)
    attempt.refresh_from_db()
    assert services.integrity_verify(attempt) == (True, None)
    assert list(IntegrityEvent.objects.filter(attempt=attempt).order_by("index").values_list("kind", flat=True)) \
        == ["started", "answered", "changed"]


def _blocked_on_a_lock() -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")
        return cur.fetchone()[0] > 0


def test_a_save_that_loses_a_race_is_redone_under_the_lock(world):
    """Another write moves the chain head between the save's read and its write: the conditional write
    writes nothing, and the save is redone under the row lock, after the other write, in the chain."""
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    holding, release, result = threading.Event(), threading.Event(), {}

    def other_write():
        try:
            with transaction.atomic():
                locked = services._lock(attempt.pk)
                holding.set()
                release.wait(10)
                services.integrity_record(locked, "viewed", {"question": ex.q_tf.pk})
        finally:
            connection.close()

    def saver():
        try:
            result["save"] = save(attempt, world.student_a, ex.q_short, "Lyon", 1)
        except Exception as exc:  # surfaced by the assertions below
            result["error"] = exc
        finally:
            connection.close()

    t1 = threading.Thread(target=other_write)
    t1.start()
    assert holding.wait(10)
    t2 = threading.Thread(target=saver)
    t2.start()
    deadline = time.monotonic() + 10
    while not _blocked_on_a_lock() and time.monotonic() < deadline:  # the save's write waits on the row
        time.sleep(0.02)
    assert _blocked_on_a_lock()
    release.set()
    t1.join(10)
    t2.join(10)
    assert "error" not in result and result["save"][1] is True
    attempt.refresh_from_db()
    assert services.integrity_verify(attempt) == (True, None)
    kinds = list(IntegrityEvent.objects.filter(attempt=attempt).order_by("index").values_list("kind", flat=True))
    assert kinds == ["started", "viewed", "answered"]
    assert Answer.objects.get(attempt=attempt, question=ex.q_short).value == "Lyon"


def test_concurrent_saves_of_one_attempt_all_land_in_one_unbroken_chain(world):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    errors, applied = [], []

    def one(version):
        try:
            applied.append(save(attempt, world.student_a, ex.q_short, f"v{version}", version)[1])
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(v,)) for v in range(1, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and len(applied) == 12
    stored = Answer.objects.get(attempt=attempt, question=ex.q_short)
    assert (stored.value, stored.version) == ("v12", 12)  # the newest version wins, whatever the order
    attempt.refresh_from_db()
    assert services.integrity_verify(attempt) == (True, None)
    writes = IntegrityEvent.objects.filter(attempt=attempt, kind__in=["answered", "changed"]).count()
    assert writes == sum(applied) and attempt.log_count == writes + 1


def test_a_save_after_the_deadline_closes_the_attempt_and_is_refused(world):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    save(attempt, world.student_a, ex.q_short, "Lyon", 1)
    Attempt.objects.filter(pk=attempt.pk).update(deadline=attempt.started_at)
    with pytest.raises(services.AttemptClosed):
        save(attempt, world.student_a, ex.q_short, "Paris", 2)
    attempt.refresh_from_db()
    assert attempt.state == Attempt.State.SUBMITTED
    assert Answer.objects.get(attempt=attempt, question=ex.q_short).value == "Lyon"
    assert services.integrity_verify(attempt) == (True, None)
