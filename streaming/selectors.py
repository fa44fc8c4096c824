"""Reads and permission checks for streams: who a person is to a stream, what they may do, what a page shows."""

from __future__ import annotations

import datetime as dt
import enum

from django.db.models import Q
from django.utils import timezone

from streaming.models import (
    ChannelRole,
    Follow,
    Stream,
    StreamChatBan,
    StreamChatMessage,
    StreamPoll,
    StreamPollVote,
    StreamQuestion,
)


class ViewerRole(enum.StrEnum):
    ANONYMOUS = "anonymous"  # may watch and receive everything public; no chat, reactions or votes
    VIEWER = "viewer"  # signed in
    MEMBER = "member"  # ChannelRole member (subscriber)
    MODERATOR = "moderator"  # ChannelRole moderator
    CREATOR = "creator"  # the channel's owner

    @property
    def is_staff(self) -> bool:
        return self in {ViewerRole.MODERATOR, ViewerRole.CREATOR}

    @property
    def signed_in(self) -> bool:
        return self != ViewerRole.ANONYMOUS


STAFF_ROLES = {ViewerRole.MODERATOR, ViewerRole.CREATOR}


def viewer_role(user, stream: Stream) -> ViewerRole:
    """The strongest role a person holds on the stream's channel. Site staff are not implicitly moderators."""
    if user is None or not user.is_authenticated or not user.is_active:
        return ViewerRole.ANONYMOUS
    if stream.channel.owner_id == user.pk:
        return ViewerRole.CREATOR
    roles = set(ChannelRole.objects.filter(channel_id=stream.channel_id, user=user).values_list("role", flat=True))
    if ChannelRole.Kind.MODERATOR in roles:
        return ViewerRole.MODERATOR
    if ChannelRole.Kind.MEMBER in roles:
        return ViewerRole.MEMBER
    return ViewerRole.VIEWER


def can_moderate(user, stream: Stream) -> bool:
    return viewer_role(user, stream).is_staff


def stream_for_watch(stream_id: int) -> Stream | None:
    return Stream.objects.select_related("channel").filter(pk=stream_id).first()


def watchable(stream: Stream) -> bool:
    """Anyone may open a scheduled or live stream; an ended one shows its recording (no socket needed)."""
    return stream.status in {Stream.Status.SCHEDULED, Stream.Status.LIVE}


def chat_bar(stream: Stream, user, *, now: dt.datetime | None = None) -> StreamChatBan | None:
    """An active ban or timeout of this person on the stream's channel, if any."""
    now = now or timezone.now()
    return (StreamChatBan.objects.filter(channel_id=stream.channel_id, user=user)
            .filter(Q(until__isnull=True) | Q(until__gt=now)).first())


def follow_age_minutes(stream: Stream, user, *, now: dt.datetime | None = None) -> float | None:
    follow = Follow.objects.filter(channel_id=stream.channel_id, user=user).only("created_at").first()
    if follow is None:
        return None
    return ((now or timezone.now()) - follow.created_at).total_seconds() / 60


def chat_recent(stream: Stream, limit: int = 50) -> list[StreamChatMessage]:
    """The last visible messages, oldest first (deleted ones are blanked by the event builder)."""
    rows = list(StreamChatMessage.objects.filter(stream=stream, status=StreamChatMessage.Status.VISIBLE)
                .select_related("author").order_by("-cseq")[:limit])
    return rows[::-1]


def chat_since(stream: Stream, after_cseq: int, limit: int) -> list[StreamChatMessage]:
    return list(StreamChatMessage.objects.filter(stream=stream, status=StreamChatMessage.Status.VISIBLE,
                                                 cseq__gt=after_cseq).select_related("author").order_by("cseq")[:limit])


def chat_held_queue(stream: Stream, limit: int = 200) -> list[StreamChatMessage]:
    return list(StreamChatMessage.objects.filter(stream=stream, status=StreamChatMessage.Status.HELD)
                .select_related("author").order_by("created_at")[:limit])


def own_held(stream: Stream, user, limit: int = 20) -> list[StreamChatMessage]:
    return list(StreamChatMessage.objects.filter(stream=stream, author=user, status=StreamChatMessage.Status.HELD)
                .select_related("author").order_by("created_at")[:limit])


def polls_current(stream: Stream, limit: int = 5) -> list[StreamPoll]:
    return list(StreamPoll.objects.filter(stream=stream).order_by("-created_at")[:limit])


def poll_counts(poll: StreamPoll) -> list[int]:
    counts = [0] * len(poll.options)
    for choice, n in _vote_counts(poll):
        if 0 <= choice < len(counts):
            counts[choice] = n
    return counts


def _vote_counts(poll: StreamPoll):
    from django.db.models import Count

    return StreamPollVote.objects.filter(poll=poll).values_list("choice").annotate(n=Count("id")).order_by()


def own_votes(polls: list[StreamPoll] | list[int], user) -> dict[int, int]:
    """{poll id: choice} of the user's votes in these polls (objects or ids)."""
    if user is None or not user.is_authenticated or not polls:
        return {}
    return dict(StreamPollVote.objects.filter(poll__in=polls, user=user).values_list("poll_id", "choice"))


def questions_board(stream: Stream, limit: int = 100) -> list[StreamQuestion]:
    """Open questions first, then by upvotes (most first), then oldest first."""
    from django.db.models import Case, IntegerField, Value, When

    open_first = Case(When(status=StreamQuestion.Status.OPEN, then=Value(0)), default=Value(1),
                      output_field=IntegerField())
    return list(StreamQuestion.objects.filter(stream=stream).exclude(status=StreamQuestion.Status.DISMISSED)
                .select_related("author").order_by(open_first, "-upvotes", "created_at")[:limit])


def own_upvotes(stream: Stream, user) -> list[int]:
    if user is None or not user.is_authenticated:
        return []
    from streaming.models import StreamQuestionVote

    return list(StreamQuestionVote.objects.filter(question__stream=stream, user=user)
                .values_list("question_id", flat=True))
