"""Writes for channels and streams: lifecycle, chat and its moderation, polls, Q&A.

Every change is one function here, called by the socket consumer, the admin and the pages alike. Room events
are persisted then published on commit (config/realtime/transport.py). Chat has its own order (`cseq`, one
counter per stream) and travels on the stream's chat feed, so a sampled flood never looks like lost events to
clients (docs/protocol.md, "Streams").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from analytics import buffer as analytics
from classrooms.services import upsert
from config.realtime.transport import (
    _redis,
    encode_frame,
    publish_frame,
    room_direct_publish,
    room_event_emit,
    room_next_seq,
    room_signal_publish,
)
from streaming import events, live, selectors
from streaming.models import (
    Channel,
    ChannelRole,
    Stream,
    StreamChatBan,
    StreamChatMessage,
    StreamPoll,
    StreamPollVote,
    StreamQuestion,
    StreamQuestionVote,
)
from streaming.realtime import stream_chat_room, stream_room, stream_staff_room
from streaming.selectors import ViewerRole
from streaming.signals import stream_ended, stream_went_live

CHAT_MAX_CHARS = 300
QUESTION_MAX_CHARS = 500
LOCKDOWN_SLOW_SECONDS = 30
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
# Emote codes such as :fire: or :clap:, counted as emotes in emote-only mode.
_EMOTE_CODE = re.compile(r":[a-z0-9_+-]{1,32}:")


class Conflict(Exception):
    """The action does not fit the current state (ending an ended stream, voting on a closed poll)."""


class SlowMode(Exception):
    def __init__(self, retry_after: float):
        super().__init__("Slow mode is on.")
        self.retry_after = retry_after


# --- channels and streams -------------------------------------------------------------------------------

def channel_upsert(*, owner, slug: str, title: str, description: str = "") -> Channel:
    return upsert(Channel, slug=slug, defaults={"owner": owner, "title": title, "description": description})


def channel_role_grant(*, channel: Channel, user, role: str) -> ChannelRole:
    grant, _ = ChannelRole.objects.get_or_create(channel=channel, user=user, role=role)
    return grant


def stream_upsert(*, channel: Channel, title: str, scheduled_start: dt.datetime | None = None,
                  player_url: str = "") -> Stream:
    return upsert(Stream, channel=channel, title=title,
                  defaults={"scheduled_start": scheduled_start, "player_url": player_url})


def _require_staff(actor, stream: Stream) -> None:
    """`actor` None is the system (admin action already authorised, a task)."""
    if actor is not None and not selectors.can_moderate(actor, stream):
        raise PermissionDenied("Only the creator and the channel's moderators can do that.")


def _locked(stream: Stream) -> Stream:
    return Stream.objects.select_for_update().select_related("channel").get(pk=stream.pk)


def _emit(stream: Stream, type_: str, data: dict) -> None:
    room_event_emit(stream_room(stream.pk), type_, data)


def stream_schedule(*, stream: Stream, actor, scheduled_start: dt.datetime) -> Stream:
    _require_staff(actor, stream)
    with transaction.atomic():
        stream = _locked(stream)
        if stream.status != Stream.Status.SCHEDULED:
            raise Conflict("Only a stream that has not started can be rescheduled.")
        stream.scheduled_start = scheduled_start
        stream.save(update_fields=["scheduled_start"])
        _emit(stream, "stream.status", {**events.stream_status(stream),
                                        "scheduled_start": events._iso(scheduled_start)})
    return stream


def stream_go_live(*, stream: Stream, actor) -> Stream:
    _require_staff(actor, stream)
    with transaction.atomic():
        stream = _locked(stream)
        if stream.status != Stream.Status.SCHEDULED:
            raise Conflict("Only a scheduled stream can go live.")
        stream.status, stream.started_at = Stream.Status.LIVE, timezone.now()
        stream.save(update_fields=["status", "started_at"])
        _emit(stream, "stream.status", events.stream_status(stream))
        transaction.on_commit(lambda: stream_went_live.send(sender=Stream, stream=stream))
    return stream


def stream_recording_takedown(*, stream_id: int, disabled_at: dt.datetime | None, reason: str = "") -> bool:
    """Disable a stream's recording (a copyright take-down; `disabled_at` None restores it). Called by the DMCA
    workflow, which has authorised and audits the step; False when there is no such stream."""
    with transaction.atomic():
        stream = Stream.objects.select_for_update().filter(pk=stream_id).first()
        if stream is None:
            return False
        stream.recording_disabled_at, stream.recording_disabled_reason = disabled_at, reason[:200]
        stream.save(update_fields=["recording_disabled_at", "recording_disabled_reason"])
    return True


def stream_end(*, stream: Stream, actor, recording_url: str = "") -> Stream:
    """End a stream: viewers are told (`stream.status` ended), their sockets stay open to read the end
    screen and the recording link; nothing is cut off mid-frame. The exact peak is persisted."""
    _require_staff(actor, stream)
    if recording_url:
        from django.core.validators import URLValidator

        URLValidator(schemes=["https"] if not settings.DEBUG else ["http", "https"])(recording_url)
    from streaming import audience

    peak, peak_at = audience.peak_read(stream.pk)
    with transaction.atomic():
        stream = _locked(stream)
        if stream.status == Stream.Status.ENDED:
            raise Conflict("The stream has already ended.")
        stream.status, stream.ended_at = Stream.Status.ENDED, timezone.now()
        fields = ["status", "ended_at"]
        if recording_url:
            stream.recording_url = recording_url
            fields.append("recording_url")
        if peak > stream.peak_viewers:
            stream.peak_viewers, stream.peak_viewers_at = peak, peak_at or stream.ended_at
            fields += ["peak_viewers", "peak_viewers_at"]
        stream.save(update_fields=fields)
        _emit(stream, "stream.status", events.stream_status(stream))
        transaction.on_commit(lambda: stream_ended.send(sender=Stream, stream=stream))
    return stream


def stream_peak_record(*, stream_id: int, peak: int, at: dt.datetime) -> bool:
    """Raise the stream's recorded peak (never lowers it). Called throttled by the viewer publisher."""
    with transaction.atomic():
        stream = Stream.objects.select_for_update().filter(pk=stream_id).first()
        if stream is None or peak <= stream.peak_viewers:
            return False
        stream.peak_viewers, stream.peak_viewers_at = peak, at
        stream.save(update_fields=["peak_viewers", "peak_viewers_at"])
    return True


# --- chat -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Screen:
    text: str
    sentiment: float
    hold: bool
    reason: str = ""
    verdict: object = None  # moderation.pipeline.Verdict
    ctx: object = None  # moderation.pipeline.Context


def chat_screen(text: str, *, stream: Stream, author, source: str = "stream_chat") -> Screen:
    """The one seam where stream text is screened before it is stored: the moderation pipeline
    (moderation/pipeline.py: classifier, the channel's pattern lists, thresholds). A blocked text is audited
    and refused here; a held one is stored for review by the caller. Runs in a database worker thread."""
    from moderation import pipeline
    from moderation.services import block_record

    text = unicodedata.normalize("NFC", _CONTROL_CHARS.sub("", text or "")).strip()
    if not text:
        raise ValidationError("A message cannot be empty.")
    ctx = pipeline.Context(source=source, channel_id=stream.channel_id, room_id=stream.pk,
                           author_id=getattr(author, "pk", None))
    verdict = pipeline.screen(text, ctx)
    if verdict.action == "block":
        block_record(verdict=verdict, ctx=ctx, author_id=author.pk)
        raise ValidationError(verdict.public_reason())
    return Screen(verdict.text, verdict.sentiment, not verdict.visible, verdict.category, verdict, ctx)


def is_emote_only(text: str) -> bool:
    """Only emoji and emote codes (:name:), with spaces between."""
    rest = _EMOTE_CODE.sub("", text)
    for ch in rest:
        if ch.isspace() or ch in "\u200d\ufe0f":
            continue
        cat = unicodedata.category(ch)
        if cat != "So" and not (0x1F3FB <= ord(ch) <= 0x1F3FF):
            return False
    return bool(text.strip())


def _chat_gate(stream: Stream, author, role: ViewerRole, text: str) -> None:
    """The stream's chat settings, enforced here (server side) for everyone but the creator and moderators.
    `stream` comes from selectors.chat_context (the author's ban and follow are annotations on it)."""
    if not role.signed_in:
        raise PermissionDenied("Sign in to chat.")
    if stream.status == Stream.Status.ENDED:
        raise Conflict("The stream has ended; its chat is closed.")
    if stream.barred:
        raise PermissionDenied("You cannot chat on this channel right now.")
    if role.is_staff:
        return
    if stream.chat_members_only and role != ViewerRole.MEMBER and not stream.chat_lockdown:
        raise PermissionDenied("The chat is for members only right now.")
    if stream.chat_followers_only and role != ViewerRole.MEMBER:
        followed = stream.followed_at
        age = (timezone.now() - followed).total_seconds() / 60 if followed is not None else None
        if age is None or age < stream.chat_follow_minutes:
            raise PermissionDenied(f"The chat is for followers of at least {stream.chat_follow_minutes} minutes.")
    if stream.chat_emote_only and not is_emote_only(text):
        raise ValidationError("Only emotes are allowed right now.")


def _slow_mode_take(stream: Stream, author, role: ViewerRole) -> None:
    """Per person, across every process: one atomic SET NX PX in Redis per message."""
    if role.is_staff or stream.chat_slow_seconds <= 0:
        return
    key = f"{settings.AULA_REDIS_KEY_PREFIX}:stslow:{stream.pk}:{author.pk}"
    client = _redis()
    if not client.set(key, "1", nx=True, px=stream.chat_slow_seconds * 1000):
        ttl = client.pttl(key)
        raise SlowMode(round(max(ttl, 0) / 1000, 2) or stream.chat_slow_seconds)


def _publish_chat(stream: Stream, message: StreamChatMessage) -> None:
    frame = encode_frame("chat.message", events.chat_message(message))
    transaction.on_commit(lambda: publish_frame(stream_chat_room(stream.pk), frame))


def _held_count(stream: Stream) -> int:
    return StreamChatMessage.objects.filter(stream=stream, status=StreamChatMessage.Status.HELD).count()


def chat_message_post(*, stream: Stream, author, body: str, client_ref: str = "") -> StreamChatMessage:
    """Store a chat message (screened), visible with the next `cseq` or held for review. Idempotent by `ref`."""
    if len(body or "") > CHAT_MAX_CHARS:
        raise ValidationError(f"A message is at most {CHAT_MAX_CHARS} characters.")
    stream = selectors.chat_context(stream.pk, author, client_ref)
    if stream.existing_id is not None:  # a retried send: acknowledged again, stored and broadcast once
        return StreamChatMessage.objects.select_related("author").get(pk=stream.existing_id)
    role = selectors.viewer_role(author, stream, stream.viewer_roles)
    screen = chat_screen(body, stream=stream, author=author)
    _chat_gate(stream, author, role, screen.text)
    _slow_mode_take(stream, author, role)
    # In lockdown a non-member's message is always held for review (members-only refuses it otherwise).
    locked_out = stream.chat_lockdown and role != ViewerRole.MEMBER
    hold = ((stream.chat_hold_all or locked_out) and not role.is_staff) or screen.hold
    try:
        with transaction.atomic():
            message = StreamChatMessage(stream=stream, author=author, body=screen.text, client_ref=client_ref,
                                        sentiment=screen.sentiment)
            if hold:
                message.status = StreamChatMessage.Status.HELD
                message.save()
                room_signal_publish(stream_staff_room(stream.pk), "chat.held", events.chat_held(message))
            else:
                message.cseq = room_next_seq(stream_chat_room(stream.pk))
                message.save()
                _publish_chat(stream, message)
            verdict = screen.verdict
            if hold and not screen.hold:  # held by the stream's settings, not by moderation: queued all the same
                verdict.action, verdict.category = "hold", "room_rule"
            if verdict.action != "allow" or verdict.notify:
                from moderation.services import verdict_record

                verdict_record(verdict=verdict, ctx=screen.ctx, object_id=message.pk, author_id=author.pk, text=body)
    except IntegrityError:
        # The same ref sent twice at once: the other one won; answer with it.
        return StreamChatMessage.objects.select_related("author").get(stream=stream, author=author,
                                                                      client_ref=client_ref)
    counts = {"chat": 1, "sentiment_sum": screen.sentiment, "sentiment_n": 1}
    if hold:
        counts["chat_held"] = 1
    with contextlib.suppress(Exception):  # live figures are hints: never fail a stored message for them
        live.incr(stream.pk, **counts)
        if hold:
            live.gauges_set(stream.pk, held=_held_count(stream))
    analytics.record("chat.message", scope="stream", scope_id=stream.pk, value=screen.sentiment,
                     segment=role.value if role != ViewerRole.VIEWER else "signed_in")
    return message


def _require_message_staff(actor, message: StreamChatMessage) -> Stream:
    stream = Stream.objects.select_related("channel").get(pk=message.stream_id)
    _require_staff(actor, stream)
    return stream


def _decide_held(message: StreamChatMessage, actor, decision: str) -> StreamChatMessage:
    """The stream's held list and the moderation queue are one queue: a decision made on the watch page is
    the queue item's decision (decided once, audited, visible live to other moderators)."""
    from moderation.services import item_decide, open_item_id

    _require_message_staff(actor, message)
    item_id = open_item_id("stream_chat", message.pk)
    if item_id is None or actor is None:
        (chat_held_release if decision == "approve" else chat_held_reject)(message_id=message.pk)
        if item_id is not None:
            from moderation.services import item_settle

            item_settle(item_id=item_id, decision=decision, note="decided by the system")
    else:
        note = "" if decision == "approve" else "Not approved by the stream's moderators."
        item_decide(item_id=item_id, actor=actor, decision=decision, note=note)
    return StreamChatMessage.objects.select_related("author").get(pk=message.pk)


def chat_approve(*, message: StreamChatMessage, actor) -> StreamChatMessage:
    """A held message goes out to everyone as a normal message with a new `cseq`."""
    if message.status != StreamChatMessage.Status.HELD:
        raise Conflict("This message is not waiting for review.")
    return _decide_held(message, actor, "approve")


def chat_reject(*, message: StreamChatMessage, actor) -> StreamChatMessage:
    if message.status != StreamChatMessage.Status.HELD:
        raise Conflict("This message is not waiting for review.")
    return _decide_held(message, actor, "remove")


def _reviewed(stream: Stream, message: StreamChatMessage) -> None:
    room_signal_publish(stream_staff_room(stream.pk), "chat.reviewed", events.chat_reviewed(message))
    room_direct_publish(stream_room(stream.pk), message.author_id, "chat.reviewed", events.chat_reviewed(message))


def chat_held_release(*, message_id: int, body: str | None = None, actor=None) -> StreamChatMessage | None:
    """A held (or removed) message goes out with a new `cseq`, as sent or as `body` (masked). Moderation
    decides; this only carries it out (moderation.content adapter, streaming/screening.py)."""
    with transaction.atomic():
        message = StreamChatMessage.objects.select_for_update().select_related("author", "stream").filter(
            pk=message_id).first()
        if message is None:
            return None
        stream = message.stream
        was_held = message.status == StreamChatMessage.Status.HELD
        if body is None and (not was_held or message.deleted_at is not None):
            return message  # an approval releases a held message only, never one a moderator deleted
        shown = message.status == StreamChatMessage.Status.VISIBLE and message.deleted_at is None
        if shown:  # masking a visible message: blank it, then show the masked form as a new message
            message.deleted_at = timezone.now()
            _emit(stream, "chat.deleted", events.chat_deleted(message))
        if body is not None:
            message.body = body
        message.status, message.deleted_at, message.deleted_by = StreamChatMessage.Status.VISIBLE, None, None
        message.reviewed_by = actor or message.reviewed_by
        message.cseq = room_next_seq(stream_chat_room(stream.pk))
        message.save(update_fields=["status", "cseq", "body", "deleted_at", "deleted_by", "reviewed_by"])
        _publish_chat(stream, message)
        if was_held:
            _reviewed(stream, message)
    _held_gauge(stream)
    return message


def chat_held_reject(*, message_id: int, actor=None) -> StreamChatMessage | None:
    with transaction.atomic():
        message = StreamChatMessage.objects.select_for_update().select_related("stream").filter(pk=message_id).first()
        if message is None or message.status != StreamChatMessage.Status.HELD:
            return message
        message.status, message.reviewed_by = StreamChatMessage.Status.REJECTED, actor
        message.save(update_fields=["status", "reviewed_by"])
        _reviewed(message.stream, message)
    _held_gauge(message.stream)
    return message


def _held_gauge(stream: Stream) -> None:
    with contextlib.suppress(Exception):
        live.gauges_set(stream.pk, held=_held_count(stream))


def chat_message_delete(*, message: StreamChatMessage, actor) -> StreamChatMessage:
    """Blank a message for everyone: a room event (strict seq) so every viewer learns it, sampled or not."""
    stream = _require_message_staff(actor, message)
    with transaction.atomic():
        message = StreamChatMessage.objects.select_for_update().get(pk=message.pk)
        if message.deleted_at is not None:
            return message
        message.deleted_at, message.deleted_by = timezone.now(), actor
        message.save(update_fields=["deleted_at", "deleted_by"])
        _emit(stream, "chat.deleted", events.chat_deleted(message))
    return message


_SETTINGS_FIELDS = {"slow_seconds": "chat_slow_seconds", "followers_only": "chat_followers_only",
                    "follow_minutes": "chat_follow_minutes", "members_only": "chat_members_only",
                    "emote_only": "chat_emote_only", "hold_all": "chat_hold_all"}


def chat_settings_set(*, stream: Stream, actor, **changes) -> Stream:
    """Change chat settings (any subset of slow_seconds, followers_only, follow_minutes, members_only,
    emote_only, hold_all); audited by auditlog on the stream row; broadcast as `chat.settings`."""
    _require_staff(actor, stream)
    unknown = set(changes) - set(_SETTINGS_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown chat settings: {', '.join(sorted(unknown))}")
    if not 0 <= int(changes.get("slow_seconds", 0)) <= 3600:
        raise ValidationError("Slow mode is 0 to 3600 seconds.")
    if not 0 <= int(changes.get("follow_minutes", 0)) <= 60 * 24 * 90:
        raise ValidationError("Minimum follow age is 0 to 129600 minutes.")
    with transaction.atomic():
        stream = _locked(stream)
        fields = []
        for name, value in changes.items():
            attr = _SETTINGS_FIELDS[name]
            if getattr(stream, attr) != value:
                setattr(stream, attr, value)
                fields.append(attr)
        if fields:
            stream.save(update_fields=fields)
            _emit(stream, "chat.settings", events.chat_settings(stream))
    return stream


_LOCKDOWN_FIELDS = ("chat_members_only", "chat_hold_all", "chat_slow_seconds")


def chat_lockdown(*, stream: Stream, actor, on: bool) -> Stream:
    """One click: members only, slow mode (at least 30 s) and every message held for review (a non-member's
    message is held rather than refused, so a moderator can still let a good one through).

    The three settings as they were are kept when lockdown starts, and `on=False` puts exactly those back;
    the other settings (and any change made to them during lockdown) stay as they are."""
    _require_staff(actor, stream)
    with transaction.atomic():
        stream = _locked(stream)
        if on == stream.chat_lockdown:
            return stream  # a second click (or two moderators at once) must not overwrite what was saved
        if on:
            stream.chat_before_lockdown = {f: getattr(stream, f) for f in _LOCKDOWN_FIELDS}
            stream.chat_members_only = stream.chat_hold_all = stream.chat_lockdown = True
            stream.chat_slow_seconds = max(stream.chat_slow_seconds, LOCKDOWN_SLOW_SECONDS)
        else:
            before = stream.chat_before_lockdown or {}
            stream.chat_members_only = bool(before.get("chat_members_only", False))
            stream.chat_hold_all = bool(before.get("chat_hold_all", False))
            stream.chat_slow_seconds = int(before.get("chat_slow_seconds", 0))
            stream.chat_lockdown, stream.chat_before_lockdown = False, None
        stream.save(update_fields=[*_LOCKDOWN_FIELDS, "chat_lockdown", "chat_before_lockdown"])
        _emit(stream, "chat.settings", events.chat_settings(stream))
    return stream


def chat_user_restrict(*, stream: Stream, actor, user, minutes: int | None, reason: str = "") -> StreamChatBan:
    """Time a person out of the channel's chats for `minutes`, or ban them (`minutes` None)."""
    _require_staff(actor, stream)
    if selectors.viewer_role(user, stream).is_staff:
        raise PermissionDenied("The creator and moderators cannot be timed out.")
    until = timezone.now() + dt.timedelta(minutes=minutes) if minutes else None
    with transaction.atomic():
        ban = StreamChatBan.objects.select_for_update().filter(channel_id=stream.channel_id, user=user).first()
        if ban is None:
            ban = StreamChatBan(channel_id=stream.channel_id, user=user)
        ban.until, ban.reason, ban.created_by = until, reason[:200], actor
        ban.save()
        room_direct_publish(stream_room(stream.pk), user.pk, "chat.restricted",
                            {"until": events._iso(until), "banned": until is None})
    return ban


def chat_user_unrestrict(*, stream: Stream, actor, user) -> bool:
    _require_staff(actor, stream)
    with transaction.atomic():
        ban = StreamChatBan.objects.filter(channel_id=stream.channel_id, user=user).first()
        if ban is None:
            return False
        ban.delete()
    return True


# --- polls ----------------------------------------------------------------------------------------------

def poll_open(*, stream: Stream, actor, question: str, options: list[str]) -> StreamPoll:
    _require_staff(actor, stream)
    question = (question or "").strip()
    options = [o.strip() for o in options if o and o.strip()]
    if not question or not 2 <= len(options) <= 6 or len(set(options)) != len(options):
        raise ValidationError("A poll has a question and 2 to 6 different options.")
    with transaction.atomic():
        poll = StreamPoll.objects.create(stream=stream, question=question[:300], options=[o[:100] for o in options],
                                         created_by=actor)
        _emit(stream, "poll.opened", events.poll(poll))
    return poll


def poll_close(*, poll: StreamPoll, actor) -> StreamPoll:
    stream = Stream.objects.select_related("channel").get(pk=poll.stream_id)
    _require_staff(actor, stream)
    with transaction.atomic():
        poll = StreamPoll.objects.select_for_update().get(pk=poll.pk)
        if poll.status == StreamPoll.Status.CLOSED:
            return poll
        poll.status, poll.closed_at = StreamPoll.Status.CLOSED, timezone.now()
        poll.save(update_fields=["status", "closed_at"])
        _emit(stream, "poll.closed", {**events.poll(poll), "results": events.poll_results(
            poll, selectors.poll_counts(poll))})
    return poll


def poll_vote(*, poll_id: int, stream: Stream, user, choice: int) -> tuple[StreamPollVote, bool]:
    """Vote once (single choice); a second vote changes nothing and says so (idempotent)."""
    if not user.is_authenticated:
        raise PermissionDenied("Sign in to vote.")
    poll = StreamPoll.objects.filter(pk=poll_id, stream=stream).first()
    if poll is None:
        raise StreamPoll.DoesNotExist
    if poll.status != StreamPoll.Status.OPEN:
        raise Conflict("The poll is closed.")
    if not 0 <= choice < len(poll.options):
        raise ValidationError("No such option.")
    vote, created = StreamPollVote.objects.get_or_create(poll=poll, user=user, defaults={"choice": choice})
    if created:
        analytics.record("poll.answer", scope="stream", scope_id=stream.pk, choice=str(choice))
    return vote, created


def poll_results_publish(*, poll_id: int) -> None:
    """Ephemeral results (no seq): the consumer coalesces calls to at most 4 per second per poll."""
    poll = StreamPoll.objects.filter(pk=poll_id).first()
    if poll is not None:
        room_signal_publish(stream_room(poll.stream_id), "poll.results",
                            events.poll_results(poll, selectors.poll_counts(poll)))


# --- questions ------------------------------------------------------------------------------------------

def question_ask(*, stream: Stream, author, body: str) -> StreamQuestion:
    if not author.is_authenticated:
        raise PermissionDenied("Sign in to ask a question.")
    if len(body or "") > QUESTION_MAX_CHARS:
        raise ValidationError(f"A question is at most {QUESTION_MAX_CHARS} characters.")
    stream = Stream.objects.select_related("channel").get(pk=stream.pk)
    if stream.status == Stream.Status.ENDED:
        raise Conflict("The stream has ended.")
    if selectors.chat_bar(stream, author) is not None:
        raise PermissionDenied("You cannot post on this channel right now.")
    screen = chat_screen(body, stream=stream, author=author, source="stream_question")
    with transaction.atomic():
        question = StreamQuestion.objects.create(
            stream=stream, author=author, body=screen.text, sentiment=screen.sentiment,
            status=StreamQuestion.Status.HELD if screen.hold else StreamQuestion.Status.OPEN)
        if not screen.hold:
            _emit(stream, "question.asked", events.question(question))
        if screen.verdict.action != "allow" or screen.verdict.notify:
            from moderation.services import verdict_record

            verdict_record(verdict=screen.verdict, ctx=screen.ctx, object_id=question.pk, author_id=author.pk,
                           text=body.strip())
    analytics.record("question.ask", scope="stream", scope_id=stream.pk, value=screen.sentiment)
    return question


def question_moderated(*, question_id: int, status: str, body: str | None = None) -> StreamQuestion | None:
    """A moderator's decision on a question (moderation.content adapter): onto the board (open), off it
    (dismissed), optionally with its text masked or restored."""
    with transaction.atomic():
        question = (StreamQuestion.objects.select_for_update().select_related("author", "stream")
                    .filter(pk=question_id).first())
        if question is None:
            return None
        was_held = question.status == StreamQuestion.Status.HELD
        if status == StreamQuestion.Status.OPEN and question.status == StreamQuestion.Status.ANSWERED:
            status = StreamQuestion.Status.ANSWERED  # approving again does not reopen an answered question
        if status == question.status and body is None:
            return question
        question.status = status
        if body is not None:
            question.body = body[:QUESTION_MAX_CHARS]
        question.save(update_fields=["status", "body"])
        _emit(question.stream, "question.asked" if was_held else "question.updated", events.question(question))
    return question


def question_upvote(*, question_id: int, stream: Stream, user) -> tuple[StreamQuestion, bool]:
    """Toggle this person's upvote; returns the question and whether it is now upvoted."""
    if not user.is_authenticated:
        raise PermissionDenied("Sign in to upvote.")
    with transaction.atomic():
        question = (StreamQuestion.objects.select_for_update().select_related("author")
                    .filter(pk=question_id, stream=stream).first())
        if question is None:
            raise StreamQuestion.DoesNotExist
        if question.status != StreamQuestion.Status.OPEN:
            raise Conflict("This question is no longer open.")
        removed, _ = StreamQuestionVote.objects.filter(question=question, user=user).delete()
        if not removed:
            StreamQuestionVote.objects.create(question=question, user=user)
        question.upvotes = StreamQuestionVote.objects.filter(question=question).count()
        question.save(update_fields=["upvotes"])
        _emit(stream, "question.updated", events.question(question))
    return question, not removed


def question_mark(*, question_id: int, stream: Stream, actor, status: str) -> StreamQuestion:
    _require_staff(actor, stream)
    if status not in {StreamQuestion.Status.ANSWERED, StreamQuestion.Status.DISMISSED, StreamQuestion.Status.OPEN}:
        raise ValidationError("Mark a question answered, dismissed or open.")
    with transaction.atomic():
        question = (StreamQuestion.objects.select_for_update().select_related("author")
                    .filter(pk=question_id, stream=stream).first())
        if question is None:
            raise StreamQuestion.DoesNotExist
        question.status = status
        question.save(update_fields=["status"])
        _emit(stream, "question.updated", events.question(question))
    return question
