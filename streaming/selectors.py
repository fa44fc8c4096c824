"""Reads and permission checks for streams: who a person is to a stream, what they may do, what a page shows."""

from __future__ import annotations

import datetime as dt
import enum

from django.db.models import IntegerField, Q, Value
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


def viewer_role(user, stream: Stream, roles: list[str] | None = None) -> ViewerRole:
    """The strongest role a person holds on the stream's channel. Site staff are not implicitly moderators.
    `roles`: the person's ChannelRole kinds when already read (stream_and_role), else one query."""
    if user is None or not user.is_authenticated or not user.is_active:
        return ViewerRole.ANONYMOUS
    if stream.channel.owner_id == user.pk:
        return ViewerRole.CREATOR
    if roles is None:
        roles = ChannelRole.objects.filter(channel_id=stream.channel_id, user=user).values_list("role", flat=True)
    roles = set(roles)
    if ChannelRole.Kind.MODERATOR in roles:
        return ViewerRole.MODERATOR
    if ChannelRole.Kind.MEMBER in roles:
        return ViewerRole.MEMBER
    return ViewerRole.VIEWER


def can_moderate(user, stream: Stream) -> bool:
    return viewer_role(user, stream).is_staff


def stream_for_watch(stream_id: int) -> Stream | None:
    return Stream.objects.select_related("channel").filter(pk=stream_id).first()


def streams_and_roles(items: list[tuple[int, object]]) -> list[tuple[Stream | None, ViewerRole | None]]:
    """For (stream id, user) pairs: each socket's stream and the person's role on it. Batched for a join
    storm (config/realtime/batching.py): two queries for the whole batch, whatever its size. Each pair gets
    its own copy of the stream row."""
    import copy

    streams = {s.pk: s for s in Stream.objects.select_related("channel").filter(pk__in={i for i, _ in items})}
    people = {u.pk for _, u in items if u is not None and u.is_authenticated and u.is_active}
    roles: dict[tuple[int, int], list[str]] = {}
    if people and streams:
        for channel_id, user_id, role in ChannelRole.objects.filter(
                channel_id__in={s.channel_id for s in streams.values()}, user_id__in=people).values_list(
                "channel_id", "user_id", "role"):
            roles.setdefault((channel_id, user_id), []).append(role)
    out = []
    for stream_id, user in items:
        stream = streams.get(stream_id)
        if stream is None:
            out.append((None, None))
            continue
        out.append((copy.copy(stream), viewer_role(user, stream, roles.get((stream.channel_id, user.pk), []))))
    return out


def chat_context(stream_id: int, user, client_ref: str = "", *, now: dt.datetime | None = None) -> Stream:
    """Everything posting a chat message reads, in one query (a chat at 10 messages a second in a room of
    thousands competes for the database threads with the fan-out): the stream and its channel, annotated
    with the author's channel roles (`viewer_roles`), whether a ban or timeout is active (`barred`), when they
    followed (`followed_at`) and the id of their message with this `client_ref` (`existing_id`, a retry)."""
    from django.contrib.postgres.expressions import ArraySubquery
    from django.db.models import Exists, OuterRef, Subquery

    now = now or timezone.now()
    on_channel = {"channel_id": OuterRef("channel_id"), "user_id": user.pk}
    qs = Stream.objects.select_related("channel").filter(pk=stream_id).annotate(
        viewer_roles=ArraySubquery(ChannelRole.objects.filter(**on_channel).values("role")),
        barred=Exists(StreamChatBan.objects.filter(**on_channel).filter(Q(until__isnull=True) | Q(until__gt=now))),
        followed_at=Subquery(Follow.objects.filter(**on_channel).values("created_at")[:1]),
        existing_id=Subquery(StreamChatMessage.objects.filter(stream_id=OuterRef("pk"), author_id=user.pk,
                                                              client_ref=client_ref).values("pk")[:1])
        if client_ref else Value(None, output_field=IntegerField()),
    )
    return qs.get()


def personal_parts(items: list[tuple[int, object, list[int], bool, bool]]) -> list[dict]:
    """Signed-in viewers' own parts of a stream snapshot, for (stream id, user, open poll ids, is staff,
    has questions) tuples, batched: at most one query per kind for the whole batch, and none for a kind no
    one in it needs. Each dict: mine {poll id: choice}, own_held, held (staff only, else None), my_upvotes."""
    from streaming.models import StreamQuestionVote

    users = {u.pk for _, u, _, _, _ in items}
    polls = {p for _, _, ids, _, _ in items for p in ids}
    votes: dict[int, dict[int, int]] = {}
    if polls:
        for poll_id, user_id, choice in StreamPollVote.objects.filter(poll_id__in=polls, user_id__in=users) \
                .values_list("poll_id", "user_id", "choice"):
            votes.setdefault(user_id, {})[poll_id] = choice
    held: dict[tuple[int, int], list[StreamChatMessage]] = {}
    for m in (StreamChatMessage.objects.filter(stream_id__in={i[0] for i in items}, author_id__in=users,
                                               status=StreamChatMessage.Status.HELD)
              .select_related("author").order_by("created_at")):
        mine = held.setdefault((m.stream_id, m.author_id), [])
        if len(mine) < 20:
            mine.append(m)
    queues = {sid: chat_held_queue(Stream(pk=sid)) for sid in {i[0] for i in items if i[3]}}
    upvotes: dict[tuple[int, int], list[int]] = {}
    asking = {i[0] for i in items if i[4]}
    if asking:
        for stream_id, user_id, question_id in StreamQuestionVote.objects.filter(
                question__stream_id__in=asking, user_id__in=users).values_list(
                "question__stream_id", "user_id", "question_id"):
            upvotes.setdefault((stream_id, user_id), []).append(question_id)
    return [{"mine": {p: c for p, c in votes.get(user.pk, {}).items() if p in set(poll_ids)},
             "own_held": held.get((stream_id, user.pk), []),
             "held": queues[stream_id] if staff else None,
             "my_upvotes": upvotes.get((stream_id, user.pk), []) if questions else []}
            for stream_id, user, poll_ids, staff, questions in items]


def watchable(stream: Stream) -> bool:
    """Anyone may open a scheduled or live stream; an ended one shows its recording (no socket needed)."""
    return stream.status in {Stream.Status.SCHEDULED, Stream.Status.LIVE}


def chat_bar(stream: Stream, user, *, now: dt.datetime | None = None) -> StreamChatBan | None:
    """An active ban or timeout of this person on the stream's channel, if any."""
    now = now or timezone.now()
    return (StreamChatBan.objects.filter(channel_id=stream.channel_id, user=user)
            .filter(Q(until__isnull=True) | Q(until__gt=now)).first())


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


def questions_board(stream: Stream, limit: int = 100) -> list[StreamQuestion]:
    """Open questions first, then by upvotes (most first), then oldest first."""
    from django.db.models import Case, IntegerField, Value, When

    open_first = Case(When(status=StreamQuestion.Status.OPEN, then=Value(0)), default=Value(1),
                      output_field=IntegerField())
    return list(StreamQuestion.objects.filter(stream=stream)
                .exclude(status__in=[StreamQuestion.Status.DISMISSED, StreamQuestion.Status.HELD])
                .select_related("author").order_by(open_first, "-upvotes", "created_at")[:limit])
