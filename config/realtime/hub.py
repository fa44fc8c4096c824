"""The per-process room hub: one Redis subscription per room per process, one write per delivery.

Channels' `group_send` runs a consumer handler per member for every event (a thread hop, a per-receiver
queue and a task wake-up each), which measured 93–274 µs of CPU per delivery here. The hub instead
receives each published frame once per process and writes the already-encoded frame straight to every
local socket's ASGI `send`. A socket that stops reading gets a bounded backlog; past it the backlog is
dropped and the client is told to resume by sequence number (the database has everything).

With a sharded real-time Redis (settings.REDIS_REALTIME_SHARDS) the hub holds one pubsub connection and
one reader per shard, and subscribes each room on the shard its key hashes to (transport.shard_index).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from django.conf import settings

from config.realtime.transport import async_redis, encode_frame, redis_channel, shard_index

logger = logging.getLogger("aula.realtime.hub")

Send = Callable[[dict], Awaitable[None]]

BACKLOG_LIMIT = 256
# A frame that arrives ahead of its room's next seq waits this long for the missing one (two writers can
# commit k, k+1 and publish k+1 first); after that it is delivered and clients resume from the database.
# 150 ms was too short in a 2,000-student run: a publishing thread stalled longer under load, and 951 clients
# resumed once. A really lost publish (Redis away) is rare and only costs this much delay before the resume.
REORDER_WAIT = 0.5
REORDER_MAX = 64  # held frames per room; past it the room's held frames go out at once
CONTROL_PREFIX = '{"ctl":'
DIRECT_PREFIX = "@"  # "@<user_id> <frame>": for that user's sockets in the room only (transport.room_direct_publish)
LAGGED_FRAME = encode_frame("sys.lagged", {"reason": "backlog_dropped"})
RESYNC_FRAME = encode_frame("sys.resync", {"reason": "transport_recovered"})


class Member:
    """One local socket in one or more rooms. `deliver` never awaits: a slow socket cannot stall the hub."""

    __slots__ = ("_send", "_writer", "_backlog", "_lagged", "_held", "closed", "delivered", "dropped",
                 "user_id", "on_control", "__weakref__")

    def __init__(self, send: Send, user_id: int | None = None,
                 on_control: Callable[[dict], Awaitable[None]] | None = None):
        self._send = send
        self._writer: asyncio.Future | None = None
        self._backlog: collections.deque[str] = collections.deque()
        self._lagged = False
        self._held = False
        self.closed = False
        self.delivered = 0
        self.dropped = 0
        self.user_id = user_id
        self.on_control = on_control

    def hold(self) -> None:
        """Queue broadcasts (bounded) while a resume replay is written, so order is kept."""
        self._held = True

    async def release(self) -> None:
        self._held = False
        if self._writer is None and (self._backlog or self._lagged):
            self._writer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self._backlog or self._lagged:
                if self._backlog:
                    frame = self._backlog.popleft()
                else:
                    frame, self._lagged = LAGGED_FRAME, False
                await self._send({"type": "websocket.send", "text": frame})
                self.delivered += 1
        except Exception:
            self.closed = True
        finally:
            self._writer = None

    def deliver(self, frame: str) -> None:
        if self.closed:
            return
        if self._writer is not None or self._held:
            if len(self._backlog) >= BACKLOG_LIMIT:
                self.dropped += len(self._backlog) + 1
                self._backlog.clear()
                self._lagged = True
                return
            self._backlog.append(frame)
            return
        self._start(self._send({"type": "websocket.send", "text": frame}))

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        # Run the send eagerly (as Python 3.12's eager tasks do): a write into a transport that is not
        # paused completes without suspending, so no task and no loop round-trip per delivery. Only a
        # send that really has to wait for the socket to drain becomes a task.
        try:
            yielded = coro.send(None)
        except StopIteration:
            self.delivered += 1
            return
        except Exception:
            self.closed = True
            return
        self._writer = asyncio.ensure_future(self._continue(coro, yielded))

    async def _continue(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        try:
            while True:
                if yielded is None:
                    await asyncio.sleep(0)
                else:
                    # Wait for the future the send is blocked on as a Task would, by a done-callback. Awaiting
                    # it again is refused by the C Future ("await wasn't used with future": the coroutine has
                    # already yielded it as blocking), which used to mark every socket that had to wait for
                    # the network as closed: it stayed open and never received another frame.
                    await asyncio.wait((yielded,))
                try:
                    yielded = coro.send(None)  # the coroutine takes the future's outcome itself
                except StopIteration:
                    break
            self.delivered += 1
        except (Exception, asyncio.CancelledError) as exc:
            coro.close()
            self.closed = True
            self._writer = None
            if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():
                raise
            return
        self._writer = None
        if not self._held and (self._backlog or self._lagged):
            self._writer = asyncio.ensure_future(self._drain())

    async def send_now(self, frame: str) -> None:
        """A direct reply to this socket only (ack, error, snapshot), ordered after pending deliveries.

        Replies bypass a hold (they are the replay itself) but never overtake frames already queued."""
        if self.closed:
            return
        if self._writer is not None or (self._backlog and not self._held):
            self._backlog.append(frame)
            if self._writer is None:
                self._writer = asyncio.ensure_future(self._drain())
            return
        try:
            await self._send({"type": "websocket.send", "text": frame})
        except OSError:
            # The peer went away between its frame and our answer (uvicorn's ClientDisconnected is an
            # OSError): nothing to answer, and not an error of ours; the disconnect event follows.
            self.closed = True


def frame_seq(frame: str) -> int | None:
    """The seq of an encoded frame without parsing it: `{"v":1,"type":"…","seq":N,…` (encode_frame's order)."""
    at = frame.find(',"seq":', 0, 160)
    if at < 0:
        return None
    start = at + 7
    end = start
    while end < len(frame) and frame[end].isdigit():
        end += 1
    return int(frame[start:end]) if end > start else None


class _Order:
    """Per-room delivery order: the last seq delivered and frames waiting for a missing predecessor."""

    __slots__ = ("last", "held", "timer")

    def __init__(self) -> None:
        self.last: int | None = None
        self.held: dict[int, str] = {}
        self.timer: asyncio.TimerHandle | None = None


class _Shard:
    """One real-time Redis shard as the hub sees it: a client, its pubsub, its reader and its rooms."""

    __slots__ = ("index", "redis", "pubsub", "reader", "rooms", "healthy")

    def __init__(self, index: int, url: str):
        self.index = index
        self.redis = async_redis(url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.reader: asyncio.Task | None = None
        self.rooms: dict[str, None] = {}  # the local rooms that live on this shard
        self.healthy = True


class RoomHub:
    """All rooms of this process. Created lazily per event loop by `hub()`.

    `urls` are the real-time shards in settings order (a single URL is one shard); `_redis` is shard 0's
    client, which also serves the global keys (rate limits, connection caps, coalescing leases)."""

    def __init__(self, urls: str | list[str]):
        urls = [urls] if isinstance(urls, str) else list(urls)
        self.rooms: dict[str, dict[Member, None]] = {}
        self._order: dict[str, _Order] = {}
        self.reordered = 0  # frames that were held for a predecessor (observability, tests)
        self._shards = [_Shard(i, url) for i, url in enumerate(urls)]
        self._redis = self._shards[0].redis
        self._lock = asyncio.Lock()
        self.frames_in = 0

    @property
    def healthy(self) -> bool:
        return all(shard.healthy for shard in self._shards)

    def _channel(self, room_key: str) -> str:
        return redis_channel(room_key)

    def _shard(self, room_key: str) -> _Shard:
        return self._shards[shard_index(room_key, len(self._shards))]

    def client_for(self, room_key: str):
        """The asyncio Redis client of the shard a room lives on (for `publish_frame_async`)."""
        return self._shard(room_key).redis

    async def join(self, room_key: str, member: Member) -> None:
        async with self._lock:
            members = self.rooms.get(room_key)
            shard = self._shard(room_key)
            if members is None:
                members = self.rooms[room_key] = {}
                shard.rooms[room_key] = None
                with contextlib.suppress(Exception):
                    # If Redis is down now, the reader resubscribes every room when it comes back.
                    await shard.pubsub.subscribe(self._channel(room_key))
            members[member] = None
            if shard.reader is None or shard.reader.done():
                shard.reader = asyncio.create_task(self._read_loop(shard), name=f"aula-room-hub-{shard.index}")

    async def leave(self, room_key: str, member: Member) -> None:
        async with self._lock:
            members = self.rooms.get(room_key)
            if members is None:
                return
            members.pop(member, None)
            if not members:
                del self.rooms[room_key]
                shard = self._shard(room_key)
                shard.rooms.pop(room_key, None)
                order = self._order.pop(room_key, None)
                if order is not None and order.timer is not None:
                    order.timer.cancel()
                with contextlib.suppress(Exception):
                    await shard.pubsub.unsubscribe(self._channel(room_key))

    def deliver_local(self, room_key: str, frame: str) -> int:
        members = self.rooms.get(room_key)
        if not members:
            return 0
        if frame.startswith(CONTROL_PREFIX):
            self._control(members, frame)
            return len(members)
        if frame.startswith(DIRECT_PREFIX):
            head, _, body = frame.partition(" ")
            target = int(head[1:])
            for member in tuple(members):
                if member.user_id == target:
                    member.deliver(body)
            return len(members)
        seq = frame_seq(frame)
        if seq is None:
            self._fan_out(members, frame)
            return len(members)
        order = self._order.get(room_key)
        if order is None:
            order = self._order[room_key] = _Order()
        if order.last is not None and seq > order.last + 1:
            # Ahead of its predecessor: wait briefly for it rather than make every client resume.
            order.held[seq] = frame
            self.reordered += 1
            if len(order.held) > REORDER_MAX:
                self._release_held(room_key)
            elif order.timer is None:
                order.timer = asyncio.get_running_loop().call_later(REORDER_WAIT, self._release_held, room_key)
            return len(members)
        self._fan_out(members, frame)
        if order.last is None or seq > order.last:
            order.last = seq
        while order.held and order.last + 1 in order.held:
            order.last += 1
            self._fan_out(members, order.held.pop(order.last))
        if not order.held and order.timer is not None:
            order.timer.cancel()
            order.timer = None
        return len(members)

    def _release_held(self, room_key: str) -> None:
        """The predecessor did not come in time (or too much is held): deliver what waits, in seq order;
        clients see the gap and resume from the database."""
        order = self._order.get(room_key)
        if order is None:
            return
        if order.timer is not None:
            order.timer.cancel()
            order.timer = None
        members = self.rooms.get(room_key) or {}
        for seq in sorted(order.held):
            self._fan_out(members, order.held[seq])
            order.last = max(order.last or seq, seq)
        order.held.clear()

    @staticmethod
    def _fan_out(members: dict[Member, None], frame: str) -> None:
        for member in tuple(members):
            member.deliver(frame)

    def _control(self, members: dict[Member, None], frame: str) -> None:
        # Control messages (kick a user, end the session) go to the consumers, not to the sockets.
        message = json.loads(frame)["ctl"]
        target = message.get("user_id")
        for member in tuple(members):
            if member.on_control is not None and (target is None or member.user_id == target):
                asyncio.ensure_future(member.on_control(message))

    async def _read_loop(self, shard: _Shard) -> None:
        prefix_len = len(self._channel(""))
        backoff = 0.1
        while True:
            try:
                if not shard.pubsub.subscribed:
                    if not shard.rooms:
                        await asyncio.sleep(0.2)
                        continue
                    await shard.pubsub.subscribe(*[self._channel(k) for k in shard.rooms])
                message = await shard.pubsub.get_message(timeout=1.0)
                if not shard.healthy:
                    await self._recovered(shard)
                backoff = 0.1
                if message is None or message.get("type") != "message":
                    continue
                self.frames_in += 1
                channel = message["channel"]
                room_key = (channel.decode() if isinstance(channel, bytes) else channel)[prefix_len:]
                data = message["data"]
                self.deliver_local(room_key, data.decode() if isinstance(data, bytes) else data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarting: keep trying, then resubscribe
                if shard.healthy:
                    logger.warning("room hub lost Redis shard %d (%s); reconnecting", shard.index,
                                   type(exc).__name__)
                shard.healthy = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                with contextlib.suppress(Exception):
                    await shard.pubsub.aclose()
                shard.pubsub = shard.redis.pubsub(ignore_subscribe_messages=True)

    async def _recovered(self, shard: _Shard) -> None:
        # Frames published on this shard while we were cut off are lost to us: the local clients of its
        # rooms resume by seq. Rooms on the other shards lost nothing.
        shard.healthy = True
        rooms = [k for k in shard.rooms if k in self.rooms]
        logger.warning("room hub reconnected to Redis shard %d; asking %d rooms to resync", shard.index,
                       len(rooms))
        # Idle pooled connections still belong to the Redis that went away; the first command on each would
        # fail, and the first commands now are the resumes this resync asks for (their rate-limit check).
        with contextlib.suppress(Exception):
            await shard.redis.connection_pool.disconnect(inuse_connections=False)
        # Frames may have been lost: seq order starts afresh from the next frame of each of these rooms.
        for room_key in rooms:
            if room_key in self._order:
                self._release_held(room_key)
                del self._order[room_key]
        # Once per socket, even for a socket in several of these rooms (a teacher is also in the staff room).
        for member in {m: None for room_key in rooms for m in self.rooms[room_key]}:
            member.deliver(RESYNC_FRAME)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RoomHub] = weakref.WeakKeyDictionary()


def hub() -> RoomHub:
    """The hub of the running event loop (one per server process; tests may run several loops)."""
    loop = asyncio.get_running_loop()
    h = _hubs.get(loop)
    if h is None:
        h = _hubs[loop] = RoomHub(settings.REDIS_REALTIME_SHARDS)
    return h
