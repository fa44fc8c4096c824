"""WebSocket adapters for exams: the student's attempt socket and the teacher's live proctor board."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Literal

from auditlog.context import set_actor
from django.utils import timezone
from pydantic import Field

from classrooms.selectors import enrollment_role
from compliance import audit
from config.realtime import presence
from config.realtime.consumer import FrameError, Refused, RoomConsumer
from config.realtime.protocol import CloseCode, ErrorCode, Inbound, Ping
from config.realtime.ratelimit import Limit, LocalLimit
from config.realtime.transport import db_call, encode_frame, publish_frame, room_last_seq
from exams import events, realtime, selectors, services
from exams.models import Attempt, Exam, Question

logger = logging.getLogger("aula.exams")
SAVE_LIMIT = Limit(60, 10)
# One save limit per attempt and process, shared by the attempt's sockets here (tabs, reconnects): more
# sockets never buy more saves. [limit, sockets using it]; dropped with the attempt's last local socket.
_save_limits: dict[int, list] = {}


def _save_limit_acquire(attempt_id: int) -> LocalLimit:
    entry = _save_limits.setdefault(attempt_id, [LocalLimit(SAVE_LIMIT), 0])
    entry[1] += 1
    return entry[0]


def _save_limit_release(attempt_id: int) -> None:
    entry = _save_limits.get(attempt_id)
    if entry is not None:
        entry[1] -= 1
        if entry[1] <= 0:
            del _save_limits[attempt_id]


class AnswerSave(Inbound):
    question_id: int
    value: Any = None
    version: int = Field(ge=1)
    client_time: dt.datetime | None = None


class AttemptEventMsg(Inbound):
    kind: Literal["viewed", "flagged", "unflagged", "focus_lost", "focus_regained"]
    question_id: int | None = None
    duration_ms: int | None = Field(default=None, ge=0, le=86_400_000)
    client_time: dt.datetime | None = None


class Submit(Inbound):
    client_time: dt.datetime | None = None


class TimeSync(Inbound):
    client_time: dt.datetime | None = None


def _audience_self(room_key: str, count: int) -> list[str]:
    return [room_key]


class AttemptConsumer(RoomConsumer):
    """`/ws/v1/attempts/<attempt_id>/`: the student's own attempt (every other id looks missing)."""

    inbound = {"ping": Ping, "answer.save": AnswerSave, "attempt.event": AttemptEventMsg,
               "attempt.submit": Submit, "time.sync": TimeSync}

    @db_call
    def _load(self, attempt_id: int):
        attempt = selectors.own_attempt(self.user, attempt_id)
        return services.attempt_touch(attempt) if attempt is not None else None

    async def authorize(self) -> str:
        attempt = await self._load(self.scope["url_route"]["kwargs"]["attempt_id"])
        if attempt is None:
            logger.warning("attempt socket refused: not the user's attempt user=%s", self.user.pk)
            raise Refused(CloseCode.NOT_FOUND, "no such attempt")
        self.attempt = attempt
        self.conn_id = f"{attempt.pk}-{time.time_ns()}"
        self.save_limit = _save_limit_acquire(attempt.pk)  # in memory, per attempt (no Redis round trip)
        return realtime.attempt_room(attempt.institution_id, attempt.pk)

    def still_authorized(self) -> CloseCode | None:
        return self.still_authorized_many([self]).get(self)

    @property
    def recheck_group(self) -> str:
        # One socket per attempt room: re-check an exam's attempt sockets of this process together.
        return f"exam:{self.attempt.exam_id}"

    @classmethod
    def still_authorized_many(cls, consumers: list[AttemptConsumer]) -> dict[AttemptConsumer, CloseCode]:
        owned = selectors.attempts_still_owned([(c.attempt.pk, c.user.pk) for c in consumers])
        return {c: CloseCode.FORBIDDEN for c in consumers if c.attempt.pk not in owned}

    async def joined(self) -> None:
        tracker = presence.tracker()
        await tracker.track(self.room_key, self.conn_id,
                            {"user_id": self.user.pk, "name": self.user.public_name, "role": "student",
                             "state": "active"}, _audience_self)
        count = await tracker.connection_count(self.room_key)  # tabs, not people: it is one student
        self.member.hold()
        try:
            await self.reply(encode_frame("snapshot", await db_call(self._snapshot)()))
        finally:
            await self.member.release()
        if count > 1:
            await self._event("second_tab", {"tabs": count})
            await self.reply(encode_frame("attempt.second_tab", {"tabs": count}))
        await self._proctor_connection(True)

    async def left(self) -> None:
        _save_limit_release(self.attempt.pk)
        await presence.tracker().untrack(self.conn_id)
        if self.attempt.is_open:
            try:
                await self._event("disconnected", {})
            except Exception as exc:  # the attempt closed meanwhile, or the database is away
                logger.info("disconnect not recorded for attempt %s: %s", self.attempt.pk, type(exc).__name__)
        await self._proctor_connection(False)

    async def _proctor_connection(self, connected: bool) -> None:
        tabs = await presence.tracker().connection_count(self.room_key)
        frame = encode_frame("attempt.connection", {"attempt_id": self.attempt.pk, "connected": tabs > 0,
                                                    "tabs": tabs, "at": timezone.now().isoformat()})
        await db_call(publish_frame)(
            realtime.proctor_room(self.attempt.institution_id, self.attempt.exam_id), frame)

    def _snapshot(self) -> dict:
        attempt = Attempt.objects.select_related("exam").get(pk=self.attempt.pk)
        questions = {q.pk: q for q in Question.objects.filter(pk__in=[i["question"] for i in attempt.layout])}
        layout = attempt.layout
        return {
            "furthest": services.furthest_position(attempt) if attempt.exam.sequential else None,
            "last_seq": room_last_seq(self.room_key),
            "server_time": timezone.now().isoformat(),
            "attempt": events.attempt_status(attempt),
            "exam": {"id": attempt.exam_id, "title": attempt.exam.title, "sequential": attempt.exam.sequential,
                     "instructions": attempt.exam.instructions},
            "questions": [events.question_for_student(questions[i["question"]], i) for i in layout]
            if attempt.state in (Attempt.State.IN_PROGRESS, Attempt.State.OVERDUE) else [],
            "answers": {str(k): v for k, v in selectors.attempt_answers(attempt).items()},
        }

    async def _run(self, fn, *, health_check: bool = True, **kwargs):
        def run():
            with set_actor(self.user):
                return fn(**kwargs)

        try:
            return await db_call(run, health_check=health_check)()
        except services.AttemptClosed as exc:
            raise FrameError("attempt_closed", str(exc)) from None

    async def _event(self, kind: str, data: dict, client_time=None) -> None:
        await self._run(services.attempt_event, attempt_id=self.attempt.pk, student=self.user, kind=kind, data=data,
                        client_time=client_time)

    async def on_answer_save(self, msg: AnswerSave) -> None:
        verdict = self.save_limit.hit()
        if not verdict.allowed:
            raise FrameError(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=round(verdict.retry_after, 2))
        # No health-check round trip first (transport.db_call): a dead connection fails the save, which is
        # refused as unavailable and sent again by the client.
        answer, applied = await self._run(services.answer_save, health_check=False, attempt_id=self.attempt.pk,
                                          student=self.user, question_id=msg.question_id, value=msg.value,
                                          version=msg.version, client_time=msg.client_time)
        # The proctor board's answered count is sent by the service, only when a save changes it.
        await self.ack(msg.ref, question_id=msg.question_id, version=answer.version, applied=applied,
                       saved_at=answer.saved_at.isoformat())

    async def on_attempt_event(self, msg: AttemptEventMsg) -> None:
        data = {k: v for k, v in {"question": msg.question_id, "duration_ms": msg.duration_ms}.items() if v is not None}
        await self._event(msg.kind, data, msg.client_time)
        await self.ack(msg.ref)

    async def on_attempt_submit(self, msg: Submit) -> None:
        attempt = await self._run(services.attempt_submit, attempt_id=self.attempt.pk, student=self.user,
                                  client_time=msg.client_time)
        self.attempt = attempt
        await self.ack(msg.ref, state=attempt.state, finished_at=attempt.finished_at.isoformat()
                       if attempt.finished_at else None)

    async def on_time_sync(self, msg: TimeSync) -> None:
        attempt = await db_call(lambda: services.attempt_finalize(attempt_id=self.attempt.pk))()
        await self.reply(encode_frame("time", {"ref": msg.ref, "server_time": timezone.now().isoformat(),
                                               "deadline": events._iso(attempt.deadline),
                                               "grace_until": events._iso(attempt.grace_until),
                                               "state": attempt.state}))


class ExtraTime(Inbound):
    attempt_id: int
    minutes: int = Field(ge=1, le=600)


class ProctorConsumer(RoomConsumer):
    """`/ws/v1/exams/<exam_id>/proctor/`: the live proctor board for the exam's teachers. The board's
    snapshot (every student's attempt) is a recorded FERPA read, one insert per join."""

    ferpa_reads = ("exams.Attempt",)

    inbound = {"ping": Ping, "extra_time": ExtraTime}

    @db_call
    def _load(self, exam_id: int):
        exam = selectors.exams_for(self.user).filter(pk=exam_id).first()
        return exam, exam is not None and selectors.can_proctor(self.user, exam)

    async def authorize(self) -> str:
        exam, allowed = await self._load(self.scope["url_route"]["kwargs"]["exam_id"])
        if exam is None:
            raise Refused(CloseCode.NOT_FOUND, "no such exam")
        if not allowed:
            raise Refused(CloseCode.FORBIDDEN, "not a teacher of this course")
        self.exam = exam
        return realtime.proctor_room(exam.institution_id, exam.pk)

    def still_authorized(self) -> CloseCode | None:
        exam = Exam.objects.filter(pk=self.exam.pk).select_related("course").first()
        return None if exam and selectors.can_proctor(self.user, exam) else CloseCode.FORBIDDEN

    async def joined(self) -> None:
        rows = await db_call(self._board_rows)()
        online: dict[str, int] = {}
        tracker = presence.tracker()
        for row in rows:
            online[str(row["attempt_id"])] = await tracker.connection_count(
                realtime.attempt_room(self.exam.institution_id, row["attempt_id"]))
        await self.reply(encode_frame("snapshot", {"server_time": timezone.now().isoformat(), "attempts": rows,
                                                   "online": online,
                                                   "warnings": await db_call(
                                                       services.close_cut_warnings)(self.exam)}))

    def _board_rows(self) -> list[dict]:
        rows = selectors.proctor_rows(self.exam)
        audit.record_socket_access(
            self, [Attempt(pk=r["attempt_id"], student_id=r["student"]["id"], institution_id=self.exam.institution_id)
                   for r in rows], purpose="exam.proctor_board", role=enrollment_role(self.user, self.exam.course_id))
        return rows

    async def on_extra_time(self, msg: ExtraTime) -> None:
        def run():
            attempt = Attempt.objects.filter(exam=self.exam, pk=msg.attempt_id).first()
            if attempt is None:
                raise FrameError(ErrorCode.NOT_FOUND, "No such attempt.")
            with set_actor(self.user):
                return services.extra_time_grant(attempt_id=attempt.pk, actor=self.user, minutes=msg.minutes)

        try:
            attempt = await db_call(run)()
        except services.AttemptClosed as exc:
            raise FrameError("attempt_closed", str(exc)) from None
        await self.ack(msg.ref, deadline=attempt.deadline.isoformat())
