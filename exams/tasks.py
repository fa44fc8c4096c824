"""Thin Celery entry points for exams: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def attempt_finalize_due(attempt_id: int) -> None:
    """One attempt's deadline (ETA tasks queued before deadlines were batched per exam). Idempotent."""
    from exams import services

    services.attempt_finalize(attempt_id=attempt_id)


@shared_task(acks_late=True, ignore_result=True)
def attempts_close_due(exam_id: int, helpers: bool = False) -> int:
    """At an exam's deadline second (ETA, `deadlines` queue): close every due attempt of the exam in batches.
    With `helpers`, a wave bigger than one batch is shared with more copies of this task (one per worker
    slot on the deadlines queue). Idempotent: a second run finds nothing due."""
    from django.conf import settings

    from exams import services

    return services.attempts_close_due(exam_id=exam_id, budget_seconds=60,
                                       helpers=settings.AULA_DEADLINE_CONCURRENCY - 1 if helpers else 0)


@shared_task(acks_late=True, ignore_result=True)
def attempts_after_close(attempt_ids: list[int]) -> int:
    """After a batch closed attempts (bulk queue): grade them, notify, queue the grade sync. Idempotent."""
    from exams import services

    return services.attempts_after_close(attempt_ids=attempt_ids)


@shared_task(acks_late=True, ignore_result=True)
def attempts_after_close_sweep() -> int:
    """Every minute: submitted attempts whose after-close task was lost or failed are graded now."""
    from exams import services

    return services.attempts_after_close_due()


@shared_task(acks_late=True, ignore_result=True)
def attempts_sweep() -> int:
    """Every 10 s: finalise attempts past their deadline that no task closed (a lost ETA task, a dead worker)."""
    from exams import services

    return services.attempts_finalize_due()


@shared_task(acks_late=True, ignore_result=True, rate_limit="20/s", autoretry_for=(OSError,), retry_backoff=True,
             max_retries=6)
def notification_send(notification_id: int) -> None:
    """Email a notice; rate-limited so a deadline wave of thousands never floods the mail server."""
    from exams import services

    services.notification_deliver(notification_id=notification_id)


@shared_task(bind=True, acks_late=True, ignore_result=True, rate_limit="50/s", ferpa_reads=("exams.GradeSync",))
def grade_sync_deliver(self, sync_id: int, expected_tries: int | None = None) -> str:
    """One delivery try; `expected_tries` (the row's tries when this task was queued) makes a duplicate a no-op."""
    from compliance import audit, disclosures
    from exams import lms, services
    from exams.models import GradeSync

    status = services.grade_sync_attempt(sync_id=sync_id, expected_tries=expected_tries)
    if status == GradeSync.Status.DELIVERED:  # a grade sent to the LMS: a vendor disclosure (recorded once)
        with audit.job(self.name):
            if disclosures.record_grade_sync(sync_id=sync_id):
                audit.record_access(actor=None, objects=[GradeSync(pk=sync_id)], purpose="lms.grade_sync")
    if status == GradeSync.Status.FAILED:
        tries = GradeSync.objects.filter(pk=sync_id).values_list("tries", flat=True).first() or 1
        grade_sync_deliver.apply_async(args=[sync_id, tries], countdown=lms.backoff(tries), queue="bulk")
    return status


@shared_task(acks_late=True, ignore_result=True, rate_limit="10/s", ferpa_reads=("exams.Attempt",))
def transcript_generate(attempt_id: int) -> None:
    """Render a transcript PDF off the hot path (bulk queue, rate-limited); a recorded read of the attempt."""
    from compliance import audit
    from exams import services
    from exams.models import Attempt

    if services.transcript_store(attempt_id=attempt_id) is not None:
        with audit.job("exams.tasks.transcript_generate"):
            audit.record_access(actor=None, objects=[Attempt(pk=attempt_id)], purpose="transcript.generate")


@shared_task(acks_late=True, ignore_result=True)
def grade_sync_sweep() -> int:
    """Database-driven: results whose queued retry was lost (a worker died holding it) are queued again."""
    from exams import services

    due = services.grade_syncs_due()
    for sync_id, tries in due:
        grade_sync_deliver.apply_async(args=[sync_id, tries], queue="bulk")
    return len(due)


@shared_task(acks_late=True, ignore_result=True)
def session_quiz_grades_send(session_id: int) -> int:
    """A live session placed in an LMS ended: queue each student's quiz result for its grade column."""
    from exams import services

    return services.session_quiz_grades_enqueue(session_id=session_id)
