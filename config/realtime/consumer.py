"""The base of every real-time route: parse and validate frames, authorize, reply; broadcasts via the hub.

A consumer subclass declares `inbound = {type: schema}` and one `on_<type>` coroutine per type. Bad input
(invalid JSON, unknown type, wrong fields, oversized, binary) gets an error frame and the socket stays
open; an exception in a handler becomes a `server_error` frame, never a closed socket. Broadcasts do not
pass through the consumer at all: the room hub writes them to the socket (see hub.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
import weakref
from collections.abc import Iterable

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError
from pydantic import Field
from pydantic import ValidationError as SchemaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.observability import user_id_var
from config.realtime import stats
from config.realtime.hub import Member, hub
from config.realtime.middleware import sessions_still_valid
from config.realtime.protocol import CloseCode, ErrorCode, Inbound, Ping, ack_frame, error_frame
from config.realtime.ratelimit import RateLimiter
from config.realtime.transport import db_call, encode_frame

logger = logging.getLogger("aula.realtime")

# Redis down or restarting (rate limits, presence): like the database being away, nothing was done.
RedisUnavailable = (RedisConnectionError, RedisTimeoutError)


class LatencyAck(Inbound):
    """A sampled client's answer to a stored (seq-numbered) event it received live: its seq and `ts`."""

    seq: int = Field(ge=0)
    ts: str = Field(max_length=40)


class PlayerError(Inbound):
    """The video player reports a provider error (counted per room per minute by code)."""

    code: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.:-]+$")
    message: str = Field(default="", max_length=200)


# Observability messages every route understands, whatever its own `inbound` (docs/observability.md).
OBSERVABILITY_INBOUND: dict[str, type[Inbound]] = {"latency.ack": LatencyAck, "player.error": PlayerError}
SAMPLE_FRAME = encode_frame("sys.sample", {"latency": True})


class _Bucket:
    """A per-socket token bucket kept in memory: the observability frames cost no Redis when refused."""

    __slots__ = ("tokens", "capacity", "per_second", "at")

    def __init__(self, capacity: float, per_second: float):
        self.tokens, self.capacity, self.per_second = capacity, capacity, per_second
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Refused(Exception):
    """Raised by `authorize()` to refuse a connection with a close code."""

    def __init__(self, code: CloseCode, reason: str = ""):
        super().__init__(reason)
        self.code = code


class FrameError(Exception):
    """Raised by a handler to answer with an error frame (the socket stays open)."""

    def __init__(self, code: str, message: str, **details):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


RECHECK_CHUNK = 500  # sockets re-checked in one database call
RECHECK_PAUSE_SECONDS = 0.05


class _Rechecks:
    """One re-check task per process, consumer class and room, not one per socket.

    Every AULA_SOCKET_RECHECK_SECONDS the room's local sockets are checked together, RECHECK_CHUNK at a
    time: their heartbeats in one call and their authorization in one database round per chunk (a handful
    of queries; per socket it was ≈ 9 queries, half a core for 2,000 idle sockets: docs/benchmarks.md,
    finding 1).
    """

    def __init__(self) -> None:
        self.groups: dict[tuple[type, str], dict[RoomConsumer, None]] = {}
        self.tasks: dict[tuple[type, str], asyncio.Task] = {}

    def add(self, consumer: RoomConsumer) -> None:
        key = (type(consumer), consumer.recheck_group)
        self.groups.setdefault(key, {})[consumer] = None
        task = self.tasks.get(key)
        if task is None or task.done():
            self.tasks[key] = asyncio.create_task(self._loop(key), name=f"aula-recheck:{consumer.recheck_group}")

    def discard(self, consumer: RoomConsumer) -> None:
        key = (type(consumer), consumer.recheck_group)
        group = self.groups.get(key)
        if group is not None:
            group.pop(consumer, None)
            if not group:
                del self.groups[key]
                task = self.tasks.pop(key, None)
                if task is not None:
                    task.cancel()

    async def _loop(self, key: tuple[type, str]) -> None:
        cls = key[0]
        period = settings.AULA_SOCKET_RECHECK_SECONDS
        # Jittered so that the rooms of a process (and processes) do not check in step.
        await asyncio.sleep(random.uniform(period / 2, period))
        while key in self.groups:
            consumers = [c for c in self.groups[key] if not c.closing]
            verdicts: dict[RoomConsumer, CloseCode] = {}
            try:
                if consumers:
                    await stats.refresh_lease()  # this process's sockets keep counting in `current`
                # In chunks with a pause between: 5,000 sessions checked at once held a database thread (and
                # the GIL) for a few hundred ms, and every chat send of the room waited behind it.
                for start in range(0, len(consumers), RECHECK_CHUNK):
                    if start:
                        await asyncio.sleep(RECHECK_PAUSE_SECONDS)
                    part = [c for c in consumers[start:start + RECHECK_CHUNK] if not c.closing]
                    if part:
                        await cls.heartbeat_many(part)
                        await cls.touch_caps(part)
                        verdicts.update(await db_call(cls.recheck_many)(part))
            except asyncio.CancelledError:
                raise
            except (OperationalError, InterfaceError, *RedisUnavailable):
                pass  # a store is away: keep the sockets, check again next round
            except Exception:
                # Never let the loop die: a socket that is no longer re-checked outlives logout and removal.
                logger.exception("websocket re-check failed; trying again next round")
            for consumer, code in verdicts.items():
                logger.info("websocket evicted by re-check code=%s", int(code))
                consumer.closing = True
                asyncio.ensure_future(consumer.close(code=code))
            await asyncio.sleep(period)


_rechecks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Rechecks] = weakref.WeakKeyDictionary()


def rechecks() -> _Rechecks:
    loop = asyncio.get_running_loop()
    r = _rechecks.get(loop)
    if r is None:
        r = _rechecks[loop] = _Rechecks()
    return r


def cap_limiter() -> RateLimiter:
    """The connection caps' limiter of this event loop's hub (its Redis client)."""
    h = hub()
    limiter = getattr(h, "_cap_limiter", None)
    if limiter is None:
        limiter = h._cap_limiter = RateLimiter(h._redis, settings.AULA_REDIS_KEY_PREFIX)
    return limiter


class RoomConsumer(AsyncWebsocketConsumer):
    """One socket in one room. Subclasses implement `authorize`, `still_authorized` and handlers."""

    channel_layer_alias = "__no_layer__"  # broadcasts come through the room hub, not per-consumer channels
    inbound: dict[str, type[Inbound]] = {"ping": Ping}

    room_key: str
    member: Member | None = None
    closing = False
    max_message_bytes: int | None = None  # None: AULA_WS_MAX_MESSAGE_BYTES (a route with larger frames sets it)
    allow_anonymous = False  # a route that admits signed-out sockets (read-only audiences) sets this
    # Set by a subclass when the client presented a valid resume token (a reconnect, counted per room).
    resumed = False
    # Latency sampling (sys.sample): None = for the rooms observability reports on (live sessions, streams;
    # stats.room_label), not for one-socket rooms such as an exam attempt. A subclass may force it on or off.
    measure_latency: bool | None = None
    latency_sampled = False
    _counted = False  # this socket is in its room's concurrency count
    # Per-user connection cap of this route (None: none); routes with the same `cap_pool` share one cap. A
    # socket holds its slot while its room re-checks; a crashed process's slots expire (cap_ttl).
    connection_cap: int | None = None
    cap_pool = ""
    cap_id: str | None = None

    # --- to override -------------------------------------------------------------------------------
    async def authorize(self) -> str:
        """Check the user may join; load what the room needs; return the room key. Raise Refused."""
        raise NotImplementedError

    def still_authorized(self) -> CloseCode | None:
        """Sync re-check run periodically in a thread; return a close code to evict the socket."""
        return None

    @property
    def recheck_group(self) -> str:
        """Sockets re-checked together (one task, one batch of queries): by default the room's. A consumer
        whose rooms hold one socket each (an exam attempt) groups by something larger (the exam)."""
        return self.room_key

    @classmethod
    def still_authorized_many(cls, consumers: list[RoomConsumer]) -> dict[RoomConsumer, CloseCode]:
        """Sync re-check of one room's local sockets at once; override to batch the queries."""
        verdicts = {}
        for consumer in consumers:
            code = consumer.still_authorized()
            if code is not None:
                verdicts[consumer] = code
        return verdicts

    @classmethod
    async def heartbeat_many(cls, consumers: list[RoomConsumer]) -> None:
        """Each re-check period, for one room's local sockets; override to batch."""
        for consumer in consumers:
            await consumer.heartbeat()

    async def joined(self) -> None:
        """After accept and hub join: send the initial snapshot."""

    async def heartbeat(self) -> None:
        """Each re-check period: keep per-connection leases (e.g. the connection cap) alive."""

    async def left(self) -> None:
        """After the socket is gone (not called if the process dies: presence TTLs cover that)."""

    # --- lifecycle ----------------------------------------------------------------------------------
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or (not self.user.is_authenticated and not self.allow_anonymous):
            await self._count_connect("ref")
            await self._refuse(CloseCode.UNAUTHENTICATED)
            return
        user_id_var.set(str(self.user.pk))
        try:
            try:
                self.room_key = await self.authorize()
                await self._admit_cap()
            except Refused as refused:
                logger.warning("websocket refused code=%s reason=%s path=%s", int(refused.code), refused,
                               self.scope.get("path"))
                # A policy refusal (not enrolled, removed, ended, per-user cap) is the platform working; a
                # refusal for a reason of ours (restarting) is a failure (docs/observability.md).
                await self._count_connect("fail" if int(refused.code) in stats.FAILURE_CLOSE_CODES else "ref")
                await self._refuse(refused.code)
                return
            await self.accept()
            self.member = Member(self.base_send, user_id=self.user.pk)
            await hub().join(self.room_key, self.member)
            rechecks().add(self)
            await self.joined()
        except Exception:
            await self._count_connect("fail")  # a crash, the database or Redis away: a platform failure
            raise
        await self._count_connect("ok")
        await self._offer_latency_sample()

    @staticmethod
    def cap_ttl() -> int:
        return 3 * settings.AULA_SOCKET_RECHECK_SECONDS + 5  # three missed re-check periods

    async def _admit_cap(self) -> None:
        if self.connection_cap is None or not self.user.is_authenticated:
            return
        cap_id = uuid.uuid4().hex
        if not await cap_limiter().admit_connection(self.user.pk, cap_id, self.connection_cap, self.cap_ttl(),
                                                    self.cap_pool):
            raise Refused(CloseCode.TOO_MANY_CONNECTIONS, "connection cap")
        self.cap_id = cap_id

    @classmethod
    async def touch_caps(cls, consumers: list[RoomConsumer]) -> None:
        """One room's cap slots in one Redis round trip (each re-check period)."""
        await cap_limiter().touch_connections([(c.user.pk, c.cap_id, c.cap_pool) for c in consumers if c.cap_id])

    @property
    def participant_id(self) -> int | str | None:
        """Who this socket is, for counting distinct participants (a room with anonymous viewers overrides)."""
        return self.user.pk

    async def _count_connect(self, outcome: str) -> None:
        room_key = getattr(self, "room_key", None)
        try:
            current = await stats.record_connect(
                room_key, outcome, user_id=self.participant_id if outcome == "ok" else None,
                reconnect=self.resumed, path=self.scope.get("path", ""))
            self._counted = outcome == "ok" and current >= 0
        except Exception:  # observability never refuses a socket
            logger.warning("connection stats not recorded", exc_info=True)

    async def _offer_latency_sample(self) -> None:
        """Ask a sample of sockets (and the first one of a room in this process) to acknowledge events."""
        measure = self.measure_latency
        if measure is None:
            measure = stats.room_label(self.room_key) is not None
        if not measure:
            return
        local_members = hub().rooms.get(self.room_key) or {}
        if len(local_members) <= 1 or random.random() < settings.AULA_LATENCY_SAMPLE_RATE:
            self.latency_sampled = True
            self._ack_bucket = _Bucket(capacity=10, per_second=1.0)
            await self.reply(SAMPLE_FRAME)

    async def _refuse(self, code: CloseCode) -> None:
        # A close before accept is an HTTP 403 on a real server (ASGI spec): the browser sees 1006, cannot
        # tell it from a network drop, and reconnects forever. Accepting first delivers the close code, so
        # the client knows not to come back (docs/protocol.md). Nothing is sent in between.
        await self.accept()
        await self.close(code=code)

    async def disconnect(self, code) -> None:
        if self._counted:
            self._counted = False
            try:
                await stats.record_disconnect(self.room_key, self.member.delivered if self.member else 0)
            except Exception:
                logger.warning("connection stats not recorded", exc_info=True)
        try:
            if self.member is not None:
                rechecks().discard(self)
                self.member.closed = True
                await hub().leave(self.room_key, self.member)
                await self.left()
        finally:
            if self.cap_id is not None:
                cap_id, self.cap_id = self.cap_id, None
                await cap_limiter().release_connection(self.user.pk, cap_id, self.cap_pool)

    # Channels runs `close_old_connections` on its one shared sync thread before every message and after
    # disconnect: a thread hop per frame that serialises a join storm. Our database work runs through
    # `db_call`, which closes stale connections on its own threads, so these hops are skipped.
    async def dispatch(self, message) -> None:
        from channels.consumer import get_handler_name

        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message) -> None:
        from channels.exceptions import StopConsumer

        await self.disconnect(message["code"])
        raise StopConsumer()

    @classmethod
    def recheck_many(cls, consumers: Iterable[RoomConsumer]) -> dict[RoomConsumer, CloseCode]:
        """Sync: which of these sockets must go, and with which code (login first, then the room's rules)."""
        consumers = list(consumers)
        valid = sessions_still_valid([(c.scope.get("session_key"), c.user.pk) for c in consumers])
        verdicts = {c: CloseCode.UNAUTHENTICATED for c, ok in zip(consumers, valid, strict=True) if not ok}
        verdicts.update(cls.still_authorized_many([c for c in consumers if c not in verdicts]))
        return verdicts

    # --- inbound ------------------------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None) -> None:
        ref = None
        try:
            if text_data is None:
                raise FrameError(ErrorCode.BINARY_NOT_SUPPORTED, "Send JSON text frames.")
            limit = self.max_message_bytes or settings.AULA_WS_MAX_MESSAGE_BYTES
            if len(text_data) * 4 > limit and len(text_data.encode()) > limit:
                raise FrameError(ErrorCode.TOO_LARGE, "Message too large.", limit=limit)
            try:
                raw = json.loads(text_data)
            except ValueError:
                raise FrameError(ErrorCode.INVALID_JSON, "Frame is not valid JSON.") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
                raise FrameError(ErrorCode.INVALID_MESSAGE, "A message is a JSON object with a string 'type'.")
            if isinstance(raw.get("ref"), str):
                ref = raw["ref"][:64]
            schema = self.inbound.get(raw["type"]) or OBSERVABILITY_INBOUND.get(raw["type"])
            if schema is None:
                raise FrameError(ErrorCode.UNKNOWN_TYPE, f"Unknown message type {raw['type'][:40]!r}.")
            try:
                message = schema.model_validate(raw)
            except SchemaError as exc:
                fields = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                          for e in exc.errors(include_url=False, include_input=False)]
                raise FrameError(ErrorCode.INVALID_FIELDS, "Some fields are not valid.", fields=fields) from None
            handler = getattr(self, "on_" + raw["type"].replace(".", "_"))
            await handler(message)
        except FrameError as err:
            await self.reply(error_frame(err.code, err.message, ref=ref, **err.details))
        except PermissionDenied as exc:
            await self.reply(error_frame(ErrorCode.FORBIDDEN, str(exc) or "Not allowed.", ref=ref))
        except ValidationError as exc:
            await self.reply(error_frame(ErrorCode.INVALID, "; ".join(exc.messages), ref=ref))
        except (OperationalError, InterfaceError, *RedisUnavailable):
            await self.reply(error_frame(ErrorCode.UNAVAILABLE, "Temporarily unavailable; try again.",
                                         ref=ref, retry_after=2))
        except DatabaseError:
            logger.exception("database error in websocket handler")
            await self.reply(error_frame(ErrorCode.UNAVAILABLE, "Temporarily unavailable; try again.",
                                         ref=ref, retry_after=2))
        except Exception:
            logger.exception("unhandled error in websocket handler")
            await self.reply(error_frame(ErrorCode.SERVER_ERROR, "Something went wrong on our side.", ref=ref))

    async def reply(self, frame: str) -> None:
        """Send a frame to this socket only, in order with any pending broadcast deliveries."""
        if self.member is not None:
            await self.member.send_now(frame)
        else:
            await self.send(text_data=frame)

    async def ack(self, ref: str | None, **data) -> None:
        await self.reply(ack_frame(ref, **data))

    async def on_ping(self, msg: Ping) -> None:
        from django.utils import timezone

        await self.reply(encode_frame("pong", {"ref": msg.ref, "server_time": timezone.now().isoformat()}))

    # --- observability (docs/observability.md) ---------------------------------------------------------
    async def on_latency_ack(self, msg: LatencyAck) -> None:
        # Only sampled sockets are asked; anything else, over the per-socket budget, or with a ts that is not
        # a live server stamp is dropped without a reply (an ack is fire-and-forget).
        if not self.latency_sampled or self.member is None or not self._ack_bucket.take():
            return
        ms = stats.ack_latency_ms(msg.ts)
        if ms is not None:
            await stats.record_latency(self.room_key, ms)

    async def on_player_error(self, msg: PlayerError) -> None:
        if self.member is None:
            return
        bucket = getattr(self, "_player_bucket", None)
        if bucket is None:
            bucket = self._player_bucket = _Bucket(capacity=5, per_second=1 / 12)
        if not bucket.take():
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=12)
        # The message is validated and dropped: it may hold a signed media URL. Counted by code only.
        await stats.record_player_error(self.room_key, msg.code)
        await self.ack(msg.ref)
