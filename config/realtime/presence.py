"""Presence in the manner of Phoenix Presence: one entry per user, one meta per connection, diffs not lists.

Redis holds, per room, a hash of connection metas, a sorted set of connection heartbeats and a hash of
connections per user. Every process heartbeats its own connections every HEARTBEAT seconds in one
pipeline; a connection whose heartbeat is older than TTL (a crashed process, a dead network) is removed
by whichever sweeper gets there first (each process for its rooms, and Celery beat for all), atomically,
so exactly one leave is reported. Joins and leaves are coalesced per room and published as one
`presence.diff` at most every FLUSH seconds, so a join storm of 2,000 costs a handful of broadcasts.

With a sharded real-time Redis every room's keys, and the index of rooms with presence, live on the
room's shard (transport.shard_index); diffs are published on each audience room's own shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.dispatch import Signal

from config.realtime.transport import (
    async_redis,
    db_call,
    encode_frame,
    publish_frame,
    publish_frame_async,
    shard_index,
)

logger = logging.getLogger("aula.realtime.presence")

HEARTBEAT = 10.0  # seconds between heartbeats of a process's connections
TTL = 25.0  # a connection not heard of for this long is a ghost (one lost heartbeat is tolerated)
# A ghost's leave is published at most TTL + SWEEP + FLUSH after its last heartbeat, which must stay under
# the 30 s we promise with room to spare: with a 5 s sweep that was 30.25 s when a process died just after
# heartbeating (measured by tests/e2e/test_faults.py).
SWEEP = 2.5
FLUSH = 0.25  # seconds: presence diffs are coalesced per room in this window

NODE = f"{socket.gethostname()}:{os.getpid()}"

# Sent (synchronously) for every connection that left, whether it closed or was swept as a ghost.
presence_left = Signal()  # kwargs: room_key, meta, left_at (epoch seconds), reason ("closed" | "expired")

_JOIN = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
return redis.call('HLEN', KEYS[3])
"""
_LEAVE = """
local meta = redis.call('HGET', KEYS[1], ARGV[1])
if not meta then return {false, redis.call('HLEN', KEYS[3])} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
return {meta, redis.call('HLEN', KEYS[3])}
"""
_SWEEP = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES')
local out = {}
for i = 1, #stale, 2 do
  local conn = stale[i]
  local meta = redis.call('HGET', KEYS[1], conn)
  redis.call('ZREM', KEYS[2], conn)
  if meta then
    redis.call('HDEL', KEYS[1], conn)
    local uid = cjson.decode(meta)['user_id']
    if redis.call('HINCRBY', KEYS[3], uid, -1) <= 0 then redis.call('HDEL', KEYS[3], uid) end
    table.insert(out, meta)
    table.insert(out, stale[i + 1])
  end
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[4], ARGV[2]) end
table.insert(out, redis.call('HLEN', KEYS[3]))
return out
"""
# A heartbeat. An entry that is gone (Redis restarted empty, or swept while this process could not reach
# Redis) is registered again in full, user count included, and reported so a join can be published.
_HEARTBEAT = """
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return redis.call('HLEN', KEYS[3])
"""
_UPDATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return old
end
return false
"""


def _keys(room_key: str) -> list[str]:
    # The last key is the index of rooms with presence on the room's shard (one index per shard).
    p = f"{settings.AULA_REDIS_KEY_PREFIX}:pres"
    return [f"{p}:{room_key}:metas", f"{p}:{room_key}:hb", f"{p}:{room_key}:users", f"{p}:rooms"]


@dataclass
class _Pending:
    joins: dict[str, list[dict]] = field(default_factory=dict)
    leaves: dict[str, list[dict]] = field(default_factory=dict)
    count: int | None = None


@dataclass
class _Tracked:
    room_key: str
    conn_id: str
    user_id: int
    meta: dict
    joined: bool = False  # registered in Redis by track(); only then does the heartbeat look after it


# Which rooms receive a room's presence diffs; set by the app that owns the room (e.g. classrooms).
AudienceFn = Callable[[str, int], list[str]]


class PresenceTracker:
    """Per-process presence: local connections, heartbeats, sweeps and coalesced diffs.

    `urls` are the real-time shards in settings order (a single URL is one shard). Scripts are registered
    once and run on the room's shard's client (each server loads a script on its first NOSCRIPT)."""

    def __init__(self, urls: str | list[str]):
        urls = [urls] if isinstance(urls, str) else list(urls)
        self._shards = [async_redis(url) for url in urls]
        self._redis = self._shards[0]
        self._join = self._redis.register_script(_JOIN)
        self._leave = self._redis.register_script(_LEAVE)
        self._sweep = self._redis.register_script(_SWEEP)
        self._update = self._redis.register_script(_UPDATE)
        self._beat = self._redis.register_script(_HEARTBEAT)
        self.local: dict[str, _Tracked] = {}
        self._pending: dict[str, _Pending] = {}
        self._audience: dict[str, AudienceFn] = {}
        # The last user count seen per room: a state change (no count of its own) must go to the same
        # audience as joins do, not to "a small class" by default.
        self._counts: dict[str, int] = {}
        self._flush_task: asyncio.Task | None = None
        self._loop_task: asyncio.Task | None = None

    def _client(self, room_key: str):
        """The asyncio client of the shard that holds a room."""
        return self._shards[shard_index(room_key, len(self._shards))]

    def _ensure_loops(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._maintenance(), name="aula-presence")

    async def track(self, room_key: str, conn_id: str, meta: dict, audience: AudienceFn) -> int:
        """Add a connection; returns the number of distinct users present."""
        self._ensure_loops()
        meta = {**meta, "conn": conn_id, "node": NODE, "joined_at": time.time(), "state_since": time.time()}
        self._audience[room_key] = audience
        self.local[conn_id] = tracked = _Tracked(room_key, conn_id, meta["user_id"], meta)
        keys = _keys(room_key)
        count = await self._join(keys=keys, args=[conn_id, json.dumps(meta), time.time(), meta["user_id"], room_key],
                                 client=self._client(room_key))
        tracked.joined = True
        self._queue(room_key, joins=[meta], count=count)
        return int(count)

    async def untrack(self, conn_id: str) -> dict | None:
        """Remove a connection that closed normally; returns its meta if this call removed it."""
        tracked = self.local.pop(conn_id, None)
        if tracked is None:
            return None
        raw, count = await self._leave(keys=_keys(tracked.room_key), args=[conn_id, tracked.user_id],
                                       client=self._client(tracked.room_key))
        if not raw:
            return None  # a sweeper already reported it
        meta = json.loads(raw)
        self._queue(tracked.room_key, leaves=[meta], count=count)
        return meta

    async def set_state(self, conn_id: str, state: str, **extra) -> dict | None:
        """Change a connection's state (active / idle / away); published as leave(old) + join(new)."""
        tracked = self.local.get(conn_id)
        if tracked is None or tracked.meta.get("state") == state and not extra:
            return None
        old = dict(tracked.meta)
        now = time.time()
        acc = dict(old.get("acc") or {})
        previous = old.get("state", "active")
        acc[previous] = round(acc.get(previous, 0.0) + now - old.get("state_since", now), 1)
        tracked.meta = {**tracked.meta, **extra, "state": state, "state_since": now, "acc": acc}
        raw = await self._update(keys=_keys(tracked.room_key), args=[conn_id, json.dumps(tracked.meta), time.time()],
                                 client=self._client(tracked.room_key))
        if raw:
            self._queue(tracked.room_key, leaves=[old], joins=[tracked.meta])
        return old

    async def evict(self, room_key: str, conn_id: str, user_id: int) -> dict | None:
        """Remove another (stale) connection's meta now, e.g. the one a resuming client left behind."""
        raw, count = await self._leave(keys=_keys(room_key), args=[conn_id, user_id], client=self._client(room_key))
        if not raw:
            return None
        meta = json.loads(raw)
        self._queue(room_key, leaves=[meta], count=count)
        return meta

    async def list(self, room_key: str) -> list[dict]:
        metas = await self._client(room_key).hgetall(_keys(room_key)[0])
        return [json.loads(v) for v in metas.values()]

    async def connection_count(self, room_key: str) -> int:
        """Open connections in a room (several tabs of one user count separately)."""
        return int(await self._client(room_key).hlen(_keys(room_key)[0]))

    async def user_count(self, room_key: str) -> int:
        return int(await self._client(room_key).hlen(_keys(room_key)[2]))

    def _queue(self, room_key: str, *, joins=(), leaves=(), count=None) -> None:
        pending = self._pending.setdefault(room_key, _Pending())
        for meta in leaves:
            uid = str(meta["user_id"])
            bucket = pending.joins.get(uid, [])
            kept = [m for m in bucket if m["conn"] != meta["conn"]]
            if len(kept) != len(bucket):
                # Its join was not published yet: cancel the join instead of announcing a leave.
                if kept:
                    pending.joins[uid] = kept
                else:
                    pending.joins.pop(uid)
                continue
            pending.leaves.setdefault(uid, []).append(_public(meta))
        for meta in joins:
            pending.joins.setdefault(str(meta["user_id"]), []).append(_public(meta))
        if count is not None:
            pending.count = self._counts[room_key] = int(count)
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH)
        pending, self._pending = self._pending, {}
        for room_key, diff in pending.items():
            if not diff.joins and not diff.leaves and diff.count is None:
                continue
            audience = self._audience.get(room_key)
            if audience is None:
                continue
            frame = encode_frame("presence.diff", {
                "joins": {u: {"metas": m} for u, m in diff.joins.items()},
                "leaves": {u: {"metas": m} for u, m in diff.leaves.items()},
                "count": diff.count,
            })
            count = diff.count if diff.count is not None else self._counts.get(room_key, 0)
            targets = audience(room_key, count)
            # On the loop with the asyncio client: never queued behind database work in a thread pool. Each
            # target on its own shard (the teachers' room may hash elsewhere than the session's room).
            for target in targets:
                await publish_frame_async(self._client(target), target, frame)
            if room_key not in targets and diff.count is not None:
                await publish_frame_async(self._client(room_key), room_key,
                                          encode_frame("presence.count", {"count": diff.count}))

    async def _maintenance(self) -> None:
        last_heartbeat = 0.0
        while True:
            await asyncio.sleep(SWEEP)
            # Per shard: a shard that is away is skipped until next round, the others carry on.
            failed: dict[int, BaseException] = {}
            now = time.time()
            if now - last_heartbeat >= HEARTBEAT:
                failed = await self._heartbeat(now)
                if not failed:
                    last_heartbeat = now
            # Every local room's sweep in one pipeline per shard: an exam has a room per attempt, and one
            # round trip per room every SWEEP seconds was a measurable share of a 2,000-student exam.
            by_shard: dict[int, list[str]] = {}
            for room_key in {t.room_key for t in self.local.values()}:
                by_shard.setdefault(shard_index(room_key, len(self._shards)), []).append(room_key)
            for shard, rooms in by_shard.items():
                if shard in failed:
                    continue
                try:
                    await self._sweep_many(self._shards[shard], rooms)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: try again next round
                    failed[shard] = exc
            for exc in failed.values():
                logger.warning("presence maintenance failed: %s", type(exc).__name__)

    async def _heartbeat(self, now: float) -> dict[int, BaseException]:
        """Heartbeat this process's connections, one pipeline per shard; returns the shards that failed."""
        tracked = [t for t in self.local.values() if t.joined]  # a heartbeat must not race the join
        by_shard: dict[int, list[_Tracked]] = {}
        for t in tracked:
            by_shard.setdefault(shard_index(t.room_key, len(self._shards)), []).append(t)
        if not by_shard:
            return {}
        results = await asyncio.gather(
            *(self._heartbeat_shard(self._shards[i], group, now) for i, group in by_shard.items()),
            return_exceptions=True)
        failed = {}
        for shard, result in zip(by_shard, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                failed[shard] = result
        return failed

    async def _heartbeat_shard(self, client, tracked: list[_Tracked], now: float) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for t in tracked:
                args = [t.conn_id, json.dumps(t.meta), now, t.user_id, t.room_key]
                await self._beat(keys=_keys(t.room_key), args=args, client=pipe)
            counts = await pipe.execute()
        for t, count in zip(tracked, counts, strict=True):
            if int(count) >= 0 and self.local.get(t.conn_id) is t:
                # A connection that Redis had lost comes back as a fresh join (and counts again).
                self._queue(t.room_key, joins=[t.meta], count=count)

    async def _sweep_many(self, client, rooms: list[str]) -> None:
        cutoff = time.time() - TTL
        async with client.pipeline(transaction=False) as pipe:
            for room_key in rooms:
                await self._sweep(keys=_keys(room_key), args=[cutoff, room_key], client=pipe)
            outs = await pipe.execute()
        for room_key, out in zip(rooms, outs, strict=True):
            if len(out) > 1:  # [meta, last_seen, ..., count]: somebody left without a goodbye
                await self._swept(room_key, _parse_sweep(out))

    async def sweep(self, room_key: str) -> list[tuple[dict, float]]:
        removed = await sweep_room_async(self._sweep, room_key, client=self._client(room_key))
        await self._swept(room_key, removed)
        return [(m, s) for m, s, _ in removed]

    async def _swept(self, room_key: str, removed: list[tuple[dict, float, int]]) -> None:
        if removed:
            count = removed[-1][2] if removed else None
            self._queue(room_key, leaves=[m for m, _, _ in removed], count=count)

            for meta, last_seen, _ in removed:
                await db_call(presence_left.send)(
                    sender=PresenceTracker, room_key=room_key, meta=meta, left_at=last_seen, reason="expired")


def _public(meta: dict) -> dict:
    return {k: meta[k] for k in ("conn", "user_id", "name", "role", "state") if k in meta}


async def sweep_room_async(script, room_key: str, client=None) -> list[tuple[dict, float, int]]:
    return _parse_sweep(await script(keys=_keys(room_key), args=[time.time() - TTL, room_key], client=client))


def _parse_sweep(out: list) -> list[tuple[dict, float, int]]:
    count = int(out[-1])
    pairs = out[:-1]
    return [(json.loads(pairs[i]), float(pairs[i + 1]), count) for i in range(0, len(pairs), 2)]


def sweep_all_rooms() -> int:
    """Celery path (sync): sweep every room with presence on every shard, report leaves, publish diffs.
    Idempotent."""
    removed_total = 0
    errors: list[redis.RedisError] = []
    for index, url in enumerate(settings.REDIS_REALTIME_SHARDS):
        try:
            with redis.Redis.from_url(url) as client:
                removed_total += _sweep_shard(client)
        except redis.RedisError as exc:  # a shard that is away must not keep the others' ghosts
            logger.warning("presence sweep of real-time shard %d failed: %s", index, type(exc).__name__)
            errors.append(exc)
    if errors:
        raise errors[0]  # the task run fails visibly; the next beat tries again
    return removed_total


def _sweep_shard(client: redis.Redis) -> int:
    # A room is swept where its index names it (its keys are there), even on a shard it no longer hashes
    # to after the shard list changed; its diffs go to each target room's own shard (publish_frame).
    script = client.register_script(_SWEEP)
    rooms = client.zrange(_keys("_")[3], 0, -1)
    removed_total = 0
    for raw_room in rooms:
        room_key = raw_room.decode()
        out = script(keys=_keys(room_key), args=[time.time() - TTL, room_key])
        count, pairs = int(out[-1]), out[:-1]
        leaves: dict[str, list[dict]] = {}
        for i in range(0, len(pairs), 2):
            meta, last_seen = json.loads(pairs[i]), float(pairs[i + 1])
            leaves.setdefault(str(meta["user_id"]), []).append(_public(meta))
            presence_left.send(sender=PresenceTracker, room_key=room_key, meta=meta, left_at=last_seen,
                               reason="expired")
            removed_total += 1
        if leaves:
            frame = encode_frame("presence.diff", {"joins": {}, "leaves": {u: {"metas": m} for u, m in leaves.items()},
                                                   "count": count})
            targets = _sync_audiences.get(room_key.split(".")[1][:2], lambda r, c: [r])(room_key, count)
            for target in targets:
                publish_frame(target, frame)
            if room_key not in targets:
                publish_frame(room_key, encode_frame("presence.count", {"count": count}))
    return removed_total


# Audience functions by room-kind prefix ("ls" for live sessions), for the Celery sweeper.
_sync_audiences: dict[str, AudienceFn] = {}


def register_audience(kind: str, fn: AudienceFn) -> None:
    _sync_audiences[kind] = fn


_trackers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PresenceTracker] = weakref.WeakKeyDictionary()


def tracker() -> PresenceTracker:
    loop = asyncio.get_running_loop()
    t = _trackers.get(loop)
    if t is None:
        t = _trackers[loop] = PresenceTracker(settings.REDIS_REALTIME_SHARDS)
    return t


async def shutdown() -> None:
    with contextlib.suppress(Exception):
        t = tracker()
        for task in (t._flush_task, t._loop_task):
            if task:
                task.cancel()


def forget_user(room_keys: list[str], user_id: int) -> int:
    """Sync: remove every presence entry of one user from these rooms now (a deleted account's name must not
    stay in Redis until its TTL). Returns how many connections were removed. Idempotent."""
    removed = 0
    clients: dict[int, redis.Redis] = {}
    try:
        for room_key in room_keys:
            index = shard_index(room_key, len(settings.REDIS_REALTIME_SHARDS))
            client = clients.get(index)
            if client is None:
                client = clients[index] = redis.Redis.from_url(settings.REDIS_REALTIME_SHARDS[index])
            metas_key, hb_key, users_key, _ = _keys(room_key)
            conns = [conn for conn, raw in client.hgetall(metas_key).items()
                     if json.loads(raw).get("user_id") == user_id]
            pipe = client.pipeline()
            for conn in conns:
                pipe.hdel(metas_key, conn)
                pipe.zrem(hb_key, conn)
            pipe.hdel(users_key, str(user_id))
            pipe.execute()
            removed += len(conns)
    finally:
        for client in clients.values():
            client.close()
    return removed
