"""Thin Celery entry points for COPPA: the scheduled retention purge (safe to run twice)."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def retention_purge() -> dict:
    from compliance.coppa import services

    return services.retention_purge().removed
