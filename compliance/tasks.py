"""Thin Celery entry points for district data jobs: load by id, call the service; safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True, acks_late=True, ferpa_reads=("classrooms.User", "classrooms.Enrollment"),
             ferpa_recorded_by="compliance.district_data.district_export_build")
def district_export_build(export_id: int) -> None:
    """Build a district's export; the first build is a recorded read of every one of its students' records
    (FERPA access entries naming the export job, written by the service in the transaction that marks the
    export done; a rerun of a finished export records nothing)."""
    from compliance import audit, district_data

    with audit.job("compliance.tasks.district_export_build"):
        district_data.district_export_build(export_id=export_id)


@shared_task(ignore_result=True, acks_late=True)
def district_dispose(certificate_id: int) -> None:
    from compliance import district_data

    district_data.district_dispose(certificate_id=certificate_id)


@shared_task(ignore_result=True, acks_late=True)
def sis_run_execute(run_id: int, attempts: int | None = None) -> None:
    """Run or resume one SIS sync run from its checkpoint (a no-op when it is finished, another worker has it, or
    another execution started it after this one was queued at `attempts`)."""
    from compliance import sis_sync

    sis_sync.sis_run_execute(run_id=run_id, attempts=attempts)


@shared_task(ignore_result=True)
def sis_sync_sweep() -> None:
    """Start due delta syncs and re-queue runs a dead worker left (they resume from their checkpoint)."""
    from compliance import sis_sync

    sis_sync.sis_sync_sweep()
