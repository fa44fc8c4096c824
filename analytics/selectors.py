"""Reads of the analytics pipeline: who may see what, slices of the rollups, and the pipeline's own health.

A slice is a time range × optional filters (country, region, segment, grade, kind) × an optional group-by,
answered from ONE rollup window (each window holds a full copy): the coarsest window that still gives the
range at least MIN_POINTS buckets. Class (session) analytics are aggregate only: no region (children's
geography stays coarse), and cells sliced by segment or grade that count fewer than AULA_ANALYTICS_MIN_GROUP
events are suppressed.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q, Sum

from analytics import buffer
from analytics.models import FlushLedger, Rollup, WebhookDelivery

MIN_POINTS = 12
SCOPES = ("stream", "session")
GROUPS = ("country", "region", "segment", "grade", "detail", "kind")
KINDS = ("viewer.join", "viewer.leave", "reaction", "chat.message", "poll.answer", "question.ask")


# --- access ------------------------------------------------------------------------------------------------

def stream_for(user, stream_id: int):
    """The stream if `user` may see its analytics (its channel's owner or a moderator), else None."""
    from streaming.models import ChannelRole, Stream

    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    stream = Stream.objects.select_related("channel").filter(pk=stream_id).first()
    if stream is None:
        return None
    if user.is_superuser or stream.channel.owner_id == user.pk:
        return stream
    if ChannelRole.objects.filter(channel_id=stream.channel_id, user=user, role=ChannelRole.Kind.MODERATOR).exists():
        return stream
    return None


def session_for(user, session_id: int, *, institution_ids: frozenset[int] | None = ...):
    """The live session if the viewer may see its class analytics: its course's teachers and TAs, and staff of
    its school (or, for a district API client, `institution_ids`: its district's schools), else None."""
    from classrooms import selectors as classroom_selectors
    from classrooms.models import LiveSession

    session = LiveSession.objects.select_related("course").filter(pk=session_id).first()
    if session is None:
        return None
    if institution_ids is not ...:  # an API client's scope, decided by the caller
        return session if institution_ids is None or session.institution_id in institution_ids else None
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if classroom_selectors.can_moderate(user, session):
        return session
    if classroom_selectors.is_school_staff(user, session.institution_id):
        return session
    return None


# --- slicing -------------------------------------------------------------------------------------------------

def window_for(start: dt.datetime, end: dt.datetime) -> int:
    """The coarsest configured window giving at least MIN_POINTS buckets over [start, end) (else the finest)."""
    span = (end - start).total_seconds()
    windows = settings.AULA_ANALYTICS_WINDOWS
    fitting = [w for w in windows if span / w >= MIN_POINTS]
    return max(fitting) if fitting else min(windows)


@dataclass
class Slice:
    scope: str
    scope_id: int
    window: int
    start: dt.datetime
    end: dt.datetime
    group_by: str | None
    rows: list[dict] = field(default_factory=list)  # {bucket, group, kind, count, value_avg, suppressed}
    totals: list[dict] = field(default_factory=list)  # {group, kind, count, value_avg, suppressed}


def _floor(when: dt.datetime, window: int) -> dt.datetime:
    ts = int(when.timestamp()) // window * window
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def slice_rollups(*, scope: str, scope_id: int, start: dt.datetime, end: dt.datetime, kind: str | None = None,
                  country: str | None = None, region: str | None = None, segment: str | None = None,
                  grade: str | None = None, group_by: str | None = None, window: int | None = None) -> Slice:
    """Counts per bucket (and per `group_by` value) for one stream or session, filtered by geography/segment.

    Rows are per (bucket, kind[, group]); totals are per (kind[, group]) over the range."""
    if scope not in SCOPES:
        raise ValueError("scope")
    if group_by is not None and group_by not in GROUPS:
        raise ValueError("group_by")
    children = scope == "session"
    if children and (region or group_by == "region"):
        raise ValueError("region")  # class analytics: coarse geography only
    window = window or window_for(start, end)
    start = _floor(start, window)
    qs = Rollup.objects.filter(scope=scope, scope_id=scope_id, window_seconds=window, bucket_start__gte=start,
                               bucket_start__lt=end)
    filters = {"kind": kind, "country": country, "region": region, "segment": segment, "grade": grade}
    qs = qs.filter(**{k: v for k, v in filters.items() if v is not None})
    keys = ["kind"] + ([group_by] if group_by and group_by != "kind" else [])
    result = Slice(scope, scope_id, window, start, end, group_by)
    threshold = settings.AULA_ANALYTICS_MIN_GROUP if children and (
        group_by in ("segment", "grade") or segment is not None or grade is not None) else 0

    def shape(row: dict) -> dict:
        count = row["n"]
        suppressed = 0 < count < threshold
        return {"kind": row["kind"], "group": row.get(group_by) if group_by else None,
                "count": None if suppressed else count,
                "value_avg": None if suppressed or not row["vn"] else round(row["vs"] / row["vn"], 4),
                "suppressed": suppressed}

    per_bucket = (qs.values("bucket_start", *keys).annotate(n=Sum("count"), vs=Sum("value_sum"), vn=Sum("value_n"))
                  .order_by("bucket_start", *keys))
    result.rows = [{"bucket": row["bucket_start"], **shape(row)} for row in per_bucket]
    totals = qs.values(*keys).annotate(n=Sum("count"), vs=Sum("value_sum"), vn=Sum("value_n")).order_by(*keys)
    result.totals = [shape(row) for row in totals]
    return result


def sparkline_points(rows: list[dict], *, start: dt.datetime, end: dt.datetime, window: int,
                     width: int = 240, height: int = 40) -> str:
    """An SVG polyline `points` attribute for one series of counts (missing buckets are zero)."""
    buckets = max(int((end - start).total_seconds() // window), 1)
    counts = [0] * buckets
    for row in rows:
        i = int((row["bucket"] - start).total_seconds() // window)
        if 0 <= i < buckets and row["count"]:
            counts[i] += row["count"]
    top = max(counts) or 1
    step = width / max(buckets - 1, 1)
    return " ".join(f"{i * step:.1f},{height - c / top * height:.1f}" for i, c in enumerate(counts))


# --- the pipeline's health ------------------------------------------------------------------------------------

def _redis():
    from analytics.services import analytics_redis

    return analytics_redis()


def flush_lag(*, now: float | None = None) -> float:
    """Seconds since the oldest event still waiting in the stream was written (0 when nothing waits).

    Flushed entries are deleted from the stream, so its first entry is the oldest unflushed one."""
    first = _redis().xrange(buffer.stream_key(), count=1)
    if not first:
        return 0.0
    ms = int(first[0][0].decode().split("-")[0])
    return max((now or time.time()) - ms / 1000, 0.0)


def last_flush_at() -> float | None:
    from analytics.services import last_flush_key

    raw = _redis().get(last_flush_key())
    return float(raw) if raw else None


def overflow_counts() -> dict[str, int]:
    """Events refused since the counter was created, per kind ("local": dropped in a process's own queue)."""
    return {k.decode(): int(v) for k, v in _redis().hgetall(buffer.overflow_key()).items()}


def pipeline_status() -> dict:
    r = _redis()
    last = last_flush_at()
    overflow = overflow_counts()
    latest = FlushLedger.objects.order_by("-applied_at").values("applied_at").first()
    return {
        "stream_length": r.xlen(buffer.stream_key()),
        "buffer_max": settings.AULA_ANALYTICS_BUFFER_MAX,
        "flush_lag_seconds": round(flush_lag(), 3),
        "last_flush_at": dt.datetime.fromtimestamp(last, tz=dt.UTC) if last else None,
        "last_batch_applied_at": latest["applied_at"] if latest else None,
        "overflow": overflow,
        "overflow_total": sum(overflow.values()),
        "windows": list(settings.AULA_ANALYTICS_WINDOWS),
        "webhooks": {status: WebhookDelivery.objects.filter(status=status).count()
                     for status in WebhookDelivery.Status.values},
    }


def streams_for(user):
    """Streams whose analytics `user` may see (owner or moderator of the channel)."""
    from streaming.models import ChannelRole, Stream

    if user.is_superuser:
        return Stream.objects.select_related("channel")
    moderated = ChannelRole.objects.filter(user=user, role=ChannelRole.Kind.MODERATOR).values("channel_id")
    return Stream.objects.select_related("channel").filter(Q(channel__owner=user) | Q(channel_id__in=moderated))
