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


@shared_task(ignore_result=True, acks_late=True)
def collab_compact(document_id: int) -> None:
    """Fold one whiteboard/notes log into a checkpoint (idempotent; a second run finds nothing to fold)."""
    from classrooms import collab_services

    collab_services.document_compact(document_id=document_id)


@shared_task(ignore_result=True, acks_late=True)
def collab_session_compact(session_id: int) -> None:
    """A session ended: its board and notes get their final checkpoints."""
    from classrooms import collab_services
    from classrooms.models import CollabDocument

    for document_id in CollabDocument.objects.filter(session_id=session_id).values_list("pk", flat=True):
        collab_services.document_compact(document_id=document_id)


@shared_task(ignore_result=True)
def collab_compact_due() -> int:
    """Database-driven sweep: every document whose log has rows older than AULA_COLLAB_COMPACT_SECONDS (a
    quiet board, or one whose size-triggered task was lost) is folded."""
    import datetime as dt

    from django.conf import settings

    from classrooms import collab_services
    from classrooms.models import CollabUpdate

    cutoff = timezone.now() - dt.timedelta(seconds=settings.AULA_COLLAB_COMPACT_SECONDS)
    due = list(CollabUpdate.objects.filter(created_at__lt=cutoff).values_list("document_id", flat=True)
               .distinct()[:200])
    for document_id in due:
        collab_services.document_compact(document_id=document_id)
    return len(due)


@shared_task(bind=True, ignore_result=True, acks_late=True, max_retries=3)
def lti_roster_sync(self, context_id: int) -> dict:
    """Reconcile a linked LMS course's enrollments with its roster (NRPS): at launch (when stale) and on demand.
    The LMS down, slow or refusing a token: tried again with backoff (nothing was dropped on a failed read)."""
    import requests
    from pylti1p3.exception import LtiServiceException

    from classrooms import lti_services

    try:
        return lti_services.roster_sync(context_id=context_id)
    except (requests.RequestException, LtiServiceException) as exc:
        raise self.retry(exc=exc, countdown=30 * 2 ** self.request.retries) from None


@shared_task(ignore_result=True)
def lti_keys_rotate_due() -> dict:
    """Beat: Aula's LTI signing key is rotated on schedule; retired keys are deleted."""
    from classrooms import lti_services

    return lti_services.keys_rotate_due()
