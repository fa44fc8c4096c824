"""Follows, notification preferences and "channel is live" notices: in open pages over the socket, and by email.

The path of one notice: `stream_went_live` (sent on commit) queues `stream_live_fanout` on the bulk queue; the
fan-out walks the channel's notified followers in batches, records one LiveNotification per follower and
channel kind (unique, so a second run changes nothing), publishes the in-page notice once per batch to each
follower's user room, and queues one `live_email_chunk` per batch. An email chunk holds back while the bulk
queue is deep (backpressure), sends at most AULA_NOTIFY_EMAILS_PER_MINUTE across all workers, retries
transient SMTP errors with backoff, and records the outcome of every delivery.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import time

import redis
from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.dispatch import receiver
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from config.realtime.consumer import RoomConsumer
from config.realtime.transport import _redis, encode_frame, redis_channel, shard_index
from streaming.models import Channel, Follow, LiveNotification, NotificationPreference, Stream
from streaming.realtime import user_room
from streaming.signals import stream_went_live

logger = logging.getLogger("aula.streaming.notifications")

EMAIL_MAX_TRIES = 5
LIVE_FRAME = "notify.live"
# Transient: the mail server was away, busy or dropped us. A refused recipient or a bad sender is permanent.
TRANSIENT_SMTP_ERRORS = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPHeloError,
                         socket.timeout, ConnectionError, TimeoutError)


# --- follows -----------------------------------------------------------------------------------------

def follow_add(*, channel: Channel, user) -> Follow:
    """Follow a channel (idempotent: following twice keeps the first follow and its age)."""
    follow = Follow.objects.filter(channel=channel, user=user).first()
    if follow is not None:
        return follow
    try:
        with transaction.atomic():
            return Follow.objects.create(channel=channel, user=user)
    except IntegrityError:  # a concurrent click created it first
        return Follow.objects.get(channel=channel, user=user)


def follow_remove(*, channel: Channel, user) -> bool:
    """Unfollow (idempotent); True when a follow was removed."""
    deleted, _ = Follow.objects.filter(channel=channel, user=user).delete()
    return bool(deleted)


def follow_notify_set(*, channel: Channel, user, notify: bool) -> bool:
    """Mute or unmute one followed channel's live notices; False when the user does not follow it."""
    return Follow.objects.filter(channel=channel, user=user).update(notify=notify) > 0


def follower_count(channel: Channel) -> int:
    return Follow.objects.filter(channel=channel).count()


def is_following(channel: Channel, user) -> bool:
    return bool(user.is_authenticated) and Follow.objects.filter(channel=channel, user=user).exists()


# --- preferences -------------------------------------------------------------------------------------

def preferences_of(user) -> NotificationPreference:
    """The user's preferences, or the (unsaved) defaults when they never changed them."""
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(user=user)


def preferences_set(*, user, live_in_page: bool, live_email: bool) -> NotificationPreference:
    prefs, _ = NotificationPreference.objects.update_or_create(
        user=user, defaults={"live_in_page": live_in_page, "live_email": live_email})
    return prefs


# --- the in-page notice ------------------------------------------------------------------------------

def stream_watch_url(stream: Stream) -> str:
    """Where to watch a stream: its watch page when that route exists, else its channel page."""
    try:
        return reverse("stream-watch", args=[stream.pk])
    except NoReverseMatch:
        return reverse("stream-channel", args=[stream.channel.slug])


def live_notice(stream: Stream) -> dict:
    """The payload of `notify.live` (one builder; docs/protocol.md, "Notifications")."""
    return {
        "stream_id": stream.pk,
        "stream_title": stream.title,
        "channel_title": stream.channel.title,
        "channel_slug": stream.channel.slug,
        "url": stream_watch_url(stream),
    }


def _publish_to_users(user_ids: list[int], frame: str) -> None:
    """One encoded frame to many users' rooms, one pipelined round trip per real-time shard."""
    by_shard: dict[int, list[str]] = {}
    for uid in user_ids:
        room = user_room(uid)
        by_shard.setdefault(shard_index(room), []).append(room)
    for shard, rooms in by_shard.items():
        try:
            pipe = _redis(shard).pipeline(transaction=False)
            for room in rooms:
                pipe.publish(redis_channel(room), frame)
            pipe.execute()
        except redis.RedisError as exc:  # a hint only: the email (if wanted) still goes out
            logger.warning("live notice publish failed on shard %s: %s", shard, type(exc).__name__)


# --- the fan-out -------------------------------------------------------------------------------------

def _followers_batches(channel_id: int, batch: int):
    """(user_id, live_in_page, live_email, has_email) of the channel's notified followers, by follow id."""
    after = 0
    while True:
        rows = list(
            Follow.objects.filter(channel_id=channel_id, notify=True, user__is_active=True, pk__gt=after)
            .order_by("pk")
            .values_list("pk", "user_id", "user__stream_notification_preference__live_in_page",
                         "user__stream_notification_preference__live_email", "user__email")[:batch])
        if not rows:
            return
        after = rows[-1][0]
        # No preference row means the defaults: both on.
        yield [(uid, page is not False, mail is not False, bool(email)) for _, uid, page, mail, email in rows]


def stream_live_notify(*, stream_id: int) -> dict[str, int]:
    """Record and send the notices of a stream that went live. Safe to run twice (rows are unique)."""
    stream = Stream.objects.select_related("channel").filter(pk=stream_id).first()
    if stream is None or stream.status != Stream.Status.LIVE:
        return {"in_page": 0, "email_chunks": 0}
    frame = encode_frame(LIVE_FRAME, live_notice(stream))  # encoded once for every follower
    in_page_sent = chunks = 0
    for rows in _followers_batches(stream.channel_id, settings.AULA_NOTIFY_BATCH_SIZE):
        page_users = [uid for uid, page, _, _ in rows if page]
        mail_users = [uid for uid, _, mail, has_email in rows if mail and has_email]
        LiveNotification.objects.bulk_create(
            [LiveNotification(stream=stream, user_id=uid, kind=LiveNotification.Kind.IN_PAGE) for uid in page_users]
            + [LiveNotification(stream=stream, user_id=uid, kind=LiveNotification.Kind.EMAIL) for uid in mail_users],
            ignore_conflicts=True)
        with transaction.atomic():
            # Only rows still pending: a second run (or an overlapping one) notices nobody twice.
            due = list(LiveNotification.objects.select_for_update(skip_locked=True)
                       .filter(stream=stream, kind=LiveNotification.Kind.IN_PAGE, user_id__in=page_users,
                               status=LiveNotification.Status.PENDING)
                       .values_list("pk", "user_id"))
            LiveNotification.objects.filter(pk__in=[pk for pk, _ in due]).update(
                status=LiveNotification.Status.SENT, sent_at=timezone.now(), tries=1)
            users = [uid for _, uid in due]
            transaction.on_commit(lambda users=users: _publish_to_users(users, frame))
        in_page_sent += len(due)
        email_ids = list(LiveNotification.objects.filter(
            stream=stream, kind=LiveNotification.Kind.EMAIL, user_id__in=mail_users,
            status__in=[LiveNotification.Status.PENDING, LiveNotification.Status.RETRYING],
        ).values_list("pk", flat=True))
        if email_ids:
            live_email_chunk.apply_async(args=[stream.pk, email_ids], queue="bulk")
            chunks += 1
    return {"in_page": in_page_sent, "email_chunks": chunks}


# --- email with backpressure and a rate cap ---------------------------------------------------------

def bulk_queue_depth() -> int:
    """Messages waiting in the broker's `bulk` queue (all priority lists of kombu's Redis transport)."""
    from kombu.transport.redis import PRIORITY_STEPS

    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    keys = [f"{prefix}bulk"] + [f"{prefix}bulk\x06\x16{step}" for step in PRIORITY_STEPS if step]
    client = _broker()
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return sum(pipe.execute())


_broker_client: redis.Redis | None = None


def _broker() -> redis.Redis:
    global _broker_client
    if _broker_client is None:
        _broker_client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
    return _broker_client


def email_slots_take(wanted: int, *, now: float | None = None) -> int:
    """Take up to `wanted` sends from this minute's cap (shared by every worker); returns how many."""
    minute = int((time.time() if now is None else now) // 60)
    key = f"{settings.AULA_REDIS_KEY_PREFIX}:notify:email:m{minute}"
    cap = settings.AULA_NOTIFY_EMAILS_PER_MINUTE
    client = _redis()
    pipe = client.pipeline(transaction=False)
    pipe.incrby(key, wanted)
    pipe.expire(key, 120)
    used = pipe.execute()[0]
    granted = max(0, min(wanted, cap - (used - wanted)))
    if granted < wanted:
        client.decrby(key, wanted - granted)  # give back what was not granted
    return granted


def seconds_to_next_minute(now: float | None = None) -> int:
    now = time.time() if now is None else now
    return int(60 - now % 60) + 1


def email_backoff(tries: int) -> int:
    return min(600, 15 * 2 ** max(0, tries - 1))


def live_email_deliver(*, notification_id: int) -> str:
    """Send one "channel is live" email (idempotent: a sent or failed notice is never sent again)."""
    with transaction.atomic():
        n = (LiveNotification.objects.select_for_update(of=("self",))
             .select_related("user", "stream__channel").filter(pk=notification_id).first())
        if n is None:
            return "missing"
        if n.status in (LiveNotification.Status.SENT, LiveNotification.Status.FAILED):
            return n.status
        stream, user = n.stream, n.user
        url = stream_watch_url(stream)
        base = settings.AULA_PUBLIC_URL
        n.tries += 1
        try:
            send_mail(f"{stream.channel.title} is live: {stream.title}",
                      f"{stream.channel.title} just went live with \"{stream.title}\".\n\nWatch: {base}{url}\n\n"
                      f"You get this because you follow {stream.channel.title}. Change your notification "
                      f"settings at {base}{reverse('stream-notification-preferences')}.",
                      settings.DEFAULT_FROM_EMAIL, [user.email], fail_silently=False)
        except TRANSIENT_SMTP_ERRORS as exc:
            n.status = (LiveNotification.Status.FAILED if n.tries >= EMAIL_MAX_TRIES
                        else LiveNotification.Status.RETRYING)
            n.last_error = type(exc).__name__
            n.save(update_fields=["status", "tries", "last_error"])
            return n.status
        except smtplib.SMTPException as exc:  # refused recipient, bad data: retrying would not help
            n.status, n.last_error = LiveNotification.Status.FAILED, type(exc).__name__
            n.save(update_fields=["status", "tries", "last_error"])
            return n.status
        n.status, n.sent_at, n.last_error = LiveNotification.Status.SENT, timezone.now(), ""
        n.save(update_fields=["status", "tries", "sent_at", "last_error"])
        return n.status


def live_email_chunk_run(*, stream_id: int, notification_ids: list[int]) -> dict:
    """One chunk: back off while the bulk queue is deep, send within the minute's cap, re-queue the rest.

    Returns what it did, for the task log and tests: {"deferred": seconds, "sent": n, "retry": [ids], ...}."""
    outcome = {"sent": 0, "failed": 0, "deferred": 0, "later": [], "retry": []}
    if not notification_ids:
        return outcome
    if bulk_queue_depth() > settings.AULA_NOTIFY_BULK_QUEUE_MAX:
        outcome["deferred"] = settings.AULA_NOTIFY_BACKPRESSURE_SECONDS
        live_email_chunk.apply_async(args=[stream_id, notification_ids], queue="bulk",
                                     countdown=settings.AULA_NOTIFY_BACKPRESSURE_SECONDS)
        return outcome
    granted = email_slots_take(len(notification_ids))
    now_ids, later = notification_ids[:granted], notification_ids[granted:]
    retry_after = 0
    for nid in now_ids:
        status = live_email_deliver(notification_id=nid)
        if status == LiveNotification.Status.SENT:
            outcome["sent"] += 1
        elif status == LiveNotification.Status.FAILED:
            outcome["failed"] += 1
        elif status == LiveNotification.Status.RETRYING:
            outcome["retry"].append(nid)
            tries = LiveNotification.objects.filter(pk=nid).values_list("tries", flat=True).first() or 1
            retry_after = max(retry_after, email_backoff(tries))
    if later:
        outcome["later"] = later
        live_email_chunk.apply_async(args=[stream_id, later], queue="bulk", countdown=seconds_to_next_minute())
    if outcome["retry"]:
        live_email_chunk.apply_async(args=[stream_id, outcome["retry"]], queue="bulk", countdown=retry_after)
    return outcome


@shared_task(acks_late=True, ignore_result=True)
def stream_live_fanout(stream_id: int) -> None:
    """Thin entry point: the notices of a stream that went live (streaming.notifications.stream_live_notify)."""
    stream_live_notify(stream_id=stream_id)


@shared_task(acks_late=True, ignore_result=True)
def live_email_chunk(stream_id: int, notification_ids: list[int]) -> None:
    """Thin entry point: one chunk of "channel is live" emails (live_email_chunk_run)."""
    live_email_chunk_run(stream_id=stream_id, notification_ids=notification_ids)


@receiver(stream_went_live, dispatch_uid="streaming.notifications.on_stream_live")
def _on_stream_live(sender, stream, **kwargs) -> None:
    # The signal is sent on commit, so the worker sees the live stream; the fan-out never runs in a request.
    try:
        stream_live_fanout.apply_async(args=[stream.pk], queue="bulk")
    except Exception:  # the broker is away: going live must not fail because of notices
        logger.exception("could not queue the live notices of stream %s", stream.pk)


# --- the socket --------------------------------------------------------------------------------------

class NotificationConsumer(RoomConsumer):
    """`/ws/v1/notifications/`: one signed-in user's notices on any page (their own user room).

    It reads nothing of anyone else: the room carries only notices addressed to this user. One socket per
    open page: a user gets AULA_NOTIFY_SOCKETS_PER_USER at once (a runaway script opening sockets in a loop
    is refused with 4429), in a pool of their own so that tabs never use up a live class's slots."""

    connection_cap = settings.AULA_NOTIFY_SOCKETS_PER_USER
    cap_pool = "notify"

    async def authorize(self) -> str:
        return user_room(self.user.pk)

    async def joined(self) -> None:
        await self.reply(encode_frame("snapshot", {"last_seq": 0, "server_time": timezone.now().isoformat()}))
