"""Class content as moderation sees it: the adapters (moderation/content.py) for class chat and poll text.

Registered in ClassroomsConfig.ready(). Moderation has authorised the reviewer; these act as the system.
"""

from __future__ import annotations

from classrooms import events, realtime, selectors, services
from classrooms.models import ChatMessage, LiveSession, PollAnswer
from config.realtime.transport import room_direct_publish
from moderation.content import ContentRef
from moderation.models import Source
from moderation.pipeline import Context


def _context(session: LiveSession, source: str, author_id: int) -> Context:
    return Context(source=source, institution_id=session.institution_id, course_id=session.course_id,
                   room_id=session.pk, author_id=author_id, minors=session.status == LiveSession.Status.LIVE)


def _can_see(viewer, session: LiveSession) -> bool:
    if viewer is None:
        return True
    return selectors.enrollment_role(viewer, session.course_id) is not None or selectors.can_moderate(viewer, session)


class ClassChat:
    def _message(self, object_id: str) -> ChatMessage | None:
        if not str(object_id).isdigit():
            return None
        return ChatMessage.objects.select_related("session").filter(pk=int(object_id)).first()

    def resolve(self, object_id: str, viewer=None) -> ContentRef | None:
        message = self._message(object_id)
        if message is None or not _can_see(viewer, message.session):
            return None
        visible = message.status == ChatMessage.Status.VISIBLE and message.deleted_at is None
        return ContentRef(Source.CLASS_CHAT, str(message.pk), _context(message.session, Source.CLASS_CHAT,
                                                                         message.author_id),
                          message.author_id, message.body, visible)

    def approve(self, object_id: str, actor) -> None:
        message = services.chat_message_release(message_id=int(object_id))
        if message is not None:
            self._tell(message, "chat.reviewed", events.chat_reviewed(message))

    def remove(self, object_id: str, actor, reason: str) -> None:
        message = services.chat_message_withdraw(message_id=int(object_id), actor=actor, reason=reason)
        if message is not None and message.status == ChatMessage.Status.REJECTED:
            self._tell(message, "chat.reviewed", events.chat_reviewed(message))

    def restore(self, object_id: str, actor, text: str) -> None:
        services.chat_message_release(message_id=int(object_id), body=text)

    def censor(self, object_id: str, actor, text: str) -> None:
        message = services.chat_message_release(message_id=int(object_id), body=text)
        if message is not None:
            self._tell(message, "chat.reviewed", events.chat_reviewed(message))

    def restrict(self, **kwargs) -> None:
        """Class rooms read moderation's sanctions themselves (services._require_unsanctioned)."""

    def unrestrict(self, **kwargs) -> None:
        """As for restrict: nothing of the class's own to undo."""

    def _tell(self, message: ChatMessage, type_: str, data: dict) -> None:
        session = message.session
        room_direct_publish(realtime.session_room(session.institution_id, session.pk), message.author_id, type_,
                            data)

    def notify_author(self, ref: ContentRef, type_: str, data: dict) -> None:
        if ref.ctx.room_id:
            room_direct_publish(realtime.session_room(ref.ctx.institution_id, ref.ctx.room_id), ref.author_id,
                                type_, data)


class PollText(ClassChat):
    """Open-text poll answers: a held or removed answer still counts as an answer; its text is hidden from
    the results until approved."""

    def _answer(self, object_id: str) -> PollAnswer | None:
        if not str(object_id).isdigit():
            return None
        return PollAnswer.objects.select_related("poll__session").filter(pk=int(object_id)).first()

    def resolve(self, object_id: str, viewer=None) -> ContentRef | None:
        answer = self._answer(object_id)
        if answer is None or answer.user_id is None or not _can_see(viewer, answer.poll.session):
            return None  # anonymous answers have no author to moderate; the teacher removes the text
        return ContentRef(Source.POLL_TEXT, str(answer.pk), _context(answer.poll.session, Source.POLL_TEXT,
                                                                       answer.user_id),
                          answer.user_id, answer.text, not answer.text_hidden)

    def _set(self, object_id: str, hidden: bool, text: str | None = None) -> None:
        services.poll_answer_text_set(answer_id=int(object_id), hidden=hidden, text=text)

    def approve(self, object_id: str, actor) -> None:
        self._set(object_id, False)

    def remove(self, object_id: str, actor, reason: str) -> None:
        self._set(object_id, True)

    def restore(self, object_id: str, actor, text: str) -> None:
        self._set(object_id, False, text)

    def censor(self, object_id: str, actor, text: str) -> None:
        self._set(object_id, False, text)


class DisplayName(ClassChat):
    """A person's chosen name (object id: the user's id). Removal resets it; it is shown everywhere they are."""

    def resolve(self, object_id: str, viewer=None) -> ContentRef | None:
        from classrooms.models import User

        user = User.objects.filter(pk=int(object_id)).first() if str(object_id).isdigit() else None
        if user is None or not user.display_name:
            return None
        ids = selectors.institution_ids_for(user)
        ctx = Context(source=Source.DISPLAY_NAME, institution_id=min(ids) if ids else None, author_id=user.pk)
        return ContentRef(Source.DISPLAY_NAME, str(user.pk), ctx, user.pk, user.display_name, True)

    def approve(self, object_id: str, actor) -> None:
        """Already shown: nothing to release."""

    def remove(self, object_id: str, actor, reason: str) -> None:
        services.display_name_moderated(user_id=int(object_id), name="")

    def restore(self, object_id: str, actor, text: str) -> None:
        services.display_name_moderated(user_id=int(object_id), name=text)

    def censor(self, object_id: str, actor, text: str) -> None:
        services.display_name_moderated(user_id=int(object_id), name=text)

    def notify_author(self, ref: ContentRef, type_: str, data: dict) -> None:
        """Seen on the person's moderation notices page (no room to reach them in)."""


def register() -> None:
    from moderation import content

    content.register(Source.CLASS_CHAT, ClassChat())
    content.register(Source.POLL_TEXT, PollText())
    content.register(Source.DISPLAY_NAME, DisplayName())
