"""Thin Celery entry points for exams: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def attempt_finalize_due(attempt_id: int) -> None:
    """At an attempt's deadline (queued with an ETA on the `deadlines` queue). Idempotent."""
    from exams import services

    services.attempt_finalize(attempt_id=attempt_id)


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


@shared_task(bind=True, acks_late=True, ignore_result=True, rate_limit="50/s")
def grade_sync_deliver(self, sync_id: int) -> str:
    from exams import lms, services
    from exams.models import GradeSync

    status = services.grade_sync_attempt(sync_id=sync_id)
    if status == GradeSync.Status.FAILED:
        tries = GradeSync.objects.filter(pk=sync_id).values_list("tries", flat=True).first() or 1
        grade_sync_deliver.apply_async(args=[sync_id], countdown=lms.backoff(tries), queue="bulk")
    return status


@shared_task(acks_late=True, ignore_result=True, rate_limit="10/s")
def transcript_generate(attempt_id: int) -> None:
    """Render a transcript PDF off the hot path (bulk queue, rate-limited)."""
    from exams import services

    services.transcript_store(attempt_id=attempt_id)
