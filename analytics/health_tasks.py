"""Celery entry points for room health and alerts: thin, by id, safe to run twice (schedules in settings)."""

from __future__ import annotations

from celery import shared_task

from analytics import alerts, health


@shared_task(acks_late=True, ignore_result=True)
def alerts_evaluate() -> dict:
    return alerts.alerts_evaluate()


@shared_task(acks_late=True, ignore_result=True)
def room_health_persist() -> int:
    return health.room_health_persist_active()


@shared_task(acks_late=True, ignore_result=True, autoretry_for=(OSError,), retry_backoff=True,
             retry_backoff_max=600, max_retries=8)
def alert_email_send(alert_id: int, event: str) -> bool:
    return alerts.alert_email_deliver(alert_id=alert_id, event=event)


@shared_task(acks_late=True, ignore_result=True, autoretry_for=(OSError, alerts.WebhookRejected),
             retry_backoff=True, retry_backoff_max=600, max_retries=8)
def alert_webhook_deliver(alert_id: int, event: str) -> int | None:
    return alerts.alert_webhook_post(alert_id=alert_id, event=event)
