"""Draining the analytics event stream into rollups, exactly once, in bounded batches.

`flush()` reads the Redis stream (analytics.buffer) through a consumer group, aggregates one batch in memory,
and in ONE transaction upserts the rollups (one INSERT … ON CONFLICT statement over unnest arrays) and writes a
flush-ledger row for the batch's stream-id range; only then it XACKs and XDELs the entries. A flush that dies
between its commit and the XACK leaves the entries pending: the next flush re-claims them (XAUTOCLAIM) and
finds them already in the ledger, so it acknowledges them without counting them again. Applies are
serialised by a transaction-scoped advisory lock, so two workers flushing at once cannot both count a batch.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection, transaction

from analytics import buffer
from analytics.models import FlushLedger

logger = logging.getLogger("aula.analytics.flush")

GROUP = "rollup"
_ADVISORY_LOCK = 0x61756C61_616E  # "aula" "an": one writer applies a batch at a time
_KEY_SEQ = 10**10
# Dimensions with a column of their own; any other dimension goes to `detail` ("emoji=fire").
_COLUMNS = ("country", "region", "segment", "grade")
_INT_COLUMNS = {"school": "institution_id", "course": "course_id"}

_client: tuple[int, redis.Redis] | None = None


def analytics_redis() -> redis.Redis:
    global _client
    pid = os.getpid()
    if _client is None or _client[0] != pid:
        _client = (pid, redis.Redis.from_url(settings.REDIS_ANALYTICS_URL, socket_timeout=10,
                                             socket_connect_timeout=5, **settings.REDIS_CLIENT_IDENTITY))
    return _client[1]


def entry_key(entry_id: bytes | str) -> int:
    """A stream id "ms-seq" as one orderable integer (ms * 10^10 + seq)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms) * _KEY_SEQ + int(seq or 0)


def bucket_start(at: float, window: int) -> int:
    """The start (epoch seconds) of the `window`-second bucket holding `at`."""
    return int(at // window) * window


@dataclass
class Cell:
    count: int = 0
    value_sum: float = 0.0
    value_n: int = 0


def aggregate(events, windows: list[int]) -> dict[tuple, Cell]:
    """Rollup cells of some events: {(window, bucket, scope, scope_id, kind, inst, course, country, region,
    segment, grade, detail): Cell}."""
    cells: dict[tuple, Cell] = defaultdict(Cell)
    for event in events:
        dims = dict(event.dims)
        cols = tuple(dims.pop(name, "")[:16 if name != "country" else 2] for name in _COLUMNS)
        ints = []
        for name in ("school", "course"):
            raw = dims.pop(name, "")
            ints.append(int(raw) if str(raw).isdigit() else 0)
        detail = ";".join(f"{k}={v}" for k, v in sorted(dims.items()))[:64]
        for window in windows:
            cell = cells[(window, bucket_start(event.at, window), event.scope, event.scope_id, event.kind[:32],
                          *ints, *cols, detail)]
            cell.count += event.n
            if event.value is not None:
                cell.value_sum += event.value
                cell.value_n += 1
    return cells


_UPSERT = """
INSERT INTO analytics_rollup (window_seconds, bucket_start, scope, scope_id, kind, institution_id, course_id,
                              country, region, segment, grade, detail, count, value_sum, value_n)
SELECT w, to_timestamp(b), s, i, k, inst, crs, c, r, seg, g, d, n, vs, vn
FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[],
            %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::float8[], %s::bigint[])
     AS t(w, b, s, i, k, inst, crs, c, r, seg, g, d, n, vs, vn)
ON CONFLICT ON CONSTRAINT analytics_rollup_dims_unique DO UPDATE SET
    count = analytics_rollup.count + EXCLUDED.count,
    value_sum = analytics_rollup.value_sum + EXCLUDED.value_sum,
    value_n = analytics_rollup.value_n + EXCLUDED.value_n
"""


def rollups_upsert(cells: dict[tuple, Cell]) -> int:
    """Add cells to the rollups in one statement (call inside the batch's transaction)."""
    if not cells:
        return 0
    columns: list[list] = [[] for _ in range(15)]
    for key, cell in cells.items():
        for i, part in enumerate(key):
            columns[i].append(part)
        columns[12].append(cell.count)
        columns[13].append(cell.value_sum)
        columns[14].append(cell.value_n)
    with connection.cursor() as cur:
        cur.execute(_UPSERT, columns)
    return len(cells)


def _already_applied(keys: list[int]) -> set[int]:
    with connection.cursor() as cur:
        cur.execute("SELECT e.k FROM unnest(%s::numeric[]) AS e(k) WHERE EXISTS (SELECT 1 FROM analytics_flushledger l "
                    "WHERE l.first_key <= e.k AND l.last_key >= e.k)", [keys])
        return {int(row[0]) for row in cur.fetchall()}


def batch_apply(entries: list[tuple], *, contiguous: bool) -> int:
    """Count a batch of stream entries [(id, fields)] into the rollups, once. Returns events counted now
    (0 when every entry was counted before). `contiguous`: the batch is a run of the stream (XREADGROUP ">"),
    recorded as one ledger range; otherwise (re-claimed entries) each entry gets its own ledger row."""
    if not entries:
        return 0
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
        keyed = [(entry_key(entry_id), fields) for entry_id, fields in entries]
        done = _already_applied([k for k, _ in keyed])
        fresh = []
        for key, fields in keyed:
            if key in done:
                continue
            try:
                fresh.append((key, buffer.parse(fields)))
            except (KeyError, ValueError):
                logger.warning("analytics flush: an undecodable stream entry was dropped")
        if not fresh:
            return 0
        events = [event for _, event in fresh]
        rollups_upsert(aggregate(events, settings.AULA_ANALYTICS_WINDOWS))
        oldest = dt.datetime.fromtimestamp(min(e.at for e in events), tz=dt.UTC)
        total = sum(e.n for e in events)
        if contiguous and not done:
            FlushLedger.objects.create(first_key=keyed[0][0], last_key=keyed[-1][0], entries=len(fresh),
                                       events=total, oldest_event_at=oldest)
        else:
            FlushLedger.objects.bulk_create(
                FlushLedger(first_key=key, last_key=key, entries=1, events=event.n,
                            oldest_event_at=dt.datetime.fromtimestamp(event.at, tz=dt.UTC)) for key, event in fresh)
        return total


def _ensure_group(r: redis.Redis) -> None:
    try:
        r.xgroup_create(buffer.stream_key(), GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _ack(r: redis.Redis, ids: list) -> None:
    if ids:
        pipe = r.pipeline(transaction=False)
        pipe.xack(buffer.stream_key(), GROUP, *ids)
        pipe.xdel(buffer.stream_key(), *ids)
        pipe.execute()


@dataclass
class FlushResult:
    batches: int = 0
    entries: int = 0
    counted: int = 0  # events newly counted (sum of n)
    reclaimed: int = 0


def flush(*, max_seconds: float = 20.0, consumer: str | None = None, batch: int | None = None) -> FlushResult:
    """Drain the stream: first re-claim entries a dead flush left unacknowledged, then read new ones, batch by
    batch, until the stream is empty or `max_seconds` have passed (the next beat tick continues)."""
    r = analytics_redis()
    _ensure_group(r)
    consumer = consumer or consumer_name()
    size = batch or settings.AULA_ANALYTICS_FLUSH_BATCH
    idle_ms = settings.AULA_ANALYTICS_CLAIM_IDLE_SECONDS * 1000
    result = FlushResult()
    deadline = time.monotonic() + max_seconds
    start = "0-0"
    while time.monotonic() < deadline:  # entries a crashed flush read but never acknowledged
        start, claimed, *_ = r.xautoclaim(buffer.stream_key(), GROUP, consumer, idle_ms, start_id=start, count=size)
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if claimed:
            result.counted += batch_apply(claimed, contiguous=False)
            _ack(r, [entry_id for entry_id, _ in claimed])
            result.reclaimed += len(claimed)
            result.entries += len(claimed)
            result.batches += 1
        if start in (b"0-0", "0-0"):
            break
    while time.monotonic() < deadline:
        response = r.xreadgroup(GROUP, consumer, {buffer.stream_key(): ">"}, count=size)
        entries = response[0][1] if response else []
        if not entries:
            break
        result.counted += batch_apply(entries, contiguous=True)
        _ack(r, [entry_id for entry_id, _ in entries])
        result.entries += len(entries)
        result.batches += 1
        r.set(last_flush_key(), f"{time.time():.3f}")
    r.set(last_flush_key(), f"{time.time():.3f}")
    return result


def last_flush_key() -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:an:last_flush"


def ledger_prune(*, older_than: dt.timedelta = dt.timedelta(days=7)) -> int:
    """Forget ledger rows of batches long acknowledged (a pending entry is re-claimed within minutes)."""
    from django.utils import timezone

    deleted, _ = FlushLedger.objects.filter(applied_at__lt=timezone.now() - older_than).delete()
    return deleted
