"""Room health after the fact: the per-room summaries (RoomHealth) written from the live Redis figures.

`config.realtime.stats.room_health()` answers for the live window; this module keeps a room's whole-life
figures in PostgreSQL so the admin and the creator dashboard can show them once the Redis buckets expire.
"""

from __future__ import annotations

import datetime as dt
import time

from django.db import transaction

from analytics.models import RoomHealth
from config.realtime import stats

# Rooms with a connect or disconnect this recently are summarised on each run (the job runs every minute;
# the margin covers a missed beat tick).
ACTIVE_WITHIN_SECONDS = 10 * 60

_FIELDS = ("attempts", "successes", "failures", "refusals", "success_rate", "reconnects", "participants",
           "reconnects_per_participant", "latency_samples", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
           "peak", "player_errors", "player_errors_by_code", "origin_refusals")


def _at(minute: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(minute * 60, tz=dt.UTC)


def room_health_persist(*, room_key: str, now: float | None = None) -> RoomHealth | None:
    """Upsert one room's whole-life summary from Redis (idempotent: run it as often as you like)."""
    label = stats.room_label(room_key)
    if label is None:
        return None
    first, last = stats.room_first_last(room_key)
    if first is None:
        return None
    figures = stats.room_health(room_key, minutes=None, now=now)
    values = {name: figures[name] for name in _FIELDS}
    values["peak"] = figures["peak"] or 0
    with transaction.atomic():
        row, created = RoomHealth.objects.select_for_update().get_or_create(
            room_key=room_key,
            defaults={"kind": label[0], "object_id": label[1], "first_seen_at": _at(first),
                      "last_seen_at": _at(last) + dt.timedelta(seconds=59), **values})
        if not created:
            # Redis keeps 48 h: a longer-lived room's earliest minutes are gone from it but not from the row.
            for name in ("attempts", "successes", "failures", "refusals", "reconnects", "latency_samples",
                         "player_errors", "origin_refusals", "participants", "peak"):
                values[name] = max(values[name] or 0, getattr(row, name) or 0)
            for name, value in values.items():
                setattr(row, name, value)
            row.first_seen_at = min(row.first_seen_at, _at(first))
            row.last_seen_at = max(row.last_seen_at, _at(last) + dt.timedelta(seconds=59))
            row.save()
    return row


def room_health_persist_active(*, now: float | None = None) -> int:
    """Summarise every recently active room; returns how many were written."""
    now = time.time() if now is None else now
    written = 0
    for room_key in stats.active_rooms(ACTIVE_WITHIN_SECONDS, now=now):
        if room_health_persist(room_key=room_key, now=now) is not None:
            written += 1
    stats.forget_inactive(now=now)
    return written


def room_health_for(kind: str, object_id: int) -> dict | None:
    """For the creator dashboard and pages: the live figures (last 5 minutes) when the room is active, else
    the stored summary; None when the room was never seen. `kind` is "session" or "stream"."""
    row = RoomHealth.objects.filter(kind=kind, object_id=object_id).first()
    live_key = row.room_key if row is not None else None
    if kind == "stream":
        from streaming.realtime import stream_room

        live_key = stream_room(object_id)
    elif live_key is None:
        from classrooms.models import LiveSession
        from classrooms.realtime import session_room

        institution_id = (LiveSession.objects.filter(pk=object_id)
                          .values_list("institution_id", flat=True).first())
        live_key = session_room(institution_id, object_id) if institution_id else None
    if live_key is not None and live_key in set(stats.active_rooms(stats_window_seconds())):
        return {"live": True, **stats.room_health(live_key, minutes=5)}
    if row is None:
        return None
    return {"live": False, **{name: getattr(row, name) for name in _FIELDS}, "current": 0,
            "failure_rate": (round(row.failures / (row.successes + row.failures), 4)
                             if row.successes + row.failures else None)}


def stats_window_seconds() -> int:
    return 5 * 60
