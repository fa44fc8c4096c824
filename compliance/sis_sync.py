"""OneRoster 1.2 sync from a district's SIS: the service that starts, runs, resumes and reports sync runs.

Every record goes through `Roster.upsert` (or `Roster.tombstone` for `status: tobedeleted`), the write path of
the REST PUT and the CSV import, so the three behave identically. A run pulls the resources in dependency order,
one page per transaction that also moves its checkpoint: a worker killed mid-run loses at most the page it was
applying, and the next execution (the sweep's) continues from the checkpoint. Applying a record twice changes
nothing, so a resumed page or an overlapping delta is harmless. One run per district at a time: a partial unique
constraint (one pending/running run per connection) and a PostgreSQL advisory lock held while a worker runs it.

A full reconciliation deletes only from a complete listing (paged to its end, its total unchanged) and never
more than `AULA_SIS_MAX_DELETE_FRACTION` of a resource at once, nor everything from an empty listing: a SIS that
caps `limit` or answers an empty list by mistake must not take a district's roster with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import traceback
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, transaction
from django.db import connection as db_connection
from django.utils import timezone
from rest_framework import serializers

from classrooms.models import User
from compliance.models import SisConnection, SisRecord, SisRun, SisRunIssue
from compliance.roster_records import validate_record
from compliance.rostering import Roster
from compliance.sis_client import OneRosterClient, SisError

log = logging.getLogger(__name__)

# (collection path, record kind, response key), in dependency order.
RESOURCES = [
    ("orgs", "org", "orgs"),
    ("academicSessions", "academicSession", "academicSessions"),
    ("courses", "course", "courses"),
    ("classes", "class", "classes"),
    ("users", "user", "users"),
    ("enrollments", "enrollment", "enrollments"),
]
KIND_OF = {path: kind for path, kind, _ in RESOURCES}
COUNTERS = ("created", "updated", "deleted", "unchanged", "errors")
LOCK_NAMESPACE = 0x5151  # pg_advisory_lock(namespace, connection id): one runner per SIS connection
# A full reconciliation may always delete this many rows of a resource, whatever the fraction: a small collection
# (the terms of a year that ended, one class of three) is no mass deletion.
DELETE_ALLOWANCE = 10
RESUME_NOTE = " The next sweep resumes the run from its checkpoint."
UNEXPECTED_NOTE = "; resumed by the sweep."


def _setting(name: str, default):
    return getattr(settings, name, default)


def delta_overlap() -> dt.timedelta:
    """A delta asks for records modified since the last good run's start on the SIS's clock minus this margin
    (clock skew, records committed late on the SIS side); re-applying a record is idempotent."""
    return dt.timedelta(seconds=_setting("AULA_SIS_DELTA_OVERLAP_SECONDS", 300))


def issue_cap() -> int:
    return _setting("AULA_SIS_ISSUES_PER_RUN", 1000)


def stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=_setting("AULA_SIS_STALE_AFTER_SECONDS", 600))


def max_attempts() -> int:
    return _setting("AULA_SIS_MAX_ATTEMPTS", 5)


def max_delete_fraction() -> float:
    return _setting("AULA_SIS_MAX_DELETE_FRACTION", 0.2)


def client_for(connection: SisConnection, **options) -> OneRosterClient:
    return OneRosterClient(base_url=connection.base_url, token_url=connection.token_url,
                           client_id=connection.client_id, client_secret=connection.client_secret.reveal(),
                           scope=connection.scope, timeout=_setting("AULA_SIS_TIMEOUT_SECONDS", 30), **options)


# --- starting runs -------------------------------------------------------------------------------------------

def sis_connection_save(*, connection: SisConnection, actor: User | None = None) -> SisConnection:
    """Create or update a district's SIS connection (the admin's one write path; audited by auditlog, the
    secret excluded). A connection stays with its district. Pointed at another rostering service, it forgets
    the digests of what the old one sent, so the next run applies every record afresh instead of counting
    the new SIS's records "unchanged"."""
    with transaction.atomic():
        connection.full_clean()
        before = (SisConnection.objects.select_for_update().filter(pk=connection.pk)
                  .values("district_id", "base_url").first() if connection.pk else None)
        if before is not None and before["district_id"] != connection.district_id:
            raise ValidationError({"district": "A SIS connection cannot move to another district."})
        connection.save()
        if before is not None and before["base_url"].rstrip("/") != connection.base_url.rstrip("/"):
            SisRecord.objects.filter(connection=connection).delete()
    log.info("sis connection saved: connection=%s district=%s actor=%s", connection.pk, connection.district_id,
             actor.pk if actor else None)
    return connection


def sis_sync_request(*, connection: SisConnection, mode: str, requested_by: str = "") -> SisRun:
    """Start a run (delta or full) for a connection and queue it; the connection's unfinished run instead, when
    it has one (one run per district at a time)."""
    with transaction.atomic():
        SisConnection.objects.select_for_update().filter(pk=connection.pk).first()
        active = SisRun.objects.filter(connection=connection, status__in=[SisRun.Status.PENDING,
                                                                          SisRun.Status.RUNNING]).first()
        if active is not None:
            return active
        run = SisRun.objects.create(connection=connection, mode=mode, requested_by=requested_by[:200])
    _enqueue(run.pk)
    return run


def _enqueue(run_id: int, attempts: int = 0) -> None:
    """Queue an execution of the run as it is now (`attempts`): if another execution starts or resumes it first,
    this one finds a higher count and does nothing (the sweep queues a stale run at every tick)."""
    from compliance import tasks

    transaction.on_commit(lambda: tasks.sis_run_execute.delay(run_id, attempts))


def sis_sync_sweep(*, now: dt.datetime | None = None) -> list[int]:
    """Queue what is due: unfinished runs nobody has advanced for a while (a worker died), and a delta run for
    every enabled connection whose interval has passed since its last run. Returns the runs queued."""
    now = now or timezone.now()
    queued = []
    for run in SisRun.objects.filter(status__in=[SisRun.Status.PENDING, SisRun.Status.RUNNING],
                                     connection__enabled=True):
        if (run.heartbeat_at or run.created_at) <= now - stale_after():
            _enqueue(run.pk, run.attempts)
            queued.append(run.pk)
    for connection in SisConnection.objects.filter(enabled=True).exclude(
            runs__status__in=[SisRun.Status.PENDING, SisRun.Status.RUNNING]):
        last = connection.runs.order_by("-created_at").first()
        if last is None or last.created_at + connection.sync_interval <= now:
            queued.append(sis_sync_request(connection=connection, mode=SisRun.Mode.DELTA,
                                           requested_by="schedule").pk)
    return queued


# --- running -------------------------------------------------------------------------------------------------

@contextmanager
def _runner_lock(connection_id: int):
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, connection_id])
        got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with db_connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, connection_id])


def sis_run_execute(*, run_id: int, client: OneRosterClient | None = None,
                    attempts: int | None = None) -> SisRun | None:
    """Run or resume a run from its checkpoint. Returns None when the run is gone, finished, another worker
    holds it, or (given the `attempts` it was queued at) another execution started it since. Safe to call twice."""
    run = SisRun.objects.select_related("connection__district").filter(pk=run_id).first()
    if run is None or run.status in {SisRun.Status.DONE, SisRun.Status.FAILED}:
        return None
    with _runner_lock(run.connection_id) as got:
        if not got:
            return None
        run.refresh_from_db()
        if run.status in {SisRun.Status.DONE, SisRun.Status.FAILED}:
            return None
        if attempts is not None and run.attempts != attempts:
            return None  # a duplicate: queued before another execution (re)started the run
        if run.attempts >= max_attempts():
            last = run.error.removesuffix(RESUME_NOTE).removesuffix(UNEXPECTED_NOTE) or (
                "none recorded (the worker stopped without one, e.g. it was killed)")
            return _finish(run, SisRun.Status.FAILED,
                           f"Stopped after {run.attempts} attempts. Last error: {last.rstrip('.')}.")
        run.attempts += 1
        run.status = SisRun.Status.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.heartbeat_at = timezone.now()
        if run.mode == SisRun.Mode.DELTA and run.watermark is None and not run.checkpoint:
            previous = (SisRun.objects.filter(connection=run.connection, status=SisRun.Status.DONE,
                                              server_started_at__isnull=False)
                        .exclude(pk=run.pk).order_by("-server_started_at").first())
            run.watermark = previous.server_started_at - delta_overlap() if previous else None
        run.save()
        own_client = client is None
        try:
            if own_client:
                client = client_for(run.connection)
            _pull(run, client)
            if run.mode == SisRun.Mode.FULL:
                _reconcile(run)
        except SisError as exc:
            log.warning("sis: run %s stopped: %s", run.pk, exc)
            if not exc.transient:
                return _finish(run, SisRun.Status.FAILED, str(exc))
            run.error = f"{exc}{RESUME_NOTE}"
            run.save(update_fields=["error"])
            return run
        except Exception as exc:
            # A defect, or a failure nobody foresaw: never leave the run without a reason. The run keeps its
            # checkpoint for the sweep; the log gets where it happened, never the exception's message (a database
            # error or a KeyError may quote a record: an email, a name).
            log.error("sis: run %s stopped by an unexpected %s (message withheld), at:\n%s", run.pk,
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            run.error = f"Unexpected {type(exc).__name__}{UNEXPECTED_NOTE}"
            try:
                run.save(update_fields=["error"])
            except Exception as failed:  # the database itself failed: the log has it
                log.error("sis: run %s: the reason could not be stored (%s)", run.pk, type(failed).__name__)
            return run
        finally:
            if own_client and client is not None:
                client.close()
        return _finish(run, SisRun.Status.DONE, "")


def _finish(run: SisRun, status: str, error: str) -> SisRun:
    run.status, run.error, run.finished_at = status, error, timezone.now()
    run.save(update_fields=["status", "error", "finished_at"])
    c = run.counts
    log.info("sis: run %s %s: %s", run.pk, status,
             {r: f"+{v['created']} ~{v['updated']} -{v['deleted']} ={v['unchanged']} !{v['errors']}"
              for r, v in c.items()})
    return run


def _counter(run: SisRun, resource: str) -> dict:
    return run.counts.setdefault(resource, dict.fromkeys(COUNTERS, 0))


def _issue(run: SisRun, kind: str, resource: str, sourced_id: str, message: str) -> None:
    run.issue_count += 1
    if run.issue_count <= issue_cap():
        SisRunIssue.objects.create(run=run, kind=kind, resource=resource, sourced_id=sourced_id[:255],
                                   message=message[:2000])


def _pull(run: SisRun, client: OneRosterClient) -> None:
    checkpoint = dict(run.checkpoint or {})
    names = [path for path, _, _ in RESOURCES]
    start = names.index(checkpoint["resource"]) if checkpoint.get("resource") in names else (
        len(names) if checkpoint.get("resource") == "reconcile" else 0)
    roster = Roster(run.connection.district)
    limit = run.connection.page_size
    for path, kind, key in RESOURCES[start:]:
        same = checkpoint.get("resource") == path
        offset = checkpoint.get("offset", 0) if same else 0
        total = checkpoint.get("total") if same else None
        unstable = list(checkpoint.get("unstable", []))
        _counter(run, path)
        previous_ids = None
        while True:
            page = client.page(path, key, offset=offset, limit=limit, since=run.watermark)
            # Without a total Aula pages until an empty page: a SIS that ignores `offset` would never send one.
            page_ids = [r.get("sourcedId") for r in page.records if isinstance(r, dict)]
            if page_ids == previous_ids and any(isinstance(i, str) for i in page_ids):
                raise SisError(f"The SIS sent the same page of {path} again at offset {offset} (does it ignore "
                               "`offset`?).", transient=False)
            previous_ids = page_ids
            if run.server_started_at is None:
                run.server_started_at = page.server_time or timezone.now()
            if total is None:
                total = page.total
            elif page.total is not None and page.total != total and path not in unstable:
                unstable.append(path)  # the SIS's list changed while paging: never reconcile deletions from it
            with transaction.atomic():
                _apply_page(run, roster, path, kind, page.records)
                if page.next_offset is None:
                    checkpoint = {"resource": names[names.index(path) + 1] if path != names[-1] else "reconcile",
                                  "offset": 0, "unstable": unstable}
                else:
                    checkpoint = {"resource": path, "offset": page.next_offset, "total": total,
                                  "unstable": unstable}
                run.checkpoint = checkpoint
                run.heartbeat_at = timezone.now()
                run.save(update_fields=["checkpoint", "heartbeat_at", "counts", "issue_count", "server_started_at"])
            if page.next_offset is None:
                break
            offset = page.next_offset


def _digest(raw: dict) -> str:
    body = {k: v for k, v in raw.items() if k != "dateLastModified"}
    return hashlib.md5(json.dumps(body, sort_keys=True, default=str).encode(), usedforsecurity=False).hexdigest()


def _message(exc: Exception) -> str:
    if isinstance(exc, serializers.ValidationError):
        detail = exc.detail
    elif hasattr(exc, "error_dict"):
        detail = exc.message_dict
    else:
        detail = {"record": exc.messages}
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {_flat(msgs)}" for field, msgs in detail.items())
    return _flat(detail)


def _flat(messages) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in messages.items())
    if isinstance(messages, list):
        return " ".join(_flat(m) for m in messages)
    return str(messages)


def _refs(records: list, kind: str) -> dict[str, list]:
    """The sourcedIds a page names, per link kind (for one prefetch query each)."""
    wanted: dict[str, list] = {kind: []}
    fields = {"class": [("school", "org")], "user": [("agents", "user")],
              "enrollment": [("class", "class"), ("user", "user"), ("school", "org")]}.get(kind, [])
    for raw in records:
        if not isinstance(raw, dict):
            continue
        wanted[kind].append(raw.get("sourcedId"))
        for name, target in fields:
            values = raw.get(name)
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, dict):
                    wanted.setdefault(target, []).append(value.get("sourcedId"))
        if kind == "user" and isinstance(raw.get("roles"), list):
            wanted.setdefault("org", []).extend(r.get("org", {}).get("sourcedId") for r in raw["roles"]
                                                if isinstance(r, dict) and isinstance(r.get("org"), dict))
    return wanted


def _apply_page(run: SisRun, roster: Roster, resource: str, kind: str, records: list) -> None:
    counts = _counter(run, resource)
    ids = [r.get("sourcedId") for r in records if isinstance(r, dict) and isinstance(r.get("sourcedId"), str)]
    known = dict(SisRecord.objects.filter(connection=run.connection, resource=resource, sourced_id__in=ids)
                 .values_list("sourced_id", "digest"))
    if kind in {"org", "class", "user", "enrollment"}:
        for link_kind, sourced_ids in _refs(records, kind).items():
            roster.prefetch(link_kind, sourced_ids)
    # "Unchanged" also needs Aula to still hold what it applied: a row deleted in Aula, or its link, is applied
    # again even though the SIS sends the same record.
    held = roster.held(kind, [sid for sid in ids if sid in known])
    seen: dict[str, str] = {}
    if kind == "user":
        # A guardian names their children in `agents`: people without agents first within the page.
        records = sorted(records, key=lambda r: bool(isinstance(r, dict) and r.get("agents")))
    elif kind == "org":
        # Schools name the district as their parent: the district first within the page.
        records = sorted(records, key=lambda r: not (isinstance(r, dict) and r.get("type") == "district"))
    for raw in records:
        sourced_id = raw.get("sourcedId") if isinstance(raw, dict) else None
        if not isinstance(sourced_id, str) or not sourced_id.strip() or len(sourced_id) > 255:
            counts["errors"] += 1
            _issue(run, SisRunIssue.Kind.INVALID, resource, "", "A record without a valid sourcedId.")
            continue
        digest = _digest(raw)
        seen[sourced_id] = digest
        if known.get(sourced_id) == digest and sourced_id in held:
            # Exactly what Aula applied last time (an overlapping delta, a rerun): nothing to do.
            counts["unchanged"] += 1
            continue
        try:
            # Roster.upsert and Roster.tombstone each run in their own savepoint: a refused record leaves nothing.
            if raw.get("status") == "tobedeleted":
                changed = roster.tombstone(kind, sourced_id)
                outcome = "deleted" if changed else "unchanged"
            else:
                record = validate_record(kind, raw)
                _, created = roster.upsert(kind, sourced_id, record)
                outcome = "created" if created else "updated"
        except serializers.ValidationError as exc:
            counts["errors"] += 1
            _issue(run, SisRunIssue.Kind.INVALID, resource, sourced_id, _message(exc))
            seen[sourced_id] = ""  # listed (never reconciled away), and applied again when the SIS fixes it
        except ValidationError as exc:
            counts["errors"] += 1
            _issue(run, SisRunIssue.Kind.CONFLICT, resource, sourced_id, _message(exc))
            seen[sourced_id] = ""
        except (IntegrityError, DataError) as exc:
            # The savepoint rolled it back. The database's detail may quote values (an email): never reported.
            counts["errors"] += 1
            _issue(run, SisRunIssue.Kind.CONFLICT, resource, sourced_id,
                   f"The record could not be stored ({type(exc).__name__}).")
            seen[sourced_id] = ""
        else:
            counts[outcome] += 1
    SisRecord.objects.bulk_create(
        [SisRecord(connection=run.connection, resource=resource, sourced_id=sid, digest=digest, last_seen_run=run)
         for sid, digest in seen.items()],
        update_conflicts=True, unique_fields=["connection", "resource", "sourced_id"],
        update_fields=["digest", "last_seen_run"])


def _reconcile(run: SisRun) -> None:
    """Full reconciliation: what this district's roster holds but the SIS no longer lists is deleted (as a
    tombstone would), dependants first. Resources whose list changed while paging are left alone, and so are
    resources the SIS listed none of, or would lose more than the allowed fraction of (`_too_many`)."""
    roster = Roster(run.connection.district)
    unstable = set((run.checkpoint or {}).get("unstable", []))
    for path, kind, _ in reversed(RESOURCES):
        counts = _counter(run, path)
        if path in unstable:
            with transaction.atomic():
                _issue(run, SisRunIssue.Kind.RUN, path, "", "Not reconciled: the SIS's list changed while it was "
                       "read; the next full reconciliation deletes what it no longer lists.")
                run.save(update_fields=["counts", "issue_count"])
            continue
        seen = SisRecord.objects.filter(connection=run.connection, resource=path, last_seen_run=run)
        refusal = _too_many(roster, path, kind, seen)
        if refusal:
            log.warning("sis: run %s: %s not reconciled (mass deletion guard)", run.pk, path)
            with transaction.atomic():
                _issue(run, SisRunIssue.Kind.RUN, path, "", refusal)
                run.save(update_fields=["counts", "issue_count"])
            continue
        vanished = list(roster.sourced_ids(kind).exclude(sourced_id__in=seen.values("sourced_id")))
        with transaction.atomic():
            for sourced_id in vanished:
                try:
                    with transaction.atomic():
                        changed = roster.tombstone(kind, sourced_id)
                except ValidationError as exc:
                    counts["errors"] += 1
                    _issue(run, SisRunIssue.Kind.CONFLICT, path, sourced_id,
                           "No longer listed by the SIS: " + _message(exc))
                    continue
                if changed:
                    counts["deleted"] += 1
                    _issue(run, SisRunIssue.Kind.DELETED, path, sourced_id, "No longer listed by the SIS: deleted.")
            # Applied again in full if the SIS lists it again, even unchanged.
            SisRecord.objects.filter(connection=run.connection, resource=path,
                                     sourced_id__in=vanished).update(digest="")
            run.save(update_fields=["counts", "issue_count"])


def _too_many(roster: Roster, path: str, kind: str, seen) -> str:
    """Why the deletions a full reconciliation would make of one resource are refused (empty: they are not).
    A listing that ended early (a SIS capping `limit`, an outage answered with an empty list) looks exactly like
    a district that lost most of its records; a real mass removal is rare and can be let through on purpose."""
    live = roster.sourced_ids(kind, live=True)
    doomed = live.exclude(sourced_id__in=seen.values("sourced_id")).count()
    if not doomed:
        return ""
    held = live.count()
    if not seen.exists():
        return (f"Not reconciled: the SIS listed no {path} while Aula holds {held} from rostering; an empty "
                f"listing never deletes. If the SIS really has none any more, have it send them with status "
                f"tobedeleted.")
    fraction = max_delete_fraction()
    if doomed > DELETE_ALLOWANCE and doomed > held * fraction:
        return (f"Not reconciled: the SIS no longer lists {doomed} of the {held} {path} Aula holds from "
                f"rostering ({doomed / held:.0%}), more than AULA_SIS_MAX_DELETE_FRACTION ({fraction:g}) allows in "
                f"one run; nothing was deleted. Check that the SIS lists everything (its page size, its filters). "
                f"If these really are gone, raise AULA_SIS_MAX_DELETE_FRACTION (1 turns this check off) and run "
                f"a full reconciliation again.")
    return ""
