"""WebSocket adapters for live sessions: validate, authorize through selectors, call one service, reply."""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.utils import timezone

from classrooms import realtime, selectors
from classrooms.models import LiveSession
from config.realtime.consumer import Refused, RoomConsumer
from config.realtime.protocol import CloseCode
from config.realtime.transport import encode_frame, room_last_seq


class LiveSessionConsumer(RoomConsumer):
    """`/ws/v1/sessions/<session_id>/`: one socket per open tab of a live session."""

    @database_sync_to_async
    def _load(self, session_id: int):
        session = selectors.live_sessions_for(self.user).filter(pk=session_id).first()
        if session is None:
            return None, None, 0
        role = selectors.enrollment_role(self.user, session.course)
        return session, role, room_last_seq(realtime.session_room(session.institution_id, session.pk))

    async def authorize(self) -> str:
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        session, role, last_seq = await self._load(session_id)
        if session is None:
            # Another school's session looks exactly like a missing one.
            raise Refused(CloseCode.NOT_FOUND, "no such session for this user")
        if role is None:
            raise Refused(CloseCode.FORBIDDEN, "not enrolled in this course")
        if session.status == LiveSession.Status.ENDED:
            raise Refused(CloseCode.ENDED, "session ended")
        self.session, self.role, self._last_seq = session, role, last_seq
        return realtime.session_room(session.institution_id, session.pk)

    def still_authorized(self) -> CloseCode | None:
        from classrooms.selectors import forget_scope

        forget_scope(self.user)
        self.user.refresh_from_db(fields=["is_active"])
        session = LiveSession.objects.filter(pk=self.session.pk).only("status", "course_id").first()
        if session is None or not selectors.can_join_session(self.user, session):
            return CloseCode.FORBIDDEN
        if session.status == LiveSession.Status.ENDED:
            return CloseCode.ENDED
        return None

    async def joined(self) -> None:
        await self.reply(encode_frame("session.welcome", {
            "session": {"id": self.session.pk, "title": self.session.title, "status": self.session.status},
            "you": {"id": self.user.pk, "name": self.user.public_name, "role": self.role},
            "last_seq": self._last_seq,
            "server_time": timezone.now().isoformat(),
        }))
