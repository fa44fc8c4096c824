"""Thin Celery entry points for moderation: the SLA sweeper and the next tier's notification."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def escalate_overdue() -> int:
    """Celery beat, every AULA_MODERATION_ESCALATE_SECONDS: items past their SLA move up one tier."""
    from moderation import services

    return services.escalate_overdue()


@shared_task(ignore_result=True, autoretry_for=(ConnectionError, OSError), retry_backoff=True, max_retries=5)
def tier_notify(item_id: int) -> int:
    """Email the people of the item's (new) tier that it waits for them. No message text in the email: it
    links to the queue, where the reader's own access is checked."""
    from moderation import notify

    return notify.tier_notify(item_id)
