"""Thin Celery entry points of the DMCA workflow (moderation/dmca.py): the restoration sweeper and case emails."""

from __future__ import annotations

import smtplib
import socket

from celery import shared_task

from moderation import dmca

# Transient: the mail server was away, busy or dropped us. A refused recipient is permanent (not retried).
TRANSIENT_SMTP_ERRORS = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPHeloError,
                         socket.timeout, ConnectionError, TimeoutError)


@shared_task(acks_late=True, ignore_result=True)
def dmca_restore_sweep() -> None:
    """Every minute (CELERY_BEAT_SCHEDULE "dmca-restore-sweep"): restore every case that is due."""
    dmca.dmca_restore_due()


@shared_task(acks_late=True, ignore_result=True, autoretry_for=TRANSIENT_SMTP_ERRORS, retry_backoff=15,
             retry_backoff_max=600, max_retries=8)
def dmca_email_send(kind: str, notice_id: int) -> None:
    """One case email ("notice" to the uploader, "counter" to a claimant); sent once however often it runs."""
    dmca.dmca_email_deliver(kind=kind, notice_id=notice_id)
