"""Thin Celery entry points for district data jobs: load by id, call the service; safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True, acks_late=True)
def district_export_build(export_id: int) -> None:
    from compliance import district_data

    district_data.district_export_build(export_id=export_id)


@shared_task(ignore_result=True, acks_late=True)
def district_dispose(certificate_id: int) -> None:
    from compliance import district_data

    district_data.district_dispose(certificate_id=certificate_id)
