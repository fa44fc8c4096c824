"""Stream chat as moderation sees it: the adapter (moderation/content.py), registered in StreamingConfig.ready().

Moderation has authorised the reviewer (channel moderators, the owner, platform trust & safety); these act
as the system. Timeouts and bans use the channel's own chat bans (StreamChatBan), so a sanction from the
queue and one from the watch page are the same thing.
"""

from __future__ import annotations

from config.realtime.transport import room_direct_publish
from moderation.content import ContentRef
from moderation.models import Source
from moderation.pipeline import Context
from streaming import services
from streaming.models import Stream, StreamChatMessage, StreamQuestion
from streaming.realtime import stream_room


class StreamChat:
    def _message(self, object_id: str) -> StreamChatMessage | None:
        if not str(object_id).isdigit():
            return None
        return StreamChatMessage.objects.select_related("stream").filter(pk=int(object_id)).first()

    def resolve(self, object_id: str, viewer=None) -> ContentRef | None:
        message = self._message(object_id)
        if message is None:
            return None  # streams are public: anyone watching may report what they saw
        ctx = Context(source=Source.STREAM_CHAT, channel_id=message.stream.channel_id, room_id=message.stream_id,
                      author_id=message.author_id)
        visible = message.status == StreamChatMessage.Status.VISIBLE and message.deleted_at is None
        return ContentRef(Source.STREAM_CHAT, str(message.pk), ctx, message.author_id, message.body, visible)

    def approve(self, object_id: str, actor) -> None:
        services.chat_held_release(message_id=int(object_id), actor=actor)

    def remove(self, object_id: str, actor, reason: str) -> None:
        message = self._message(object_id)
        if message is None:
            return
        if message.status == StreamChatMessage.Status.HELD:
            services.chat_held_reject(message_id=message.pk, actor=actor)
        else:
            services.chat_message_delete(message=message, actor=None)

    def restore(self, object_id: str, actor, text: str) -> None:
        services.chat_held_release(message_id=int(object_id), body=text, actor=actor)

    def censor(self, object_id: str, actor, text: str) -> None:
        services.chat_held_release(message_id=int(object_id), body=text, actor=actor)

    def _stream(self, ref: ContentRef) -> Stream:
        return Stream.objects.get(pk=ref.ctx.room_id)

    def restrict(self, *, user_id: int, ref: ContentRef, scope: str, until, actor, reason: str) -> None:
        from django.contrib.auth import get_user_model
        from django.utils import timezone

        minutes = None if until is None else max(1, round((until - timezone.now()).total_seconds() / 60))
        services.chat_user_restrict(stream=self._stream(ref), actor=None, user=get_user_model().objects.get(pk=user_id),
                                    minutes=minutes, reason=reason)

    def unrestrict(self, *, user_id: int, ref: ContentRef, scope: str, actor) -> None:
        from django.contrib.auth import get_user_model

        services.chat_user_unrestrict(stream=self._stream(ref), actor=None,
                                      user=get_user_model().objects.get(pk=user_id))

    def notify_author(self, ref: ContentRef, type_: str, data: dict) -> None:
        room_direct_publish(stream_room(ref.ctx.room_id), ref.author_id, type_, data)


class StreamQuestions(StreamChat):
    """Q&A questions: held ones are off the board until approved; removal dismisses."""

    def _question(self, object_id: str) -> StreamQuestion | None:
        if not str(object_id).isdigit():
            return None
        return StreamQuestion.objects.select_related("stream").filter(pk=int(object_id)).first()

    def resolve(self, object_id: str, viewer=None) -> ContentRef | None:
        question = self._question(object_id)
        if question is None:
            return None
        ctx = Context(source=Source.STREAM_QUESTION, channel_id=question.stream.channel_id,
                      room_id=question.stream_id, author_id=question.author_id)
        visible = question.status in (StreamQuestion.Status.OPEN, StreamQuestion.Status.ANSWERED)
        return ContentRef(Source.STREAM_QUESTION, str(question.pk), ctx, question.author_id, question.body, visible)

    def approve(self, object_id: str, actor) -> None:
        services.question_moderated(question_id=int(object_id), status=StreamQuestion.Status.OPEN)

    def remove(self, object_id: str, actor, reason: str) -> None:
        services.question_moderated(question_id=int(object_id), status=StreamQuestion.Status.DISMISSED)

    def restore(self, object_id: str, actor, text: str) -> None:
        services.question_moderated(question_id=int(object_id), status=StreamQuestion.Status.OPEN, body=text)

    def censor(self, object_id: str, actor, text: str) -> None:
        services.question_moderated(question_id=int(object_id), status=StreamQuestion.Status.OPEN, body=text)


def register() -> None:
    from moderation import content

    content.register(Source.STREAM_CHAT, StreamChat())
    content.register(Source.STREAM_QUESTION, StreamQuestions())
