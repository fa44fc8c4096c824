"""`/ws/v1/streams/<stream_id>/`: the live stream room (watch page, chat pop-out, embed).

Adapter only: validate, rate-limit, authorize via selectors, one service call, reply. Anonymous sockets are
admitted read-only. Broadcasts never pass through here: services publish after commit and the room hub (and,
for chat, this process's sampler in streaming/audience.py) writes frames to the sockets.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Literal

from auditlog.context import set_actor
from django.conf import settings
from django.core import signing
from django.utils import timezone
from pydantic import Field

from analytics.geo import locate
from config.realtime.batching import coalesced
from config.realtime.consumer import FrameError, Refused, RoomConsumer
from config.realtime.hub import hub
from config.realtime.middleware import parse_cookies, sessions_still_valid
from config.realtime.protocol import CloseCode, ErrorCode, Inbound, Ping
from config.realtime.ratelimit import RateLimiter, limits
from config.realtime.transport import db_call, encode_frame, event_frame, room_events_since, room_last_seq
from streaming import events, selectors, services
from streaming.audience import REACTIONS, audience, viewers_read
from streaming.models import Stream, StreamChatMessage, StreamPoll, StreamQuestion
from streaming.realtime import stream_chat_room, stream_staff_room
from streaming.selectors import ViewerRole

MAX_REPLAY = 500
MAX_CHAT_REPLAY = 200
VIEWER_COOKIE = "aula_vid"
VIEWER_COOKIE_SALT = "aula.streaming.viewer"
_RESUME_SALT = "aula.streaming.resume"
_RESULTS_DELAY = 0.25  # poll results: at most 4 broadcasts a second per poll, across processes


def viewer_cookie_value() -> str:
    """A fresh signed anonymous viewer id for the `aula_vid` cookie (set by the watch page)."""
    return signing.Signer(salt=VIEWER_COOKIE_SALT).sign(uuid.uuid4().hex)


def read_viewer_cookie(value: str | None) -> str | None:
    if not value:
        return None
    try:
        vid = signing.Signer(salt=VIEWER_COOKIE_SALT).unsign(value)
    except signing.BadSignature:
        return None  # forged or unsigned: ignored, the socket counts as itself
    return vid if len(vid) == 32 and all(c in "0123456789abcdef" for c in vid) else None


# --- inbound message schemas ---------------------------------------------------------------------------

class Empty(Inbound):
    pass


class Resume(Inbound):
    last_seq: int = Field(ge=0)
    chat_cseq: int | None = Field(default=None, ge=0)


class ChatReport(Inbound):
    message_id: int
    reason: str = Field(default="", max_length=300)


class ChatSend(Inbound):
    body: str = Field(min_length=1, max_length=services.CHAT_MAX_CHARS)


class ChatHistory(Inbound):
    after_cseq: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=MAX_CHAT_REPLAY)


class MessageRef(Inbound):
    message_id: int


class ChatSettings(Inbound):
    slow_seconds: int | None = Field(default=None, ge=0, le=3600)
    followers_only: bool | None = None
    follow_minutes: int | None = Field(default=None, ge=0, le=129600)
    members_only: bool | None = None
    emote_only: bool | None = None
    hold_all: bool | None = None


class Lockdown(Inbound):
    on: bool


class Timeout(Inbound):
    user_id: int
    minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 30)  # None: a ban
    reason: str = Field(default="", max_length=200)


class UserRef(Inbound):
    user_id: int


class Reaction(Inbound):
    emoji: Literal[REACTIONS]  # type: ignore[valid-type]


class PollOpen(Inbound):
    question: str = Field(min_length=1, max_length=300)
    options: list[str] = Field(min_length=2, max_length=6)


class PollVote(Inbound):
    poll_id: int
    choice: int = Field(ge=0, le=5)


class PollRef(Inbound):
    poll_id: int


class QuestionAsk(Inbound):
    body: str = Field(min_length=1, max_length=services.QUESTION_MAX_CHARS)


class QuestionRef(Inbound):
    question_id: int


class QuestionMark(Inbound):
    question_id: int
    status: Literal["answered", "dismissed", "open"]


class StreamEnd(Inbound):
    recording_url: str = Field(default="", max_length=500)


def resume_token(conn_id: str, identity: str, stream_id: int) -> str:
    return signing.dumps({"c": conn_id, "i": identity, "s": stream_id}, salt=_RESUME_SALT, compress=True)


def read_resume_token(token: str, identity: str, stream_id: int) -> bool:
    try:
        data = signing.loads(token, salt=_RESUME_SALT, max_age=6 * 3600)
    except signing.BadSignature:
        return False
    return data.get("i") == identity and data.get("s") == stream_id


def resume_token_identity(token: str | None, stream_id: int) -> str | None:
    """The connection-only identity (`c…`) a valid resume token of this stream was issued to, else None."""
    if not token:
        return None
    try:
        data = signing.loads(token, salt=_RESUME_SALT, max_age=6 * 3600)
    except signing.BadSignature:
        return None
    identity = data.get("i")
    return identity if data.get("s") == stream_id and isinstance(identity, str) and identity[:1] == "c" else None


def _query(scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))[:10])


def _segment(role: ViewerRole) -> str:
    if role == ViewerRole.ANONYMOUS:
        return "anonymous"
    return "member" if role in {ViewerRole.MEMBER, ViewerRole.MODERATOR, ViewerRole.CREATOR} else "signed_in"


def build_public_snapshot(stream_id: int, room_key: str) -> dict:
    """What every viewer's snapshot shares, read in one repeatable-read transaction so that the state and
    its `last_seq` / `chat_cseq` agree."""
    from django.db import connection, transaction

    from config.realtime.transport import room_last_seq as last_seq_of

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        stream = Stream.objects.select_related("channel").get(pk=stream_id)
        polls = selectors.polls_current(stream)
        return {
            "last_seq": last_seq_of(room_key),
            "chat_cseq": last_seq_of(stream_chat_room(stream.pk)),
            "stream": {**events.stream_status(stream), "title": stream.title,
                       "channel": {"slug": stream.channel.slug, "title": stream.channel.title}},
            "chat_settings": events.chat_settings(stream),
            "chat": [events.chat_message(m) for m in selectors.chat_recent(stream)],
            "polls": [{**events.poll(p), "results": events.poll_results(p, selectors.poll_counts(p))} for p in polls],
            "questions": [events.question(q) for q in selectors.questions_board(stream)],
            "reactions": list(REACTIONS),
            "reaction_window_ms": settings.AULA_STREAM_REACTION_WINDOW_MS,
            "viewers": viewers_read(stream.pk),
        }


class PublicSnapshots:
    """Per process: the shared part of a stream's snapshot, read once and reused by every socket that joins
    until the next frame of any room reaches this process's hub (a join storm of thousands then costs a
    handful of reads, not a dozen queries per socket). A socket that joins after a reuse still gets every
    later event: it is in the room (held) before the snapshot is sent, and any frame newer than the snapshot
    invalidates it. Concurrent joins wait for one read (single flight)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, dict]] = {}
        self.building: dict[int, asyncio.Future] = {}

    async def get(self, stream_id: int, room_key: str) -> dict:
        h = hub()
        entry = self.entries.get(stream_id)
        if entry is not None and entry[0] == h.frames_in:
            return entry[1]
        future = self.building.get(stream_id)
        if future is None:
            marker = h.frames_in  # taken before the read: a frame that lands meanwhile forces the next rebuild
            future = self.building[stream_id] = asyncio.ensure_future(
                db_call(build_public_snapshot)(stream_id, room_key))
            try:
                data = await future
            finally:
                self.building.pop(stream_id, None)
            self.entries[stream_id] = (marker, data)
            return data
        return await asyncio.shield(future)


_public_snapshots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PublicSnapshots] = \
    weakref.WeakKeyDictionary()


def public_snapshots() -> PublicSnapshots:
    loop = asyncio.get_running_loop()
    cache = _public_snapshots.get(loop)
    if cache is None:
        cache = _public_snapshots[loop] = PublicSnapshots()
    return cache


# A join storm's reads go to the database in batches (config/realtime/batching.py).
_stream_and_role = coalesced(selectors.streams_and_roles)
_personal_parts = coalesced(selectors.personal_parts)


class StreamConsumer(RoomConsumer):
    """One socket on one stream: `?surface=watch|chat|embed&last_seq=N&chat_cseq=M&resume=TOKEN`."""

    allow_anonymous = True
    inbound = {
        "ping": Ping, "resume": Resume,
        "chat.send": ChatSend, "chat.history": ChatHistory, "chat.delete": MessageRef, "chat.report": ChatReport,
        "chat.approve": MessageRef, "chat.reject": MessageRef, "chat.settings": ChatSettings,
        "chat.lockdown": Lockdown, "chat.timeout": Timeout, "chat.unban": UserRef,
        "reaction": Reaction,
        "poll.open": PollOpen, "poll.vote": PollVote, "poll.close": PollRef,
        "question.ask": QuestionAsk, "question.upvote": QuestionRef, "question.mark": QuestionMark,
        "stream.go_live": Empty, "stream.end": StreamEnd,
    }

    # --- connect -----------------------------------------------------------------------------------
    async def authorize(self) -> str:
        stream_id = self.scope["url_route"]["kwargs"]["stream_id"]
        stream, role = await _stream_and_role((stream_id, self.user))
        if stream is None:
            raise Refused(CloseCode.NOT_FOUND, "no such stream")
        if not selectors.watchable(stream):
            raise Refused(CloseCode.ENDED, "stream ended")
        self.stream, self.role = stream, role
        self.signed_in = self.user.is_authenticated
        self.conn_id = uuid.uuid4().hex
        params = _query(self.scope)
        self.surface = params.get("surface") if params.get("surface") in {"watch", "chat", "embed"} else "watch"
        if self.signed_in:
            self.identity = f"u{self.user.pk}"
        else:
            cookies = {}
            for key, value in self.scope.get("headers", []):
                if key == b"cookie":
                    cookies = parse_cookies(value.decode("latin-1"))
            vid = read_viewer_cookie(cookies.get(VIEWER_COOKIE))
            # Without a cookie (a third-party embed may get none) a reconnect keeps the identity its resume
            # token was issued to: otherwise its ghost on a dead process and the new socket would count twice.
            self.identity = (f"a{vid}" if vid else
                             resume_token_identity(params.get("resume"), stream.pk) or f"c{self.conn_id}")
        self.limiter = RateLimiter(hub()._redis, settings.AULA_REDIS_KEY_PREFIX)
        self.limits = limits()
        from streaming.realtime import stream_room

        return stream_room(stream.pk)

    @classmethod
    def recheck_many(cls, consumers):
        """Signed-in sockets re-check their login; anonymous ones have none to lose."""
        consumers = [c for c in consumers if c.signed_in]
        valid = sessions_still_valid([(c.scope.get("session_key"), c.user.pk) for c in consumers])
        return {c: CloseCode.UNAUTHENTICATED for c, ok in zip(consumers, valid, strict=True) if not ok}

    def _country(self) -> str:
        client = self.scope.get("client") or (None, None)
        minor = True
        if self.signed_in:
            age = self.user.age_on(timezone.localdate()) if hasattr(self.user, "age_on") else None
            minor = age is None or age < 13
        return locate(client[0], minor=minor)[0]

    async def joined(self) -> None:
        self.member.user_id = self.user.pk if self.signed_in else None
        if self.role.is_staff:
            await hub().join(self._staff_room, self.member)
        await audience().join(self.stream.pk, self.identity, segment=_segment(self.role), country=self._country())
        await audience().watch_chat(self.stream.pk, self.member, staff=self.role.is_staff)
        params = _query(self.scope)
        last_seq, token = params.get("last_seq"), params.get("resume")
        if token and last_seq and last_seq.isdigit() and read_resume_token(token, self.identity, self.stream.pk):
            self.resumed = True  # a reconnect (config/realtime/stats.py)
            chat_cseq = params.get("chat_cseq")
            await self._replay(int(last_seq), int(chat_cseq) if chat_cseq and chat_cseq.isdigit() else None)
        else:
            await self._send_snapshot()

    @property
    def participant_id(self) -> str:
        return self.identity  # tabs, pop-outs and embeds of one viewer are one participant

    @property
    def _staff_room(self) -> str:
        return stream_staff_room(self.stream.pk)

    async def left(self) -> None:
        if self.role.is_staff:
            await hub().leave(self._staff_room, self.member)
        await audience().unwatch_chat(self.stream.pk, self.member)
        await audience().leave(self.stream.pk, self.identity)
        if self.stream.pk not in audience().streams:
            # This process no longer hears the stream's frames, so nothing would tell it the shared snapshot
            # went stale: the next join reads it again.
            public_snapshots().entries.pop(self.stream.pk, None)

    # --- snapshot and resume -----------------------------------------------------------------------
    async def _send_snapshot(self) -> None:
        self.member.hold()
        try:
            public = await public_snapshots().get(self.stream.pk, self.room_key)
            personal = await _personal_parts(self._personal_item(public)) if self.signed_in else {}
            await self.reply(encode_frame("snapshot", self._snapshot(public, personal)))
        finally:
            await self.member.release()

    def _personal_item(self, public: dict) -> tuple:
        return (self.stream.pk, self.user, [p["id"] for p in public["polls"]], self.role.is_staff,
                bool(public["questions"]))

    def _snapshot(self, public: dict, personal: dict) -> dict:
        mine = personal.get("mine", {})
        role = self.role
        held = personal.get("held")
        return {
            **public,
            "server_time": timezone.now().isoformat(),
            "resume_token": resume_token(self.conn_id, self.identity, self.stream.pk),
            "you": {"id": self.user.pk if self.signed_in else None, "role": role.value,
                    "can_moderate": role.is_staff, "signed_in": role.signed_in, "surface": self.surface},
            "polls": [{**p, "mine": mine.get(p["id"])} for p in public["polls"]],
            "own_held": [events.chat_held(m) for m in personal.get("own_held", [])],
            "held": [events.chat_held(m) for m in held] if held is not None else None,
            "my_upvotes": personal.get("my_upvotes", []),
        }

    def _build_snapshot(self) -> dict:
        """The whole snapshot read fresh (a resume that fell too far behind)."""
        public = build_public_snapshot(self.stream.pk, self.room_key)
        return self._snapshot(public, selectors.personal_parts([self._personal_item(public)])[0]
                              if self.signed_in else {})

    async def _replay(self, last_seq: int, chat_cseq: int | None) -> None:
        self.member.hold()
        try:
            rows = await db_call(room_events_since)(self.room_key, last_seq, MAX_REPLAY + 1)
            behind = not rows and last_seq > await db_call(room_last_seq)(self.room_key)
            if len(rows) > MAX_REPLAY or (rows and rows[0].seq != last_seq + 1) or behind:
                await self.reply(encode_frame("snapshot", await db_call(self._build_snapshot)()))
                return
            for row in rows:
                await self.reply(event_frame(row))
            chat_last = chat_cseq
            if chat_cseq is not None:
                messages = await db_call(self._chat_since)(chat_cseq, MAX_CHAT_REPLAY)
                for data in messages:
                    await self.reply(encode_frame("chat.message", data))
                if messages:
                    chat_last = messages[-1]["cseq"]
            await self.reply(encode_frame("resume.done", {
                "last_seq": rows[-1].seq if rows else last_seq, "chat_cseq": chat_last,
                "resume_token": resume_token(self.conn_id, self.identity, self.stream.pk),
                "server_time": timezone.now().isoformat()}))
        finally:
            await self.member.release()

    def _chat_since(self, after: int, limit: int) -> list[dict]:
        return [events.chat_message(m) for m in selectors.chat_since(self.stream, after, limit)]

    # --- helpers -------------------------------------------------------------------------------------
    def _signed_in_only(self, what: str) -> None:
        if not self.signed_in:
            raise FrameError(ErrorCode.FORBIDDEN, f"Sign in to {what}.", sign_in=True)

    async def _limit(self, action: str) -> None:
        verdict = await self.limiter.hit(f"st{self.stream.pk}:{self.identity}:{action}", self.limits[action])
        if not verdict.allowed:
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=round(verdict.retry_after, 2))

    async def _run(self, fn):
        """One service call in a database thread, with the audit actor set to this socket's user."""
        def run():
            if self.signed_in:
                with set_actor(self.user):
                    return fn()
            return fn()

        from moderation.services import Stale

        try:
            return await db_call(run)()
        except (services.Conflict, Stale) as exc:  # Stale: the queue decided this held message meanwhile
            raise FrameError(ErrorCode.CONFLICT, str(exc)) from None
        except services.SlowMode as exc:
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow mode is on.", retry_after=exc.retry_after,
                             slow_mode=True) from None
        except (StreamChatMessage.DoesNotExist, StreamPoll.DoesNotExist, StreamQuestion.DoesNotExist):
            raise FrameError(ErrorCode.NOT_FOUND, "Not found.") from None

    async def _staff_only(self) -> None:
        self._signed_in_only("moderate")
        # Re-checked against the database on every privileged action, not only at connect.
        if not await db_call(selectors.can_moderate)(self.user, self.stream):
            import logging

            logging.getLogger("aula.security").warning(
                "privileged stream action refused user=%s stream=%s", self.user.pk, self.stream.pk)
            raise FrameError(ErrorCode.FORBIDDEN, "Only the creator and the channel's moderators can do that.")

    def _stream(self) -> Stream:
        return Stream.objects.select_related("channel").get(pk=self.stream.pk)

    def _message(self, message_id: int) -> StreamChatMessage:
        return StreamChatMessage.objects.get(pk=message_id, stream_id=self.stream.pk)

    # --- handlers ------------------------------------------------------------------------------------
    async def on_resume(self, msg: Resume) -> None:
        await self._limit("resume")
        await self._replay(msg.last_seq, msg.chat_cseq)

    async def on_chat_report(self, msg: ChatReport) -> None:
        """"Flag this message": it joins the moderation queue (one report per person and message)."""
        self._signed_in_only("report a message")
        await self._limit("chat")
        from moderation.services import report_create

        await self._run(lambda: report_create(reporter=self.user, source="stream_chat", object_id=msg.message_id,
                                              reason=msg.reason, room_id=self.stream.pk))
        await self.ack(msg.ref, reported=msg.message_id)

    async def on_chat_send(self, msg: ChatSend) -> None:
        self._signed_in_only("chat")
        await self._limit("chat")
        message = await self._run(lambda: services.chat_message_post(
            stream=self._stream(), author=self.user, body=msg.body, client_ref=msg.ref or ""))
        if message.status == StreamChatMessage.Status.HELD:
            await self.ack(msg.ref, id=message.pk, pending_review=True, message=events.chat_held(message))
        else:
            await self.ack(msg.ref, id=message.pk, cseq=message.cseq, message=events.chat_message(message))

    async def on_chat_history(self, msg: ChatHistory) -> None:
        await self._limit("resume")
        messages = await db_call(self._chat_since)(msg.after_cseq, msg.limit)
        await self.reply(encode_frame("chat.history", {"ref": msg.ref, "messages": messages,
                                                       "complete": len(messages) < msg.limit}))

    async def on_chat_delete(self, msg: MessageRef) -> None:
        await self._staff_only()
        await self._run(lambda: services.chat_message_delete(message=self._message(msg.message_id), actor=self.user))
        await self.ack(msg.ref)

    async def on_chat_approve(self, msg: MessageRef) -> None:
        await self._staff_only()
        message = await self._run(lambda: services.chat_approve(message=self._message(msg.message_id),
                                                                actor=self.user))
        await self.ack(msg.ref, cseq=message.cseq)

    async def on_chat_reject(self, msg: MessageRef) -> None:
        await self._staff_only()
        await self._run(lambda: services.chat_reject(message=self._message(msg.message_id), actor=self.user))
        await self.ack(msg.ref)

    async def on_chat_settings(self, msg: ChatSettings) -> None:
        await self._staff_only()
        changes = msg.model_dump(exclude={"type", "ref"}, exclude_none=True)
        stream = await self._run(lambda: services.chat_settings_set(stream=self._stream(), actor=self.user,
                                                                    **changes))
        await self.ack(msg.ref, settings=events.chat_settings(stream))

    async def on_chat_lockdown(self, msg: Lockdown) -> None:
        await self._staff_only()
        stream = await self._run(lambda: services.chat_lockdown(stream=self._stream(), actor=self.user, on=msg.on))
        await self.ack(msg.ref, settings=events.chat_settings(stream))

    def _target(self, user_id: int):
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
        if user is None:
            raise FrameError(ErrorCode.NOT_FOUND, "No such person.")
        return user

    async def on_chat_timeout(self, msg: Timeout) -> None:
        await self._staff_only()
        ban = await self._run(lambda: services.chat_user_restrict(
            stream=self._stream(), actor=self.user, user=self._target(msg.user_id), minutes=msg.minutes,
            reason=msg.reason))
        await self.ack(msg.ref, until=events._iso(ban.until), banned=ban.until is None)

    async def on_chat_unban(self, msg: UserRef) -> None:
        await self._staff_only()
        removed = await self._run(lambda: services.chat_user_unrestrict(
            stream=self._stream(), actor=self.user, user=self._target(msg.user_id)))
        await self.ack(msg.ref, removed=removed)

    async def on_reaction(self, msg: Reaction) -> None:
        self._signed_in_only("react")
        # Per person (all their tabs on this process) in memory: no Redis round trip per reaction.
        verdict = audience().reaction_limit(self.stream.pk, self.identity).hit()
        if not verdict.allowed:
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=round(verdict.retry_after, 2))
        await audience().react(self.stream.pk, msg.emoji)
        if msg.ref:
            await self.ack(msg.ref)

    async def on_poll_open(self, msg: PollOpen) -> None:
        await self._staff_only()
        poll = await self._run(lambda: services.poll_open(stream=self._stream(), actor=self.user,
                                                          question=msg.question, options=msg.options))
        await self.ack(msg.ref, poll_id=poll.pk)

    async def on_poll_vote(self, msg: PollVote) -> None:
        self._signed_in_only("vote")
        await self._limit("poll_answer")
        _, created = await self._run(lambda: services.poll_vote(poll_id=msg.poll_id, stream=self.stream,
                                                                user=self.user, choice=msg.choice))
        await self.ack(msg.ref, poll_id=msg.poll_id, duplicate=not created)
        if created:
            await _coalesced_results(msg.poll_id)

    async def on_poll_close(self, msg: PollRef) -> None:
        await self._staff_only()
        await self._run(lambda: services.poll_close(poll=StreamPoll.objects.get(pk=msg.poll_id,
                                                                                stream_id=self.stream.pk),
                                                    actor=self.user))
        await self.ack(msg.ref)

    async def on_question_ask(self, msg: QuestionAsk) -> None:
        self._signed_in_only("ask a question")
        await self._limit("chat")
        question = await self._run(lambda: services.question_ask(stream=self.stream, author=self.user, body=msg.body))
        await self.ack(msg.ref, question_id=question.pk, held=question.status == "held")

    async def on_question_upvote(self, msg: QuestionRef) -> None:
        self._signed_in_only("upvote")
        await self._limit("poll_answer")
        question, upvoted = await self._run(lambda: services.question_upvote(
            question_id=msg.question_id, stream=self.stream, user=self.user))
        await self.ack(msg.ref, question_id=question.pk, upvoted=upvoted, upvotes=question.upvotes)

    async def on_question_mark(self, msg: QuestionMark) -> None:
        await self._staff_only()
        await self._run(lambda: services.question_mark(question_id=msg.question_id, stream=self._stream(),
                                                       actor=self.user, status=msg.status))
        await self.ack(msg.ref)

    async def on_stream_go_live(self, msg: Empty) -> None:
        await self._staff_only()
        await self._run(lambda: services.stream_go_live(stream=self._stream(), actor=self.user))
        await self.ack(msg.ref)

    async def on_stream_end(self, msg: StreamEnd) -> None:
        await self._staff_only()
        await self._run(lambda: services.stream_end(stream=self._stream(), actor=self.user,
                                                    recording_url=msg.recording_url))
        await self.ack(msg.ref)


async def _coalesced_results(poll_id: int) -> None:
    """At most one results broadcast per poll per 250 ms across all processes (a Redis SET NX lease)."""
    key = f"{settings.AULA_REDIS_KEY_PREFIX}:stpollres:{poll_id}"
    if not await hub()._redis.set(key, "1", nx=True, px=int(_RESULTS_DELAY * 1000)):
        return

    async def later():
        await asyncio.sleep(_RESULTS_DELAY)
        await db_call(services.poll_results_publish)(poll_id=poll_id)

    asyncio.ensure_future(later())


