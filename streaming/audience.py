"""Who is watching, and what they throw at the screen: viewer counts, peaks and reaction windows in Redis.

Viewer identity: `u<id>` signed in, `a<vid>` for a signed anonymous cookie, `c<conn>` otherwise. Every
process keeps, per stream, how many local sockets each identity has (tabs, chat pop-outs and embeds of one
person count once) and heartbeats its identities into one ZSET per stream (`<identity>|<process>` → last
seen) plus a hash identity → number of live processes, both kept by Lua scripts, so the viewer count is one
HLEN and a process that dies without a goodbye drops out when its entries are older than the TTL.

Every process with local viewers of a stream ticks on wall-clock window boundaries (AULA_STREAM_REACTION_
WINDOW_MS). Per window exactly one process wins a short lease (SET NX on the window's number) and publishes:
it closes the reaction window atomically (HGETALL + DEL in one script: an increment lands either in the
closed window or in the next, never lost or counted twice) and sends ONE `reactions` frame; at most once a
second it drops ghosts, reads the count, raises the peak (Lua max) and sends `viewers` only if it changed.

Chat sampling: each process subscribes to the stream's chat feed once and forwards at most
AULA_STREAM_CHAT_FANOUT_PER_SEC full messages per second to its local viewers; the rest are summarised in
`chat.sampled` notices. Staff sockets subscribe to the full feed themselves (docs/protocol.md, "Streams").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import re
import time
import uuid
import weakref

from django.conf import settings
from django.utils import timezone

from analytics import buffer as analytics
from config.realtime.hub import Member, hub
from config.realtime.ratelimit import Limit, LocalLimit
from config.realtime.transport import _redis, db_call, encode_frame, publish_frame_async
from streaming import events, live
from streaming.realtime import stream_chat_room, stream_room

logger = logging.getLogger("aula.streaming.audience")

REACTIONS = ("fire", "heart", "laugh", "wow", "clap", "sad")
PEAK_PERSIST_SECONDS = 10

_ADD = """
local new = {}
for i = 2, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) == 1 then table.insert(new, ARGV[i + 1]) end
  end
end
redis.call('EXPIRE', KEYS[1], 86400)
redis.call('EXPIRE', KEYS[2], 86400)
return new
"""
_REMOVE = """
local gone = {}
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], -1) <= 0 then
      redis.call('HDEL', KEYS[2], ARGV[i + 1])
      table.insert(gone, ARGV[i + 1])
    end
  end
end
return gone
"""
_EXPIRE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local gone = 0
for _, m in ipairs(stale) do
  redis.call('ZREM', KEYS[1], m)
  local ident = string.match(m, '^(.*)|[^|]*$')
  if redis.call('HINCRBY', KEYS[2], ident, -1) <= 0 then
    redis.call('HDEL', KEYS[2], ident)
    gone = gone + 1
  end
end
return {gone, redis.call('HLEN', KEYS[2])}
"""
_PEAK = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local n = tonumber(ARGV[1])
redis.call('EXPIRE', KEYS[1], 604800)
if n > cur then
  redis.call('HSET', KEYS[1], 'n', n, 'at', ARGV[2])
  return {n, 1}
end
return {cur, 0}
"""
_CLOSE_WINDOW = """
local v = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return v
"""
_CSEQ = re.compile(r'"cseq":(\d+)')


def _k(stream_id: int, name: str) -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:st:{int(stream_id)}:{name}"


def peak_read(stream_id: int) -> tuple[int, dt.datetime | None]:
    """Sync: the exact peak so far and when it was reached (for the stream's end)."""
    raw = _redis().hmget(_k(stream_id, "peak"), ["n", "at"])
    n = int(raw[0] or 0)
    at = dt.datetime.fromtimestamp(float(raw[1]), tz=dt.UTC) if raw[1] else None
    return n, at


def stale_after_seconds() -> float:
    """Age at which a heartbeat entry is a ghost. A dead process's last heartbeat can be up to one heartbeat
    interval older than its death, so entries are dropped that much before the TTL: a process
    that dies stops counting within AULA_STREAM_VIEWER_TTL_SECONDS of dying, not of its last heartbeat. Live
    processes refresh every AULA_STREAM_HEARTBEAT_SECONDS, well inside this age."""
    heartbeat = settings.AULA_STREAM_HEARTBEAT_SECONDS
    return max(settings.AULA_STREAM_VIEWER_TTL_SECONDS - heartbeat, 2 * heartbeat)


def viewers_read(stream_id: int) -> dict:
    """Sync: the distinct viewers right now and the peak, for a snapshot (`viewers` frames only go out on a
    change, so a socket that just opened would otherwise show no count until the next change)."""
    client = _redis()
    return {"count": int(client.hlen(_k(stream_id, "vh"))), "peak": int(client.hget(_k(stream_id, "peak"), "n") or 0)}


def _retrieve(future: asyncio.Future) -> None:
    """Mark a shared waiter's failure as seen: its callers may all have gone (their sockets closed)."""
    if not future.cancelled():
        future.exception()


class _Local:
    """One stream as one process sees it."""

    __slots__ = ("identities", "staff", "task", "sampler", "second", "sent", "skipped", "last_cseq", "meta",
                 "limits")

    def __init__(self) -> None:
        self.identities: dict[str, int] = {}
        self.limits: dict[str, LocalLimit] = {}  # reaction budget per identity, shared by its local tabs
        self.meta: dict[str, dict] = {}
        self.staff: set[Member] = set()
        self.task: asyncio.Task | None = None
        self.sampler: Member | None = None
        self.second = 0
        self.sent = 0
        self.skipped = 0
        self.last_cseq: int | None = None


class StreamAudience:
    """This process's viewers of every stream (one per event loop, like the room hub)."""

    def __init__(self, client, proc_id: str | None = None, *, run_ticker: bool = True):
        self.redis = client
        self.proc_id = proc_id or uuid.uuid4().hex[:12]
        self.run_ticker = run_ticker
        self.streams: dict[int, _Local] = {}
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._expire = client.register_script(_EXPIRE)
        self._peak = client.register_script(_PEAK)
        self._close = client.register_script(_CLOSE_WINDOW)
        # Reactions accepted but not yet in Redis: {stream: {emoji: n}}, written by one pipeline at a time.
        self._rx_pending: dict[int, dict[str, int]] = {}
        self._rx_written: asyncio.Future | None = None
        self._rx_running = False
        self._batches: dict[tuple[str, int], list] = {}  # viewer joins / leaves waiting for a script call

    def _member(self, identity: str) -> str:
        return f"{identity}|{self.proc_id}"

    # --- viewers -------------------------------------------------------------------------------------
    async def join(self, stream_id: int, identity: str, *, segment: str = "anonymous", country: str = "") -> bool:
        """A local socket of `identity` opened; True when the identity is new to the whole stream."""
        local = self.streams.get(stream_id)
        if local is None:
            local = self.streams[stream_id] = _Local()
        local.identities[identity] = local.identities.get(identity, 0) + 1
        local.meta.setdefault(identity, {"segment": segment, "country": country})
        if self.run_ticker and (local.task is None or local.task.done()):
            local.task = asyncio.create_task(self._ticker(stream_id), name=f"aula-stream-{stream_id}")
        new = await self._viewers_change("join", stream_id, identity)
        if new:
            analytics.record("viewer.join", scope="stream", scope_id=stream_id, segment=segment, country=country)
        return new

    async def leave(self, stream_id: int, identity: str) -> bool:
        """A local socket closed; True when that was the identity's last socket anywhere."""
        local = self.streams.get(stream_id)
        if local is None or identity not in local.identities:
            return False
        local.identities[identity] -= 1
        if local.identities[identity] > 0:
            return False
        del local.identities[identity]
        local.limits.pop(identity, None)
        meta = local.meta.pop(identity, {})
        if not local.identities:
            await self._stop(stream_id)
        gone = await self._viewers_change("leave", stream_id, identity)
        if gone:
            analytics.record("viewer.leave", scope="stream", scope_id=stream_id, segment=meta.get("segment", ""),
                             country=meta.get("country", ""))
        return gone

    async def _viewers_change(self, op: str, stream_id: int, identity: str) -> bool:
        """Add ("join") or remove ("leave") one identity of this process in the stream's viewer set; True
        when it was new to (or gone from) the whole stream. The changes that arrive while a script call is
        under way go together in the next one: a storm of 5,000 joins (or a mass leave) is a few dozen
        script calls, not 5,000 round trips, and the count's next publish sees them sooner."""
        batch = self._batches.get((op, stream_id))
        if batch is None:
            batch = self._batches[(op, stream_id)] = []
            asyncio.ensure_future(self._viewers_drain(op, stream_id, batch))
        future = asyncio.get_running_loop().create_future()
        batch.append((identity, future))
        return await future

    async def _viewers_drain(self, op: str, stream_id: int, batch: list) -> None:
        keys = [_k(stream_id, "vz"), _k(stream_id, "vh")]
        try:
            while batch:
                items = batch[:]
                del batch[:]
                args: list = [time.time()] if op == "join" else []
                for identity, _ in items:
                    args += [self._member(identity), identity]
                try:
                    changed = await (self._add if op == "join" else self._remove)(keys=keys, args=args)
                    if changed:
                        await live.aincr(self.redis, stream_id, **{op: len(changed)})
                except (Exception, asyncio.CancelledError) as exc:  # Redis away: each caller's socket fails
                    for _, future in items:
                        if not future.done():
                            future.set_exception(exc) if isinstance(exc, Exception) else future.cancel()
                    if not isinstance(exc, Exception):
                        raise
                    continue
                # An identity twice in one batch (two tabs opening together) is new once: for its first.
                remaining = collections.Counter(c.decode() if isinstance(c, bytes) else c for c in changed)
                for identity, future in items:
                    hit = remaining[identity] > 0
                    remaining[identity] -= hit
                    if not future.done():
                        future.set_result(hit)
        finally:
            if self._batches.get((op, stream_id)) is batch:
                del self._batches[(op, stream_id)]
            for _, future in batch:
                if not future.done():
                    future.cancel()

    async def refresh(self, stream_id: int) -> None:
        """Heartbeat every local identity of the stream in one script call."""
        local = self.streams.get(stream_id)
        if not local or not local.identities:
            return
        args: list = [time.time()]
        for identity in local.identities:
            args += [self._member(identity), identity]
        await self._add(keys=[_k(stream_id, "vz"), _k(stream_id, "vh")], args=args)

    async def count(self, stream_id: int) -> tuple[int, int]:
        """Drop ghosts (older than the TTL), then (distinct viewers, peak so far)."""
        cutoff = time.time() - stale_after_seconds()
        _, n = await self._expire(keys=[_k(stream_id, "vz"), _k(stream_id, "vh")], args=[cutoff])
        peak, raised = await self._peak(keys=[_k(stream_id, "peak")], args=[n, time.time()])
        return int(n), int(peak)

    # --- reactions -----------------------------------------------------------------------------------
    def reaction_limit(self, stream_id: int, identity: str) -> LocalLimit:
        """The identity's reaction budget in this process (AULA_STREAM_REACTIONS_PER_SEC), shared by its tabs
        here: no Redis round trip per reaction. Tabs of one person on two processes get a budget each."""
        local = self.streams.get(stream_id)
        if local is None or identity not in local.identities:
            return LocalLimit(Limit(0, 1.0))  # not (or no longer) a viewer here: no budget
        limit = local.limits.get(identity)
        if limit is None:
            limit = local.limits[identity] = LocalLimit(Limit(settings.AULA_STREAM_REACTIONS_PER_SEC, 1.0))
        return limit

    async def react(self, stream_id: int, emoji: str, n: int = 1) -> None:
        """Count a reaction in the stream's open window: an HINCRBY, never a broadcast. Returns once it is in
        Redis (so an acknowledged reaction is counted); the reactions that arrive while one write is under
        way go together in the next (one pipeline for 2,000 a second, not 2,000 round trips). If Redis is
        away, the caller gets the error and nothing of its batch is acknowledged."""
        if emoji not in REACTIONS:
            raise ValueError(emoji)
        counts = self._rx_pending.setdefault(stream_id, {})
        counts[emoji] = counts.get(emoji, 0) + n
        waiter = self._rx_written
        if waiter is None:
            waiter = self._rx_written = asyncio.get_running_loop().create_future()
            waiter.add_done_callback(_retrieve)
            if not self._rx_running:
                self._rx_running = True
                asyncio.ensure_future(self._rx_drain())
        await asyncio.shield(waiter)

    async def _rx_drain(self) -> None:
        try:
            while self._rx_pending:
                pending, self._rx_pending = self._rx_pending, {}
                waiter, self._rx_written = self._rx_written, None
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for stream_id, counts in pending.items():
                            for emoji, n in counts.items():
                                pipe.hincrby(_k(stream_id, "rx"), emoji, n)
                        await pipe.execute()
                except Exception as exc:
                    waiter.set_exception(exc)
                else:
                    waiter.set_result(None)
        finally:
            self._rx_running = False

    async def close_window(self, stream_id: int) -> dict[str, int]:
        raw = await self._close(keys=[_k(stream_id, "rx")])
        it = iter(raw)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in zip(it, it, strict=True)}

    # --- the per-window publisher ----------------------------------------------------------------------
    async def tick(self, stream_id: int, window_start: float, window_ms: int) -> bool:
        """Run one window's publishing if this process wins the window's lease; True when it did."""
        window_no = int(round(window_start * 1000 / window_ms))
        if not await self.redis.set(_k(stream_id, f"lease:{window_no}"), self.proc_id, nx=True, px=window_ms * 4):
            return False
        room = stream_room(stream_id)
        publisher = hub()._shard(room).redis if self.redis is hub()._redis else self.redis
        counts = await self.close_window(stream_id)
        if counts:
            frame = encode_frame("reactions", events.reactions(window_ms, counts, window_start))
            await publish_frame_async(publisher, room, frame)
            await live.aincr(self.redis, stream_id, **{f"rx.{e}": n for e, n in counts.items()})
            for emoji, n in counts.items():
                analytics.record("reaction", scope="stream", scope_id=stream_id, n=n, at=window_start, emoji=emoji)
        # Viewers: at most once a second, whichever process wins that second's lease, and only on change.
        if await self.redis.set(_k(stream_id, f"vsec:{int(window_start)}"), self.proc_id, nx=True, px=2000):
            n, peak = await self.count(stream_id)
            last = await self.redis.getset(_k(stream_id, "vlast"), f"{n}:{peak}")
            if last is None or last.decode() != f"{n}:{peak}":
                frame = encode_frame("viewers", events.viewers(n, peak))
                await publish_frame_async(publisher, room, frame)
                await live.agauges_set(self.redis, stream_id, viewers=n, peak=peak)
                await self._persist_peak(stream_id, peak)
        return True

    async def _persist_peak(self, stream_id: int, peak: int) -> None:
        if not await self.redis.set(_k(stream_id, "peakdb"), "1", nx=True, ex=PEAK_PERSIST_SECONDS):
            return
        from streaming import services

        try:
            await db_call(services.stream_peak_record)(stream_id=stream_id, peak=peak, at=timezone.now())
        except Exception:
            logger.warning("stream peak not persisted this time stream=%s", stream_id)

    async def _ticker(self, stream_id: int) -> None:
        window_ms = settings.AULA_STREAM_REACTION_WINDOW_MS
        window = window_ms / 1000
        next_refresh = 0.0
        while stream_id in self.streams:
            boundary = (int(time.time() * 1000) // window_ms + 1) * window
            await asyncio.sleep(max(0.0, boundary - time.time()))
            try:
                if time.monotonic() >= next_refresh:
                    await self.refresh(stream_id)
                    next_refresh = time.monotonic() + settings.AULA_STREAM_HEARTBEAT_SECONDS
                await self.tick(stream_id, boundary - window, window_ms)
                self._flush_sampled(stream_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away for a moment: keep ticking
                logger.warning("stream ticker error stream=%s (%s)", stream_id, type(exc).__name__)

    async def _stop(self, stream_id: int) -> None:
        local = self.streams.pop(stream_id, None)
        if local is None:
            return
        if local.task is not None:
            local.task.cancel()
        if local.sampler is not None:
            local.sampler.closed = True
            with contextlib.suppress(Exception):
                await hub().leave(stream_chat_room(stream_id), local.sampler)

    # --- chat sampling ---------------------------------------------------------------------------------
    async def watch_chat(self, stream_id: int, member: Member, *, staff: bool) -> None:
        """Route the stream's chat feed to a local socket: staff get all of it, viewers a bounded sample."""
        local = self.streams.get(stream_id)
        if local is None:
            local = self.streams[stream_id] = _Local()
        if staff:
            local.staff.add(member)
            await hub().join(stream_chat_room(stream_id), member)
        elif local.sampler is None:
            local.sampler = Member(self._sampler_send(stream_id))
            await hub().join(stream_chat_room(stream_id), local.sampler)

    async def unwatch_chat(self, stream_id: int, member: Member) -> None:
        local = self.streams.get(stream_id)
        if local is not None and member in local.staff:
            local.staff.discard(member)
            await hub().leave(stream_chat_room(stream_id), member)

    def _viewers(self, stream_id: int, local: _Local):
        for member in tuple(hub().rooms.get(stream_room(stream_id)) or ()):
            if member not in local.staff:
                yield member

    def _sampler_send(self, stream_id: int):
        async def send(message: dict) -> None:
            local = self.streams.get(stream_id)
            if local is None:
                return
            frame = message["text"]
            second = int(time.monotonic())
            if second != local.second:
                local.second, local.sent = second, 0
            if local.sent < settings.AULA_STREAM_CHAT_FANOUT_PER_SEC:
                local.sent += 1
                for member in self._viewers(stream_id, local):
                    member.deliver(frame)
            else:
                local.skipped += 1
                m = _CSEQ.search(frame)
                if m:
                    local.last_cseq = max(local.last_cseq or 0, int(m.group(1)))

        return send

    def _flush_sampled(self, stream_id: int) -> None:
        local = self.streams.get(stream_id)
        if local is None or not local.skipped:
            return
        frame = encode_frame("chat.sampled", events.chat_sampled(local.skipped, local.last_cseq))
        local.skipped = 0
        for member in self._viewers(stream_id, local):
            member.deliver(frame)


_audiences: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamAudience] = weakref.WeakKeyDictionary()


def audience() -> StreamAudience:
    loop = asyncio.get_running_loop()
    a = _audiences.get(loop)
    if a is None:
        a = _audiences[loop] = StreamAudience(hub()._redis)
    return a
