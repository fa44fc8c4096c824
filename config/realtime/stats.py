"""Per-room connection health measured by the server: attempts, outcomes, reconnects, latency, concurrency.

Everything lives in Redis (the real-time shard 0, next to the other global keys), never in PostgreSQL on the
hot path, and is mergeable across server processes:

* `obs:m:<room>:<minute>` — a hash per room per UTC minute: `att` attempts, `ok` successes, `fail` failures
  (server-side), `ref` refusals (policy: not signed in, not enrolled, ended, per-user cap), `rc` reconnects,
  `l<i>` latency histogram buckets (fixed log scale, see LATENCY_BOUNDS_MS), `ln` acks, `peak` the highest
  concurrency seen in that minute, `pe:<code>` player error reports.
* `obs:pu:<room>:<minute>` — a HyperLogLog of the participants (user ids) who joined in that minute.
* `obs:cur:<room>` — a hash process token → sockets open in this room in that process; `obs:procs` a sorted
  set process token → lease expiry. A dead process stops refreshing its lease (the base re-check loop does
  it) and its sockets stop counting: current = the sum over processes whose lease is live.
* `obs:room:<room>` — first and last minute seen and the all-time peak; `obs:active` — room → last activity.
* `obs:orig:<minute>` — handshakes refused by the origin allowlist before any consumer ran, by route target.

Per connect: one script call (one round trip). Per disconnect: one. Per frame: nothing, except the sampled
sockets' latency acks (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import socket
import time
import uuid
import weakref
from collections.abc import Iterable

from django.conf import settings

# Minute buckets and room metadata outlive a long school day and a weekend stream, then expire.
BUCKET_TTL = 48 * 3600
MAX_MINUTES = BUCKET_TTL // 60
# Latency buckets: upper bounds in ms, ×1.25 from 1 ms to 60 s (50 buckets; a percentile is reported as the
# upper bound of the bucket it falls in, so at most 25 % high, never low).
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(round(1.25 ** i, 3) for i in range(0, 50)) + (60_000.0,)
LATENCY_MAX_MS = 60_000.0
FUTURE_TOLERANCE_MS = 2_000.0  # process clocks differ a little; further in the future is garbage
GARBAGE_AGE_MS = 600_000.0  # a ts older than this is not a live delivery (a replay, a stale page)
PLAYER_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")

# Close codes (config.realtime.protocol.CloseCode) that refuse for a reason of the platform, not the user's.
FAILURE_CLOSE_CODES = frozenset({4503})

_ROUTE = re.compile(r"^/ws/v1/(sessions|streams)/(\d+)/")
_SESSION_ROOM = re.compile(r"^i\d+\.ls(\d+)$")
_STREAM_ROOM = re.compile(r"^st(\d+)$")

PROCESS_TOKEN = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _p() -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:obs"


def minute_of(ts: float | None = None) -> int:
    return int((time.time() if ts is None else ts) // 60)


def bucket_key(room_key: str, minute: int) -> str:
    return f"{_p()}:m:{room_key}:{minute}"


def participants_key(room_key: str, minute: int) -> str:
    return f"{_p()}:pu:{room_key}:{minute}"


def current_key(room_key: str) -> str:
    return f"{_p()}:cur:{room_key}"


def procs_key() -> str:
    return f"{_p()}:procs"


def room_meta_key(room_key: str) -> str:
    return f"{_p()}:room:{room_key}"


def active_key() -> str:
    return f"{_p()}:active"


def origin_key(minute: int) -> str:
    return f"{_p()}:orig:{minute}"


def lease_ttl() -> int:
    """A process's concurrency lease: three missed re-check periods and it no longer counts."""
    return 3 * settings.AULA_SOCKET_RECHECK_SECONDS + 5


def room_label(room_key: str) -> tuple[str, int] | None:
    """(kind, id) of a room key: ("session", 12) for `i3.ls12`, ("stream", 5) for `st5`; None otherwise."""
    m = _SESSION_ROOM.match(room_key)
    if m:
        return "session", int(m.group(1))
    m = _STREAM_ROOM.match(room_key)
    if m:
        return "stream", int(m.group(1))
    return None


def route_target(path: str) -> str | None:
    """The room a WebSocket path asks for, as `sessions:12` / `streams:5` (origin refusals are counted by it)."""
    m = _ROUTE.match(path or "")
    return f"{m.group(1)}:{m.group(2)}" if m else None


def _route_target_of_room(room_key: str) -> str | None:
    label = room_label(room_key)
    return f"{label[0]}s:{label[1]}" if label else None


def latency_bucket(ms: float) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS) - 1


# --- the scripts (one round trip each) ---------------------------------------------------------------------

# KEYS: minute bucket, participants HLL, current hash, procs zset, room meta, active zset.
# ARGV: outcome field ("ok" | "fail" | "ref"), user id ("" = none), reconnect (0/1), process token, now (s),
#       lease expiry (s), minute, bucket ttl, room key.
_CONNECT = """
local bucket, pu, cur, procs, meta, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local outcome, uid, rc, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, lease, minute, ttl, room = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), ARGV[9]
redis.call('HINCRBY', bucket, 'att', 1)
redis.call('HINCRBY', bucket, outcome, 1)
redis.call('EXPIRE', bucket, ttl)
redis.call('HSETNX', meta, 'first', minute)
redis.call('HSET', meta, 'last', minute)
redis.call('EXPIRE', meta, ttl)
redis.call('ZADD', active, now, room)
if outcome ~= 'ok' then
  return -1
end
if rc == '1' then
  redis.call('HINCRBY', bucket, 'rc', 1)
end
if uid ~= '' then
  redis.call('PFADD', pu, uid)
  redis.call('EXPIRE', pu, ttl)
end
redis.call('HINCRBY', cur, token, 1)
redis.call('EXPIRE', cur, ttl)
redis.call('ZADD', procs, lease, token)
local total = 0
local entries = redis.call('HGETALL', cur)
for i = 1, #entries, 2 do
  local expiry = tonumber(redis.call('ZSCORE', procs, entries[i]) or '0')
  if expiry >= now then
    total = total + tonumber(entries[i + 1])
  else
    redis.call('HDEL', cur, entries[i])
  end
end
if total > tonumber(redis.call('HGET', bucket, 'peak') or '0') then
  redis.call('HSET', bucket, 'peak', total)
end
if total > tonumber(redis.call('HGET', meta, 'peak') or '0') then
  redis.call('HSET', meta, 'peak', total)
end
return total
"""

# KEYS: current hash, active zset. ARGV: process token, now, room key.
_DISCONNECT = """
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return left
"""

# KEYS: current hash, procs zset. ARGV: now.
_CURRENT = """
local total = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local expiry = tonumber(redis.call('ZSCORE', KEYS[2], entries[i]) or '0')
  if expiry >= tonumber(ARGV[1]) then
    total = total + tonumber(entries[i + 1])
  end
end
return total
"""

_scripts: dict[tuple[int, str], object] = {}


def _script(client, source: str):
    key = (id(client), source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(source)
    return script


def _sync_redis():
    from config.realtime.transport import _redis

    return _redis(0)


def _async_redis():
    from config.realtime.hub import hub

    return hub()._redis


# --- process-local figures (labelled by pid in /metrics) ----------------------------------------------------

class _Local:
    """This process's sockets: open now, and frames written to sockets that have since closed."""

    def __init__(self) -> None:
        self.open_sockets = 0
        self.frames_out_closed = 0
        self.last_lease = 0.0


local = _Local()


# --- writes from the consumer base -------------------------------------------------------------------------

async def record_connect(room_key: str | None, outcome: str, *, user_id: int | str | None = None,
                         reconnect: bool = False, path: str = "", process: str = PROCESS_TOKEN,
                         now: float | None = None) -> int:
    """Count one connection attempt and its outcome ("ok", "fail", "ref"); on success, the socket joins the
    room's concurrency. Returns the room's current connections (ok) or -1. One round trip."""
    if room_key is None:
        # Refused or failed before the room was known: counted under the route's target room name.
        room_key = _room_for_path(path)
        if room_key is None:
            return -1
    now = time.time() if now is None else now
    minute = minute_of(now)
    if outcome == "ok" and process == PROCESS_TOKEN:
        local.open_sockets += 1
        local.last_lease = now
    return int(await _script(_async_redis(), _CONNECT)(
        keys=[bucket_key(room_key, minute), participants_key(room_key, minute), current_key(room_key), procs_key(),
              room_meta_key(room_key), active_key()],
        args=[outcome, "" if user_id is None else str(user_id), "1" if reconnect else "0", process,
              f"{now:.3f}", f"{now + lease_ttl():.3f}", minute, BUCKET_TTL, room_key]))


def _room_for_path(path: str) -> str | None:
    """A pre-authorization outcome has no room key yet (a session's key needs its institution); it is counted
    under `pre:<sessions|streams>:<id>`, which room_health() folds into the room."""
    target = route_target(path)
    return f"pre:{target}" if target else None


async def record_disconnect(room_key: str, delivered: int = 0, *, process: str = PROCESS_TOKEN) -> None:
    if process == PROCESS_TOKEN:
        local.open_sockets = max(0, local.open_sockets - 1)
        local.frames_out_closed += delivered
    await _script(_async_redis(), _DISCONNECT)(
        keys=[current_key(room_key), active_key()], args=[process, f"{time.time():.3f}", room_key])


async def refresh_lease(force: bool = False, *, process: str = PROCESS_TOKEN, now: float | None = None) -> None:
    """Keep this process's sockets counted (called from the re-check loop; at most twice per period)."""
    now = time.time() if now is None else now
    if process == PROCESS_TOKEN:
        if not force and now - local.last_lease < settings.AULA_SOCKET_RECHECK_SECONDS / 2:
            return
        local.last_lease = now
    await _async_redis().zadd(procs_key(), {process: now + lease_ttl()})


def ack_latency_ms(ts: str, now: float | None = None) -> float | None:
    """Delivery latency of a server-stamped frame from its `ts` (ISO 8601, UTC), clamped to 0–60 s; None for
    garbage (unparsable, far in the future, or too old to be a live delivery)."""
    from datetime import datetime

    if not isinstance(ts, str) or len(ts) > 40:
        return None
    try:
        stamped = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamped.tzinfo is None:
        return None
    ms = ((time.time() if now is None else now) - stamped.timestamp()) * 1000
    if not math.isfinite(ms) or ms < -FUTURE_TOLERANCE_MS or ms > GARBAGE_AGE_MS:
        return None
    return min(max(ms, 0.0), LATENCY_MAX_MS)


async def record_latency(room_key: str, ms: float) -> None:
    key = bucket_key(room_key, minute_of())
    pipe = _async_redis().pipeline(transaction=False)
    pipe.hincrby(key, f"l{latency_bucket(ms)}", 1)
    pipe.hincrby(key, "ln", 1)
    pipe.expire(key, BUCKET_TTL)
    await pipe.execute()


async def record_player_error(room_key: str, code: str) -> None:
    key = bucket_key(room_key, minute_of())
    pipe = _async_redis().pipeline(transaction=False)
    pipe.hincrby(key, f"pe:{code}", 1)
    pipe.expire(key, BUCKET_TTL)
    await pipe.execute()


async def record_origin_refusal(path: str) -> None:
    """A handshake refused by the origin allowlist (it never reached a consumer)."""
    key = origin_key(minute_of())
    pipe = _async_redis().pipeline(transaction=False)
    pipe.hincrby(key, route_target(path) or "other", 1)
    pipe.expire(key, BUCKET_TTL)
    await pipe.execute()


# --- reads --------------------------------------------------------------------------------------------------

def percentile_ms(histogram: dict[int, int], q: float) -> float | None:
    """The q-quantile (0–1) of a bucket histogram: the upper bound of the bucket holding that rank."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i in sorted(histogram):
        seen += histogram[i]
        if seen >= rank:
            return LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)]
    return LATENCY_BOUNDS_MS[-1]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def aggregate(buckets: Iterable[dict], *, participants: int, current: int, peak: int | None,
              origin_refusals: int) -> dict:
    """The figures of a room from its minute buckets (pure: the sync and async readers share it)."""
    counts = {"att": 0, "ok": 0, "fail": 0, "ref": 0, "rc": 0}
    histogram: dict[int, int] = {}
    player: dict[str, int] = {}
    bucket_peak = 0
    for raw in buckets:
        for k, v in raw.items():
            field, n = _text(k), int(v)
            if field in counts:
                counts[field] += n
            elif field == "peak":
                bucket_peak = max(bucket_peak, n)
            elif field.startswith("pe:"):
                player[field[3:]] = player.get(field[3:], 0) + n
            elif field.startswith("l") and field[1:].isdigit():
                histogram[int(field[1:])] = histogram.get(int(field[1:]), 0) + n
    decided = counts["ok"] + counts["fail"]
    return {
        "attempts": counts["att"],
        "successes": counts["ok"],
        "failures": counts["fail"],
        "refusals": counts["ref"],
        # Refusals (a logged-out user, a removed student) are the platform working: not in the rate.
        "success_rate": round(counts["ok"] / decided, 4) if decided else None,
        "failure_rate": round(counts["fail"] / decided, 4) if decided else None,
        "reconnects": counts["rc"],
        "participants": participants,
        "reconnects_per_participant": round(counts["rc"] / participants, 3) if participants else None,
        "latency_samples": sum(histogram.values()),
        "latency_p50_ms": percentile_ms(histogram, 0.50),
        "latency_p95_ms": percentile_ms(histogram, 0.95),
        "latency_p99_ms": percentile_ms(histogram, 0.99),
        "current": current,
        "peak": max(bucket_peak, peak or 0, current),
        "player_errors": sum(player.values()),
        "player_errors_by_code": dict(sorted(player.items(), key=lambda kv: -kv[1])[:20]),
        "origin_refusals": origin_refusals,
    }


def _minutes(client, room_key: str, minutes: int | None, now: float) -> list[int]:
    last = minute_of(now)
    if minutes is not None:
        return list(range(last - max(1, minutes) + 1, last + 1))
    meta = client.hgetall(room_meta_key(room_key))
    first = int(meta.get(b"first", last)) if meta else last
    end = int(meta.get(b"last", last)) if meta else last
    first = max(first, end - MAX_MINUTES + 1)
    return list(range(first, end + 1))


def room_health(room_key: str, minutes: int | None = 5, *, now: float | None = None) -> dict:
    """The health of one room over the last `minutes` minutes (None: its whole life, up to 48 h).

    Sync: for views, the admin, Celery and the creator dashboard. Keys: attempts, successes, failures,
    refusals, success_rate, failure_rate, reconnects, participants, reconnects_per_participant,
    latency_p50/p95/p99_ms (None without samples), latency_samples, current, peak, player_errors,
    player_errors_by_code, origin_refusals."""
    client = _sync_redis()
    now = time.time() if now is None else now
    span = _minutes(client, room_key, minutes, now)
    target = _route_target_of_room(room_key)
    pre = f"pre:{target}" if target else None
    pipe = client.pipeline(transaction=False)
    for minute in span:
        pipe.hgetall(bucket_key(room_key, minute))
        if pre:
            pipe.hgetall(bucket_key(pre, minute))
        pipe.hget(origin_key(minute), target or "other")
    pipe.pfcount(*[participants_key(room_key, m) for m in span])
    pipe.hget(room_meta_key(room_key), "peak")
    results = pipe.execute()
    meta_peak = results.pop()
    participants = int(results.pop() or 0)
    step = 3 if pre else 2
    buckets, origin = [], 0
    for i in range(0, len(results), step):
        buckets.append(results[i])
        if pre:
            buckets.append(results[i + 1])
        origin += int(results[i + step - 1] or 0) if target else 0
    current = int(_script(client, _CURRENT)(keys=[current_key(room_key), procs_key()], args=[f"{now:.3f}"]))
    return aggregate(buckets, participants=participants, current=current,
                     peak=int(meta_peak) if (minutes is None and meta_peak) else None, origin_refusals=origin)


def active_rooms(since_seconds: float, *, now: float | None = None) -> list[str]:
    """Rooms with a connect or disconnect in the last `since_seconds` (the beat jobs' working set)."""
    now = time.time() if now is None else now
    return [_text(r) for r in _sync_redis().zrangebyscore(active_key(), now - since_seconds, "+inf")
            if not _text(r).startswith("pre:")]


def forget_inactive(older_than_seconds: float = BUCKET_TTL, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    client = _sync_redis()
    client.zremrangebyscore(procs_key(), "-inf", now - 3600)  # leases of processes gone for an hour
    return int(client.zremrangebyscore(active_key(), "-inf", now - older_than_seconds))


def room_first_last(room_key: str) -> tuple[int | None, int | None]:
    meta = _sync_redis().hgetall(room_meta_key(room_key))
    if not meta:
        return None, None
    return int(meta[b"first"]), int(meta[b"last"])


def origin_refusals_total(minutes: int = 5, *, now: float | None = None) -> dict[str, int]:
    last = minute_of(now)
    pipe = _sync_redis().pipeline(transaction=False)
    for minute in range(last - minutes + 1, last + 1):
        pipe.hgetall(origin_key(minute))
    out: dict[str, int] = {}
    for h in pipe.execute():
        for k, v in h.items():
            out[_text(k)] = out.get(_text(k), 0) + int(v)
    return out


# --- the live health feed (a staff audience's `health` frames) ------------------------------------------------

def health_frame(room_key: str, figures: dict) -> str:
    from config.realtime.transport import encode_frame

    label = room_label(room_key)
    return encode_frame("health", {"room": {"kind": label[0], "id": label[1]} if label else None,
                                   "window_minutes": 5, **figures})


class HealthFeed:
    """Per event loop: for each staff audience with local sockets, one task that publishes the room's health
    every AULA_HEALTH_PUSH_SECONDS. A Redis lease per room (SET NX PX) makes one process publish per period
    whatever the number of processes holding teachers of that room."""

    def __init__(self) -> None:
        self.audiences: dict[str, tuple[str, int]] = {}  # audience room -> (measured room, local sockets)
        self.tasks: dict[str, object] = {}

    async def add(self, room_key: str, audience: str, member) -> None:
        measured, count = self.audiences.get(audience, (room_key, 0))
        self.audiences[audience] = (measured, count + 1)
        task = self.tasks.get(audience)
        if task is None or task.done():
            self.tasks[audience] = asyncio.create_task(self._loop(audience), name=f"aula-health:{audience}")
        # The newcomer sees figures at once rather than after a period (best effort: never fails the join).
        try:
            figures = await _room_health_async(room_key)
        except Exception:
            return
        await member.send_now(health_frame(room_key, figures))

    def discard(self, audience: str) -> None:
        measured, count = self.audiences.get(audience, ("", 0))
        if count <= 1:
            self.audiences.pop(audience, None)
            task = self.tasks.pop(audience, None)
            if task is not None:
                task.cancel()
        else:
            self.audiences[audience] = (measured, count - 1)

    async def _loop(self, audience: str) -> None:
        from config.realtime.hub import hub
        from config.realtime.transport import publish_frame_async

        period = settings.AULA_HEALTH_PUSH_SECONDS
        while audience in self.audiences:
            await asyncio.sleep(period)
            room_key = self.audiences.get(audience, (None,))[0]
            if room_key is None:
                return
            try:
                lease = f"{_p()}:hl:{audience}"
                if not await _async_redis().set(lease, PROCESS_TOKEN, nx=True, px=int(period * 1000) - 200):
                    continue
                figures = await _room_health_async(room_key)
                h = hub()
                await publish_frame_async(h._shard(audience).redis, audience, health_frame(room_key, figures))
            except asyncio.CancelledError:
                raise
            except Exception:
                logging.getLogger("aula.realtime").warning("health feed round failed", exc_info=True)


async def _room_health_async(room_key: str) -> dict:
    return await asyncio.get_running_loop().run_in_executor(None, room_health, room_key)


_feeds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def health_feed() -> HealthFeed:
    """The feed of the running event loop (one per server process)."""
    loop = asyncio.get_running_loop()
    feed = _feeds.get(loop)
    if feed is None:
        feed = _feeds[loop] = HealthFeed()
    return feed
