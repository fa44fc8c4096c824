"""WebSocket adapter for live sessions: validate, rate-limit, authorize via selectors, one service call, reply.

Broadcasts never pass through here: services publish after commit and the room hub writes frames to the
sockets. This consumer sends only direct replies (snapshot, replay, acks, errors).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Annotated, Literal

from auditlog.context import set_actor
from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field

from classrooms import collab, events, realtime, selectors, services
from classrooms.models import ChatMessage, Enrollment, LiveSession, Poll, PollAnswer, Role, User
from classrooms.receivers import session_presence_audience, state_seconds
from compliance import audit
from compliance.coppa import selectors as coppa
from compliance.models import PersonalInfoFeature
from config.realtime import presence, stats
from config.realtime.consumer import FrameError, Refused, RoomConsumer, _Bucket
from config.realtime.hub import hub
from config.realtime.protocol import CloseCode, ErrorCode, Inbound, Ping, error_frame
from config.realtime.ratelimit import RateLimiter, limits
from config.realtime.transport import db_call, encode_frame, event_frame, room_events_since

logger = logging.getLogger("aula.collab")

MAX_REPLAY = 500
CONNECTIONS_PER_USER = 5
_RESUME_SALT = "aula.classrooms.resume"


# --- inbound message schemas ---------------------------------------------------------------------------

class Resume(Inbound):
    last_seq: int = Field(ge=0)


class ChatSend(Inbound):
    body: str = Field(min_length=1, max_length=services.CHAT_MAX_CHARS)


class ChatDelete(Inbound):
    message_id: int
    reason: str = Field(min_length=1, max_length=200)


class ChatReport(Inbound):
    message_id: int
    reason: str = Field(default="", max_length=300)


class ChatClear(Inbound):
    reason: str = Field(min_length=1, max_length=200)


class PollCreate(Inbound):
    question: str = Field(min_length=1, max_length=500)
    kind: Literal["single", "multiple", "open"]
    options: list[str] = Field(default_factory=list, max_length=12)
    anonymous: bool = False
    quiz: bool = False
    correct: list[int] = Field(default_factory=list, max_length=12)
    results: Literal["live", "on_close"] = "live"


class PollAnswerMsg(Inbound):
    poll_id: int
    attempt_id: uuid.UUID
    positions: list[int] = Field(default_factory=list, max_length=12)
    text: str = Field(default="", max_length=1000)


class PollRef(Inbound):
    poll_id: int


class UserRef(Inbound):
    user_id: int


class HandLower(Inbound):
    user_id: int | None = None


class FeatureLock(Inbound):
    feature: Literal["chat", "hand", "polls", "reactions", "whiteboard", "notes"]
    locked: bool
    user_id: int | None = None


class Remove(Inbound):
    user_id: int
    reason: str = Field(default="", max_length=200)


class ScreenShare(Inbound):
    user_id: int
    allowed: bool


class TimerStart(Inbound):
    seconds: int = Field(ge=1, le=6 * 3600)
    label: str = Field(default="", max_length=80)


class PresenceState(Inbound):
    state: Literal["active", "idle", "away"]


class Empty(Inbound):
    pass


def resume_token(conn_id: str, user_id: int, session_id: int) -> str:
    return signing.dumps({"c": conn_id, "u": user_id, "s": session_id}, salt=_RESUME_SALT, compress=True)


def read_resume_token(token: str, user_id: int, session_id: int) -> str | None:
    try:
        data = signing.loads(token, salt=_RESUME_SALT, max_age=6 * 3600)
    except signing.BadSignature:
        return None
    if data.get("u") != user_id or data.get("s") != session_id:
        return None
    return data.get("c")


async def _close_on_control(consumer: RoomConsumer, message: dict) -> None:
    """A session's control messages to its sockets: the session ended, or this user was removed."""
    action = message.get("action")
    if action == "end":
        await consumer.close(code=CloseCode.ENDED)
    elif action == "remove" and message.get("user_id") == consumer.user.pk:
        await consumer.close(code=CloseCode.REMOVED)


async def _join_session(consumer: RoomConsumer) -> None:
    """Admit a socket to a live session's routes (the class room, the board and notes): enrolled in its course,
    not removed, not ended. Sets `session`, `role` and `is_staff_role`; raises Refused."""
    session_id = consumer.scope["url_route"]["kwargs"]["session_id"]
    session, role, removed = await db_call(selectors.session_join_info)(consumer.user, session_id)
    if session is None:
        raise Refused(CloseCode.NOT_FOUND, "no such session for this user")
    if role is None:
        raise Refused(CloseCode.FORBIDDEN, "not enrolled in this course")
    if removed:
        raise Refused(CloseCode.REMOVED, "removed from this session")
    if session.status == LiveSession.Status.ENDED:
        raise Refused(CloseCode.ENDED, "session ended")
    consumer.session, consumer.role = session, role
    consumer.is_staff_role = role in {Role.TEACHER, Role.TA}


class LiveSessionConsumer(RoomConsumer):
    """`/ws/v1/sessions/<session_id>/[?last_seq=N&resume=<token>]`: one socket per open tab.

    FERPA: a teacher's snapshot (the roster with each student's controls) and a named poll's per-student
    answers are recorded reads; students' presence names are directory information (docs/compliance.md)."""

    ferpa_reads = ("classrooms.Enrollment", "classrooms.ParticipantState", "classrooms.PollAnswer")

    connection_cap = CONNECTIONS_PER_USER
    inbound = {
        "ping": Ping, "resume": Resume,
        "chat.send": ChatSend, "chat.delete": ChatDelete, "chat.clear": ChatClear, "chat.report": ChatReport,
        "poll.create": PollCreate, "poll.answer": PollAnswerMsg, "poll.close": PollRef, "poll.details": PollRef,
        "hand.raise": Empty, "hand.lower": HandLower, "hand.lower_all": Empty, "hand.call_next": Empty,
        "control.lock": FeatureLock, "control.remove": Remove, "control.readmit": UserRef,
        "control.screen_share": ScreenShare, "control.timer_start": TimerStart, "control.timer_stop": Empty,
        "session.start": Empty, "session.end": Empty,
        "presence.state": PresenceState,
    }

    # --- connect -----------------------------------------------------------------------------------
    async def authorize(self) -> str:
        await _join_session(self)
        session = self.session
        self.conn_id = uuid.uuid4().hex
        self.limiter = RateLimiter(hub()._redis, settings.AULA_REDIS_KEY_PREFIX)
        self.limits = limits()
        return realtime.session_room(session.institution_id, session.pk)

    def still_authorized(self) -> CloseCode | None:
        return self.still_authorized_many([self]).get(self)

    @classmethod
    def still_authorized_many(cls, consumers: list[LiveSessionConsumer]) -> dict[LiveSessionConsumer, CloseCode]:
        """One room's sockets (one session) at once: three queries whatever the room size."""
        if not consumers:
            return {}
        status, enrolled, removed = selectors.session_access_many(
            consumers[0].session.pk, list({c.user.pk for c in consumers}))
        verdicts = {}
        for consumer in consumers:
            selectors.forget_scope(consumer.user)  # later scope checks on this socket read afresh
            coppa.forget_cover(consumer.user)  # a withdrawn consent applies from the next frame on
            if status is None or consumer.user.pk not in enrolled:
                verdicts[consumer] = CloseCode.FORBIDDEN
            elif status == LiveSession.Status.ENDED:
                verdicts[consumer] = CloseCode.ENDED
            elif consumer.user.pk in removed:
                verdicts[consumer] = CloseCode.REMOVED
        return verdicts

    async def joined(self) -> None:
        self.member.user_id = self.user.pk
        self.member.on_control = self._on_control
        if self.is_staff_role:
            await hub().join(self._staff_room, self.member)
        params = _query(self.scope)
        resumed_from = None
        if params.get("resume"):
            resumed_from = read_resume_token(params["resume"], self.user.pk, self.session.pk)
            self.resumed = resumed_from is not None  # counted as a reconnect (config/realtime/stats.py)
        meta = {"user_id": self.user.pk, "name": self.user.public_name, "role": self.role, "state": "active",
                "resumed": resumed_from is not None}
        tracker = presence.tracker()
        if resumed_from:
            # The tab that is reconnecting may still have a ghost entry: remove it now, no duplicate user.
            old = await tracker.evict(self.room_key, resumed_from, self.user.pk)
            if old is not None:
                await self._record_interval(old, time.time(), "resumed")
        await tracker.track(self.room_key, self.conn_id, meta, session_presence_audience)
        last_seq = params.get("last_seq")
        if resumed_from and last_seq is not None and last_seq.isdigit():
            await self._replay(int(last_seq), first=True)
        else:
            await self._send_snapshot()
        if self.is_staff_role:  # the teacher's health box (docs/observability.md)
            await stats.health_feed().add(self.room_key, self._staff_room, self.member)

    @property
    def _staff_room(self) -> str:
        return realtime.session_staff_room(self.session.institution_id, self.session.pk)

    async def left(self) -> None:
        if self.is_staff_role:
            stats.health_feed().discard(self._staff_room)
            await hub().leave(self._staff_room, self.member)
        meta = await presence.tracker().untrack(self.conn_id)
        if meta is not None:
            await self._record_interval(meta, time.time(), "closed")

    async def _record_interval(self, meta: dict, left_at: float, reason: str) -> None:
        seconds = state_seconds(meta, left_at)
        await db_call(services.attendance_interval_record)(
            session_id=self.session.pk, user_id=meta["user_id"], conn_id=meta["conn"], joined_at=meta["joined_at"],
            left_at=left_at, active=seconds["active"], idle=seconds["idle"], away=seconds["away"],
            resumed=bool(meta.get("resumed")), reason=reason)

    async def _on_control(self, message: dict) -> None:
        await _close_on_control(self, message)

    # --- snapshot and resume -----------------------------------------------------------------------
    async def _send_snapshot(self) -> None:
        self.member.hold()  # broadcasts wait behind the snapshot; the client drops those it already has
        try:
            snapshot = await db_call(self._build_snapshot)()
            presence_data = await self._presence_snapshot()
            snapshot["presence"] = presence_data
            await self.reply(encode_frame("snapshot", snapshot))
        finally:
            await self.member.release()

    async def _presence_snapshot(self) -> dict:
        tracker = presence.tracker()
        count = await tracker.user_count(self.room_key)
        if self.is_staff_role or count <= realtime.ROSTER_FOR_STUDENTS_MAX:
            metas = await tracker.list(self.room_key)
            users: dict[str, dict] = {}
            for m in metas:
                users.setdefault(str(m["user_id"]), {"metas": []})["metas"].append(
                    {k: m.get(k) for k in ("conn", "user_id", "name", "role", "state")})
            return {"count": count, "users": users}
        return {"count": count, "users": None}

    def _build_snapshot(self) -> dict:
        with transaction.atomic():
            # One consistent view: the seq and the state it describes come from the same snapshot.
            with connection.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = selectors.snapshot_head(self.session.pk, self.user, self.room_key)
            session, last_seq, control = head.session, head.last_seq, head.control
            state = head.state
            shared = selectors.room_shared_state(session, self.room_key, last_seq)
            polls = shared["polls"]
            mine = {} if self.is_staff_role else selectors.own_poll_answers(polls, self.user)
            poll_data = []
            for poll in polls:
                item = {"poll": events.poll_public(poll)}
                if poll.results_visibility == Poll.Results.LIVE or poll.status == Poll.Status.CLOSED \
                        or self.is_staff_role:
                    item["results"] = events.poll_results(poll, selectors.poll_tally(poll))
                if not self.is_staff_role:
                    item["mine"] = mine.get(poll.pk)
                poll_data.append(item)
            roster = None
            if self.is_staff_role:
                enrollments = list(Enrollment.objects.filter(course_id=session.course_id, is_active=True)
                                   .select_related("user"))
                roster = [{"id": e.user_id, "name": e.user.public_name, "role": e.role} for e in enrollments]
                participant_states = list(session.participant_states.all())
                states = {s.user_id: events.participant(s) for s in participant_states}
                audit.record_socket_access(self, [*enrollments, *participant_states], purpose="live.roster",
                                           role=self.role)
            else:
                states = {self.user.pk: events.participant(state)} if state else {}
            return {
                "last_seq": last_seq,
                "server_time": timezone.now().isoformat(),
                "resume_token": resume_token(self.conn_id, self.user.pk, self.session.pk),
                "session": {"id": session.pk, "title": session.title, "course": head.course_code,
                            **events.session_status(session)},
                "you": {"id": self.user.pk, "name": self.user.public_name, "role": self.role,
                        "can_moderate": self.is_staff_role},
                "controls": events.controls(control) if control else {"locked_features": [], "timer": None},
                "participants": states,
                "roster": roster,
                "chat": shared["chat"],
                "polls": poll_data,
                "hands": shared["hands"],
            }

    async def _replay(self, last_seq: int, first: bool = False) -> None:
        self.member.hold()
        try:
            rows = await db_call(room_events_since)(self.room_key, last_seq, MAX_REPLAY + 1)
            if len(rows) > MAX_REPLAY or (rows and rows[0].seq != last_seq + 1) or \
                    (not rows and await self._seq_behind(last_seq)):
                await self._send_snapshot_held()
                return
            for row in rows:
                await self.reply(event_frame(row))
            own = await db_call(selectors.participant_state)(self.session, self.user)
            await self.reply(encode_frame("resume.done", {
                # Private notices are not in the room log: the student's own controls come with the replay.
                "participant": events.participant(own) if own else None,
                "last_seq": rows[-1].seq if rows else last_seq,
                "resume_token": resume_token(self.conn_id, self.user.pk, self.session.pk),
                "server_time": timezone.now().isoformat()}))
        finally:
            await self.member.release()

    async def _seq_behind(self, last_seq: int) -> bool:
        from config.realtime.transport import room_last_seq

        current = await db_call(room_last_seq)(self.room_key)
        return last_seq > current  # a client ahead of the server (e.g. restored DB) needs a snapshot

    async def _send_snapshot_held(self) -> None:
        snapshot = await db_call(self._build_snapshot)()
        snapshot["presence"] = await self._presence_snapshot()
        await self.reply(encode_frame("snapshot", snapshot))

    # --- helpers -------------------------------------------------------------------------------------
    async def _limit(self, action: str) -> None:
        verdict = await self.limiter.hit(f"u{self.user.pk}:{action}", self.limits[action])
        if not verdict.allowed:
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=round(verdict.retry_after, 2))

    async def _call(self, fn, consent: str | None = None, **kwargs):
        """Run one service in a worker thread with the auditlog actor set to this socket's user.

        The session row is read afresh (its status may have changed since connect)."""
        def run():
            session = LiveSession.objects.select_related("course").get(pk=self.session.pk)
            return fn(session=session, **kwargs)

        return await self._run(run, consent=consent)

    async def _run(self, fn, consent: str | None = None):
        """`_call` for work that loads what it needs itself. With `consent`, the COPPA gate is checked first,
        in the same worker thread: no query once the socket knows the answer (compliance/coppa/selectors.py)."""
        def run():
            if consent is not None:
                reason = coppa.consent_block_reason(self.user, consent, institution_id=self.session.institution_id)
                if reason:
                    raise FrameError(coppa.CONSENT_REQUIRED, reason, feature=consent)
            with set_actor(self.user):
                return fn()

        try:
            return await db_call(run)()
        except services.Conflict as exc:
            raise FrameError(ErrorCode.CONFLICT, str(exc)) from None

    def _user(self, user_id: int) -> User:
        user = selectors.users_visible_to(self.user).filter(pk=user_id).first()
        if user is None:
            raise FrameError(ErrorCode.NOT_FOUND, "No such person in this class.")
        return user

    async def _moderator_only(self) -> None:
        # Re-checked against the database on every privileged action, not only at connect.
        allowed = await db_call(selectors.can_moderate)(self.user, self.session)
        if not allowed:
            import logging

            logging.getLogger("aula.security").warning(
                "privileged action refused user=%s session=%s", self.user.pk, self.session.pk)
            raise FrameError(ErrorCode.FORBIDDEN, "Only the class's teachers can do that.")

    # --- handlers --------------------------------------------------------------------------------------
    async def on_resume(self, msg: Resume) -> None:
        await self._limit("resume")
        await self._replay(msg.last_seq)

    async def on_chat_send(self, msg: ChatSend) -> None:
        await self._limit("chat")
        message = await self._call(services.chat_message_post, consent=PersonalInfoFeature.CHAT, author=self.user,
                                   body=msg.body, client_ref=msg.ref or "")
        await self.ack(msg.ref, seq=message.seq, id=message.pk, status=message.status)

    async def on_chat_delete(self, msg: ChatDelete) -> None:
        await self._moderator_only()

        def run(session):
            message = ChatMessage.objects.filter(session=session, pk=msg.message_id).first()
            if message is None:
                raise FrameError(ErrorCode.NOT_FOUND, "No such message.")
            return services.chat_message_delete(message=message, actor=self.user, reason=msg.reason)

        await self._call(lambda session: run(session))
        await self.ack(msg.ref)

    async def on_chat_report(self, msg: ChatReport) -> None:
        """"Flag this message": it joins the moderation queue (one report per person and message)."""
        await self._limit("chat")
        from moderation.services import report_create

        await self._run(lambda: report_create(reporter=self.user, source="class_chat", object_id=msg.message_id,
                                              reason=msg.reason, room_id=self.session.pk))
        await self.ack(msg.ref, reported=msg.message_id)

    async def on_chat_clear(self, msg: ChatClear) -> None:
        await self._moderator_only()
        count = await self._call(services.chat_clear, actor=self.user, reason=msg.reason)
        await self.ack(msg.ref, deleted=count)

    async def on_poll_create(self, msg: PollCreate) -> None:
        await self._moderator_only()
        poll = await self._call(services.poll_create, actor=self.user, question=msg.question, kind=msg.kind,
                                options=msg.options, anonymous=msg.anonymous, quiz=msg.quiz, correct=msg.correct,
                                results=msg.results)
        await self.ack(msg.ref, poll_id=poll.pk)

    def _poll(self, session, poll_id: int) -> Poll:
        poll = Poll.objects.filter(session=session, pk=poll_id).select_related("session").first()
        if poll is None:
            raise FrameError(ErrorCode.NOT_FOUND, "No such poll.")
        return poll

    async def on_poll_answer(self, msg: PollAnswerMsg) -> None:
        await self._limit("poll_answer")
        try:
            # Written answers collect what a child types; choosing an option does not (COPPA gate on text only).
            _, created = await self._run(lambda: services.poll_answer(
                poll_id=msg.poll_id, session_id=self.session.pk, user=self.user, attempt_id=msg.attempt_id,
                positions=msg.positions, text=msg.text), consent=PersonalInfoFeature.FREE_TEXT if msg.text else None)
        except Poll.DoesNotExist:
            raise FrameError(ErrorCode.NOT_FOUND, "No such poll.") from None
        await self.ack(msg.ref, poll_id=msg.poll_id, duplicate=not created)
        if created:
            await _coalesced_results(msg.poll_id)

    async def on_poll_close(self, msg: PollRef) -> None:
        await self._moderator_only()
        await self._call(lambda session: services.poll_close(poll=self._poll(session, msg.poll_id), actor=self.user))
        await self.ack(msg.ref)

    async def on_poll_details(self, msg: PollRef) -> None:
        """Per-student answers of a quiz or named poll (teachers only; never for anonymous polls)."""
        await self._moderator_only()

        def run(session):
            poll = self._poll(session, msg.poll_id)
            if poll.anonymous:
                return {"poll_id": poll.pk, "anonymous": True, "answers": []}
            rows = list(PollAnswer.objects.filter(poll=poll).select_related("user").order_by("created_at"))
            audit.record_socket_access(self, rows, purpose="live.poll_details", role=self.role)
            return {"poll_id": poll.pk, "anonymous": False,
                    "answers": [{"user": events.person(a.user), "positions": a.option_positions, "text": a.text,
                                 "correct": a.is_correct} for a in rows]}

        data = await self._call(run)
        await self.reply(encode_frame("poll.details", {"ref": msg.ref, **data}))

    async def on_hand_raise(self, msg: Empty) -> None:
        await self._limit("hand")
        await self._call(services.hand_raise, user=self.user)
        await self.ack(msg.ref)

    async def on_hand_lower(self, msg: HandLower) -> None:
        await self._limit("hand")
        target = None
        if msg.user_id is not None and msg.user_id != self.user.pk:
            await self._moderator_only()
            target = await db_call(self._user)(msg.user_id)
        await self._call(services.hand_lower, actor=self.user, user=target)
        await self.ack(msg.ref)

    async def on_hand_lower_all(self, msg: Empty) -> None:
        await self._moderator_only()
        count = await self._call(services.hand_lower_all, actor=self.user)
        await self.ack(msg.ref, lowered=count)

    async def on_hand_call_next(self, msg: Empty) -> None:
        await self._moderator_only()
        hand = await self._call(services.hand_call_next, actor=self.user)
        await self.ack(msg.ref, user_id=hand.user_id if hand else None)

    async def on_control_lock(self, msg: FeatureLock) -> None:
        await self._moderator_only()
        target = await db_call(self._user)(msg.user_id) if msg.user_id else None
        await self._call(services.feature_lock, actor=self.user, feature=msg.feature, locked=msg.locked, user=target)
        await self.ack(msg.ref)

    async def on_control_remove(self, msg: Remove) -> None:
        await self._moderator_only()
        target = await db_call(self._user)(msg.user_id)
        await self._call(services.participant_remove, actor=self.user, user=target, reason=msg.reason)
        await self.ack(msg.ref)

    async def on_control_readmit(self, msg: UserRef) -> None:
        await self._moderator_only()
        target = await db_call(self._user)(msg.user_id)
        await self._call(services.participant_readmit, actor=self.user, user=target)
        await self.ack(msg.ref)

    async def on_control_screen_share(self, msg: ScreenShare) -> None:
        await self._moderator_only()
        target = await db_call(self._user)(msg.user_id)
        await self._call(services.screen_share_set, actor=self.user, user=target, allowed=msg.allowed)
        await self.ack(msg.ref)

    async def on_control_timer_start(self, msg: TimerStart) -> None:
        await self._moderator_only()
        await self._call(services.timer_start, actor=self.user, seconds=msg.seconds, label=msg.label)
        await self.ack(msg.ref)

    async def on_control_timer_stop(self, msg: Empty) -> None:
        await self._moderator_only()
        await self._call(services.timer_stop, actor=self.user)
        await self.ack(msg.ref)

    async def on_session_start(self, msg: Empty) -> None:
        await self._moderator_only()
        await self._call(services.session_start, actor=self.user)
        await self.ack(msg.ref)

    async def on_session_end(self, msg: Empty) -> None:
        await self._moderator_only()
        await self._call(services.session_end, actor=self.user)
        await self.ack(msg.ref)

    async def on_presence_state(self, msg: PresenceState) -> None:
        await self._limit("presence")
        await presence.tracker().set_state(self.conn_id, msg.state)
        await self.ack(msg.ref)


# --- shared whiteboard and notes (docs/collab.md) -------------------------------------------------------

DocKind = Literal["board", "notes"]
_B64_MAX = (4 * settings.AULA_COLLAB_MAX_UPDATE_BYTES) // 3 + 8


class CollabSync(Inbound):
    doc: DocKind
    sv: str = Field(max_length=1_000_000)
    update: str = Field(default="", max_length=_B64_MAX)


class CollabUpdateMsg(Inbound):
    doc: DocKind
    update: str = Field(min_length=4, max_length=_B64_MAX)


class _Point(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float = Field(ge=-1e6, le=1e6)
    y: float = Field(ge=-1e6, le=1e6)


class _View(_Point):
    zoom: float = Field(ge=0.05, le=20)


class _Range(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: str = Field(max_length=400)
    head: str = Field(max_length=400)


class AwarenessState(BaseModel):
    """What a participant shows the others: never their name (the server adds it from their account)."""

    model_config = ConfigDict(extra="forbid")
    client: int | None = Field(default=None, ge=0, le=2**53)
    page: str | None = Field(default=None, max_length=64)
    cursor: _Point | None = None
    view: _View | None = None
    selection: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=50)
    tool: str = Field(default="", max_length=20)
    presenting: bool = False
    range: _Range | None = None


class CollabAwareness(Inbound):
    doc: DocKind
    state: AwarenessState | None = None


class CollabConsumer(RoomConsumer):
    """`/ws/v1/sessions/<session_id>/collab/`: the session's whiteboard and notes (Yjs updates, cursors).

    Edit permission (board lock, per-student lock, removal, COPPA consent for writing) is checked on every
    update frame, from a per-process cache that lock changes refresh at once (classrooms/collab.py)."""

    connection_cap = CONNECTIONS_PER_USER
    cap_pool = "collab"
    max_message_bytes = _B64_MAX + 4096
    inbound = {"ping": Ping, "resume": Resume, "sync": CollabSync, "update": CollabUpdateMsg,
               "awareness": CollabAwareness}
    room = None
    _edit: dict[str, str | None] | None = None

    async def authorize(self) -> str:
        await _join_session(self)
        session = self.session
        self._updates = _Bucket(capacity=2 * settings.AULA_COLLAB_UPDATES_PER_SECOND,
                                per_second=settings.AULA_COLLAB_UPDATES_PER_SECOND)
        self._moves = _Bucket(capacity=60, per_second=30)
        return realtime.session_collab_room(session.institution_id, session.pk)

    still_authorized_many = LiveSessionConsumer.still_authorized_many

    @classmethod
    async def heartbeat_many(cls, consumers: list[CollabConsumer]) -> None:
        # Each re-check period: edit permissions afresh, in case a lock change's notice was lost (Redis away).
        await db_call(cls._consent_reasons)(consumers)  # one thread hop for the room, not one per socket
        rooms = {c.room for c in consumers if c.room is not None}
        for room in rooms:
            await room.refresh_edit()

    async def joined(self) -> None:
        self.member.user_id = self.user.pk
        self.member.on_control = self._on_control
        await db_call(self._consent_reasons)([self])
        self.room = await collab.room_open(self, self.session, self.room_key)
        await self.room.refresh_edit([self.user.pk])
        await self._send_snapshot()

    async def left(self) -> None:
        if self.room is not None:
            await collab.room_leave(self, self.room)

    async def _on_control(self, message: dict) -> None:
        await _close_on_control(self, message)

    _consent: str | None = None  # why a child may not write here (COPPA), refreshed each re-check period

    @staticmethod
    def _consent_reasons(consumers: list[CollabConsumer]) -> None:
        for c in consumers:
            c._consent = None if c.is_staff_role else coppa.consent_block_reason(
                c.user, PersonalInfoFeature.COLLAB, institution_id=c.session.institution_id)

    async def edit_changed(self, reasons: dict[str, str | None]) -> None:
        """The room computed this user's edit permission afresh: tell the socket what changed."""
        if self._consent:
            reasons = {kind: reason or self._consent for kind, reason in reasons.items()}
        previous, self._edit = self._edit, reasons
        if previous is None:
            return  # the snapshot carries the first answer
        for kind, reason in reasons.items():
            if previous.get(kind, "") != reason:
                await self.reply(encode_frame("edit", {"doc": kind, "allowed": reason is None, "reason": reason}))

    async def people_for(self, user_ids: set[int]) -> dict[str, dict]:
        people = await db_call(selectors.collab_people)(self.session, user_ids)
        return {str(uid): info for uid, info in people.items()}

    async def _send_snapshot(self) -> None:
        room = self.room
        clients = {kind: {str(k): v for k, v in d.clients.items()} for kind, d in room.docs.items()}
        ids = {v for c in clients.values() for v in c.values()} | {self.user.pk}
        people = await self.people_for(ids)
        edit = self._edit or {}
        await self.reply(encode_frame("snapshot", {
            "last_seq": 0,
            "server_time": timezone.now().isoformat(),
            "me": {"user_id": self.user.pk, "name": self.user.public_name, "role": self.role,
                   "color": selectors.person_color(self.user.pk)},
            "people": people,
            "clients": clients,
            "docs": {kind: {"sv": collab.b64encode(d.doc.get_state()),
                            "edit": {"allowed": edit.get(kind) is None, "reason": edit.get(kind)}}
                     for kind, d in room.docs.items()},
            "awareness": room.awareness_snapshot(),
            "limits": {"update_bytes": settings.AULA_COLLAB_MAX_UPDATE_BYTES,
                       "awareness_hz": settings.AULA_COLLAB_AWARENESS_HZ,
                       "check_seconds": settings.AULA_COLLAB_CHECK_SECONDS},
        }))

    # --- handlers --------------------------------------------------------------------------------------
    async def on_resume(self, msg: Resume) -> None:
        # Missed relays (a dropped backlog) are repaired by syncing: the client syncs both documents now.
        await self.reply(encode_frame("resume.done", {"server_time": timezone.now().isoformat()}))

    def _may_edit(self, kind: str) -> None:
        reason = (self._edit or {}).get(kind, "You cannot edit this yet.")
        if reason is not None:
            logger.info("collab edit refused user=%s session=%s doc=%s", self.user.pk, self.session.pk, kind)
            raise FrameError("locked", reason, doc=kind)

    async def _submit(self, kind: str, data: bytes) -> None:
        if not self._updates.take():
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=1)
        self._may_edit(kind)
        try:
            notices = await self.room.submit(self, kind, data)
        except collab.Refusal as refusal:
            self._refused(kind, refusal)
        for notice in notices:
            await self.reply(encode_frame("notice", notice))

    async def on_update(self, msg: CollabUpdateMsg) -> None:
        if not self._updates.take():
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=1)
        self._may_edit(msg.doc)
        try:
            stored, notices = await self.room.accept(self, msg.doc, collab.b64decode(msg.update))
        except collab.Refusal as refusal:
            self._refused(msg.doc, refusal)
        for notice in notices:
            await self.reply(encode_frame("notice", notice))
        asyncio.ensure_future(self._ack_when_stored(msg.ref, stored))

    async def _ack_when_stored(self, ref: str | None, stored: asyncio.Future) -> None:
        try:
            await stored
        except Exception:
            # Not stored (the database away): the client sends it again; applying it twice changes nothing.
            await self.reply(error_frame(ErrorCode.UNAVAILABLE, "Temporarily unavailable; try again.", ref=ref,
                                         retry_after=2))
            return
        await self.ack(ref)

    def _refused(self, kind: str, refusal: collab.Refusal):
        logger.warning("collab update refused user=%s session=%s doc=%s code=%s", self.user.pk, self.session.pk,
                       kind, refusal.code)
        raise FrameError(refusal.code, refusal.message, doc=kind, **refusal.details) from None

    async def on_sync(self, msg: CollabSync) -> None:
        try:
            sv = collab.b64decode(msg.sv)
            data = collab.b64decode(msg.update) if msg.update else b""
            if data:
                await self._submit(msg.doc, data)
            update, server_sv, behind = await self.room.diff(msg.doc, sv)
        except collab.Refusal as refusal:
            raise FrameError(refusal.code, refusal.message, doc=msg.doc) from None
        if behind:
            await stats_collab_resync(self.room_key)
        await self.ack(msg.ref, doc=msg.doc, update=collab.b64encode(update), sv=collab.b64encode(server_sv),
                       behind=behind)

    async def on_awareness(self, msg: CollabAwareness) -> None:
        if not self._moves.take():
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=1)
        state = None
        if msg.state is not None:
            state = msg.state.model_dump(exclude_none=True)
            if not self.is_staff_role:
                state["presenting"] = False  # only a teacher leads the class's view
            state.update(name=self.user.public_name, color=selectors.person_color(self.user.pk), role=self.role)
        self.room.awareness_set(msg.doc, self.user.pk, state)


async def stats_collab_resync(room_key: str) -> None:
    """A client's convergence check found it behind: counted (aula_collab_resyncs_total), never fatal."""
    try:
        await hub()._redis.incr(f"{settings.AULA_REDIS_KEY_PREFIX}:collab:resyncs")
    except Exception:
        logger.debug("collab resync not counted", exc_info=True)


def _query(scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))[:10])


_RESULTS_DELAY = 0.25


async def _coalesced_results(poll_id: int) -> None:
    """At most one results broadcast per poll per 250 ms across all processes (a Redis SET NX lease)."""
    redis_client = hub()._redis
    key = f"{settings.AULA_REDIS_KEY_PREFIX}:pollres:{poll_id}"
    if not await redis_client.set(key, "1", nx=True, px=int(_RESULTS_DELAY * 1000)):
        return

    async def later():
        await asyncio.sleep(_RESULTS_DELAY)

        def publish():
            poll = Poll.objects.filter(pk=poll_id).select_related("session").first()
            if poll is not None:
                services.poll_results_publish(poll=poll)

        await db_call(publish)()

    asyncio.ensure_future(later())
