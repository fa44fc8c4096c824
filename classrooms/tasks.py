"""Thin Celery entry points for classrooms: load by id, call a service; safe to run twice."""

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


@shared_task(ignore_result=True)
def presence_sweep() -> int:
    """Remove presence ghosts in every room (a crashed server process never ran disconnect())."""
    from config.realtime.presence import sweep_all_rooms

    return sweep_all_rooms()


@shared_task(ignore_result=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def attendance_compute(session_id: int) -> int:
    from classrooms import services
    from classrooms.models import LiveSession

    session = LiveSession.objects.filter(pk=session_id).first()
    if session is None:
        return 0
    return len(services.attendance_compute(session=session))
