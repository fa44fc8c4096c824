"""Celery entry points of the analytics pipeline: thin, safe to run twice (routes and beat in settings)."""

from __future__ import annotations

from celery import shared_task

from analytics import services, webhooks


@shared_task(acks_late=True, ignore_result=True)
def flush() -> int:
    """Drain the analytics stream into rollups (idempotent: the flush ledger; see analytics/services.py)."""
    return services.flush().counted


@shared_task(acks_late=True, ignore_result=True)
def webhook_deliver(delivery_id: int) -> None:
    webhooks.delivery_attempt(delivery_id=delivery_id)


@shared_task(acks_late=True, ignore_result=True)
def webhook_sweep() -> int:
    """Re-queue due retries whose countdown task a dead worker lost; prune the flush ledger."""
    due = webhooks.deliveries_due()
    for delivery_id in due:
        webhook_deliver.delay(delivery_id)
    services.ledger_prune()
    return len(due)
