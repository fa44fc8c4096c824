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

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError
from pydantic import ValidationError as SchemaError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.observability import user_id_var
from config.realtime.hub import Member, hub
from config.realtime.middleware import session_still_valid
from config.realtime.protocol import CloseCode, ErrorCode, Inbound, Ping, ack_frame, error_frame
from config.realtime.transport import db_call, encode_frame

logger = logging.getLogger("aula.realtime")

# Redis down or restarting (rate limits, presence): like the database being away, nothing was done.
RedisUnavailable = (RedisConnectionError, RedisTimeoutError)


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


class RoomConsumer(AsyncWebsocketConsumer):
    """One socket in one room. Subclasses implement `authorize`, `still_authorized` and handlers."""

    channel_layer_alias = "__no_layer__"  # broadcasts come through the room hub, not per-consumer channels
    inbound: dict[str, type[Inbound]] = {"ping": Ping}

    room_key: str
    member: Member | None = None
    _recheck_task: asyncio.Task | None = None

    # --- to override -------------------------------------------------------------------------------
    async def authorize(self) -> str:
        """Check the user may join; load what the room needs; return the room key. Raise Refused."""
        raise NotImplementedError

    def still_authorized(self) -> CloseCode | None:
        """Sync re-check run periodically in a thread; return a close code to evict the socket."""
        return None

    async def joined(self) -> None:
        """After accept and hub join: send the initial snapshot."""

    async def heartbeat(self) -> None:
        """Each re-check period: keep per-connection leases (e.g. the connection cap) alive."""

    async def left(self) -> None:
        """After the socket is gone (not called if the process dies: presence TTLs cover that)."""

    # --- lifecycle ----------------------------------------------------------------------------------
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self._refuse(CloseCode.UNAUTHENTICATED)
            return
        user_id_var.set(str(self.user.pk))
        try:
            self.room_key = await self.authorize()
        except Refused as refused:
            logger.warning("websocket refused code=%s reason=%s path=%s", int(refused.code), refused,
                           self.scope.get("path"))
            await self._refuse(refused.code)
            return
        await self.accept()
        self.member = Member(self.base_send)
        await hub().join(self.room_key, self.member)
        self._recheck_task = asyncio.create_task(self._recheck_loop())
        await self.joined()

    async def _refuse(self, code: CloseCode) -> None:
        # A close before accept is an HTTP 403 on a real server (ASGI spec): the browser sees 1006, cannot
        # tell it from a network drop, and reconnects forever. Accepting first delivers the close code, so
        # the client knows not to come back (docs/protocol.md). Nothing is sent in between.
        await self.accept()
        await self.close(code=code)

    async def disconnect(self, code) -> None:
        if self._recheck_task is not None:
            self._recheck_task.cancel()
        if self.member is not None:
            self.member.closed = True
            await hub().leave(self.room_key, self.member)
            await self.left()

    async def _recheck_loop(self) -> None:
        # Authorization is not only a connect-time decision: logout, a disabled account or removal from
        # the class closes the socket within AULA_SOCKET_RECHECK_SECONDS (jittered to spread the load).
        period = settings.AULA_SOCKET_RECHECK_SECONDS
        await asyncio.sleep(random.uniform(period / 2, period))
        while True:
            try:
                await self.heartbeat()
                code = await db_call(self._recheck)()
            except (OperationalError, InterfaceError, *RedisUnavailable):
                code = None  # a store is away: keep the socket, check again next round
            except Exception:
                # Never let the loop die: a socket that is no longer re-checked outlives logout and removal.
                logger.exception("websocket re-check failed; trying again next round")
                code = None
            if code is not None:
                logger.info("websocket evicted by re-check code=%s", int(code))
                await self.close(code=code)
                return
            await asyncio.sleep(period)

    def _recheck(self) -> CloseCode | None:
        if not session_still_valid(self.scope.get("session_key"), self.user.pk):
            return CloseCode.UNAUTHENTICATED
        return self.still_authorized()

    # --- inbound ------------------------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None) -> None:
        ref = None
        try:
            if text_data is None:
                raise FrameError(ErrorCode.BINARY_NOT_SUPPORTED, "Send JSON text frames.")
            if len(text_data) * 4 > settings.AULA_WS_MAX_MESSAGE_BYTES and \
                    len(text_data.encode()) > settings.AULA_WS_MAX_MESSAGE_BYTES:
                raise FrameError(ErrorCode.TOO_LARGE, "Message too large.",
                                 limit=settings.AULA_WS_MAX_MESSAGE_BYTES)
            try:
                raw = json.loads(text_data)
            except ValueError:
                raise FrameError(ErrorCode.INVALID_JSON, "Frame is not valid JSON.") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
                raise FrameError(ErrorCode.INVALID_MESSAGE, "A message is a JSON object with a string 'type'.")
            if isinstance(raw.get("ref"), str):
                ref = raw["ref"][:64]
            schema = self.inbound.get(raw["type"])
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
