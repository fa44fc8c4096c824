"""Thin Celery entry points for identity and classroom housekeeping."""

from __future__ import annotations

from celery import shared_task
from django.contrib.sessions.models import Session
from django.utils import timezone


@shared_task(ignore_result=True)
def sessions_purge() -> int:
    """Delete expired login sessions and expired OAuth2 tokens (idempotent)."""
    from oauth2_provider.models import clear_expired

    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    clear_expired()
    return deleted
