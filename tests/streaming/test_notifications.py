"""Follows, preferences and "channel is live" notices: over the socket to connected followers, and by email
through the bulk queue, once per follower, within the rate cap, backing off while the queue is deep."""

from __future__ import annotations

import base64
import json
import smtplib

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core import mail
from django.utils import timezone

from config.asgi import application
from streaming import notifications
from streaming import services as streaming_services
from streaming.models import LiveNotification, Stream
from streaming.signals import stream_went_live
from tests import factories
from tests.conftest import login_cookie


def live_stream(owner=None, slug="night-sky", title="Meteor shower, live"):
    owner = owner or factories.user()
    channel = streaming_services.channel_upsert(owner=owner, slug=slug, title="Night Sky")
    stream = streaming_services.stream_upsert(channel=channel, title=title)
    stream.status, stream.started_at = Stream.Status.LIVE, timezone.now()
    stream.save()
    return stream


def queued(task_suffix: str = "live_email_chunk") -> list[dict]:
    """The messages waiting in the broker's bulk queue for one of our tasks: their args and countdown."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
    out = []
    for raw in client.lrange(f"{prefix}bulk", 0, -1):
        message = json.loads(raw)
        if not message["headers"]["task"].endswith(task_suffix):
            continue
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        out.append({"args": args, "eta": message["headers"].get("eta")})
    return out


def drain_email_chunks() -> None:
    """Run every queued email chunk (as a worker would), including the ones they queue again without delay."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(f"{settings.CELERY_BROKER_TRANSPORT_OPTIONS['global_keyprefix']}bulk")


# --- follows and preferences -------------------------------------------------------------------------

@pytest.mark.django_db
def test_follow_and_unfollow_are_idempotent():
    stream = live_stream()
    fan = factories.user()
    first = notifications.follow_add(channel=stream.channel, user=fan)
    again = notifications.follow_add(channel=stream.channel, user=fan)
    assert first.pk == again.pk and notifications.follower_count(stream.channel) == 1
    assert notifications.is_following(stream.channel, fan)
    assert notifications.follow_remove(channel=stream.channel, user=fan) is True
    assert notifications.follow_remove(channel=stream.channel, user=fan) is False
    assert notifications.follower_count(stream.channel) == 0


@pytest.mark.django_db
def test_preferences_default_on_and_are_saved():
    fan = factories.user()
    prefs = notifications.preferences_of(fan)
    assert prefs.live_in_page and prefs.live_email and prefs.pk is None
    notifications.preferences_set(user=fan, live_in_page=False, live_email=True)
    notifications.preferences_set(user=fan, live_in_page=False, live_email=False)
    prefs = notifications.preferences_of(fan)
    assert (prefs.live_in_page, prefs.live_email) == (False, False)


# --- the fan-out -------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_fanout_respects_follow_mute_and_preferences():
    stream = live_stream()
    everything, page_only, muted, no_email_pref, stranger = (factories.user() for _ in range(5))
    for fan in (everything, page_only, muted, no_email_pref):
        notifications.follow_add(channel=stream.channel, user=fan)
    notifications.follow_notify_set(channel=stream.channel, user=muted, notify=False)
    notifications.preferences_set(user=page_only, live_in_page=True, live_email=False)
    notifications.preferences_set(user=no_email_pref, live_in_page=False, live_email=False)

    notifications.stream_live_notify(stream_id=stream.pk)

    rows = set(LiveNotification.objects.values_list("user_id", "kind"))
    assert rows == {(everything.pk, "in_page"), (everything.pk, "email"), (page_only.pk, "in_page")}
    assert stranger.pk not in {uid for uid, _ in rows}
    assert LiveNotification.objects.get(user=everything, kind="in_page").status == "sent"
    chunks = queued()
    assert [c["args"] for c in chunks] == [[stream.pk, [LiveNotification.objects.get(user=everything, kind="email").pk]]]


@pytest.mark.django_db
def test_fanout_is_batched_and_emails_each_follower_exactly_once_even_when_run_twice(settings):
    settings.AULA_NOTIFY_BATCH_SIZE = 2
    stream = live_stream()
    fans = [factories.user() for _ in range(5)]
    for fan in fans:
        notifications.follow_add(channel=stream.channel, user=fan)

    notifications.stream_live_notify(stream_id=stream.pk)
    notifications.stream_live_notify(stream_id=stream.pk)  # a redelivered fan-out task
    chunks = queued()
    assert len(chunks) == 6  # 3 batches of at most 2 followers, queued by each run
    assert all(len(c["args"][1]) <= 2 for c in chunks)
    for chunk in chunks + chunks:  # and every chunk runs twice
        notifications.live_email_chunk_run(stream_id=chunk["args"][0], notification_ids=chunk["args"][1])

    assert sorted(m.to[0] for m in mail.outbox) == sorted(f.email for f in fans)
    assert all("Meteor shower, live" in m.subject for m in mail.outbox)
    assert set(LiveNotification.objects.filter(kind="email").values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db
def test_a_stream_that_is_not_live_notifies_nobody():
    stream = live_stream()
    notifications.follow_add(channel=stream.channel, user=factories.user())
    stream.status = Stream.Status.ENDED
    stream.save()
    assert notifications.stream_live_notify(stream_id=stream.pk) == {"in_page": 0, "email_chunks": 0}
    assert not LiveNotification.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_going_live_queues_the_fanout_on_the_bulk_queue():
    stream = live_stream()
    stream_went_live.send(sender=Stream, stream=stream)
    assert [c["args"] for c in queued("stream_live_fanout")] == [[stream.pk]]


# --- email: rate cap, backpressure, retries ----------------------------------------------------------

@pytest.mark.django_db
def test_rate_cap_sends_what_the_minute_allows_and_requeues_the_rest(settings):
    settings.AULA_NOTIFY_EMAILS_PER_MINUTE = 2
    stream = live_stream()
    for _ in range(5):
        notifications.follow_add(channel=stream.channel, user=factories.user())
    notifications.stream_live_notify(stream_id=stream.pk)
    [chunk] = queued()
    drain_email_chunks()

    outcome = notifications.live_email_chunk_run(stream_id=stream.pk, notification_ids=chunk["args"][1])

    assert outcome["sent"] == 2 and len(mail.outbox) == 2
    [later] = queued()
    assert later["args"] == [stream.pk, chunk["args"][1][2:]] and later["eta"]  # at the next minute
    # The cap is shared: another chunk in the same minute sends nothing more.
    assert notifications.live_email_chunk_run(stream_id=stream.pk, notification_ids=later["args"][1])["sent"] == 0
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_a_deep_bulk_queue_makes_chunks_wait_instead_of_sending(settings):
    settings.AULA_NOTIFY_BULK_QUEUE_MAX = 2
    stream = live_stream()
    notifications.follow_add(channel=stream.channel, user=factories.user())
    notifications.stream_live_notify(stream_id=stream.pk)
    [chunk] = queued()
    for _ in range(3):  # other bulk work piles up
        notifications.stream_live_fanout.apply_async(args=[0], queue="bulk")
    assert notifications.bulk_queue_depth() == 4

    outcome = notifications.live_email_chunk_run(stream_id=stream.pk, notification_ids=chunk["args"][1])

    assert outcome["deferred"] == settings.AULA_NOTIFY_BACKPRESSURE_SECONDS and mail.outbox == []
    deferred = [c for c in queued() if c["eta"]]
    assert [c["args"] for c in deferred] == [chunk["args"]]
    drain_email_chunks()  # the queue drained: the chunk sends when it comes back
    assert notifications.live_email_chunk_run(stream_id=stream.pk, notification_ids=chunk["args"][1])["sent"] == 1


class FlakySMTP:
    """An email backend whose server drops the connection on the first send of each message (a real failure
    mode of SMTP servers under load), then accepts."""

    calls = 0

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        FlakySMTP.calls += 1
        if FlakySMTP.calls == 1:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        mail.outbox.extend(messages)
        return len(messages)


class RefusingSMTP(FlakySMTP):
    def send_messages(self, messages):
        raise smtplib.SMTPRecipientsRefused({"x@example.test": (550, b"No such user")})


@pytest.mark.django_db
def test_transient_smtp_errors_are_retried_with_backoff_and_refusals_are_not(settings):
    settings.EMAIL_BACKEND = f"{__name__}.FlakySMTP"
    FlakySMTP.calls = 0
    stream = live_stream()
    notifications.follow_add(channel=stream.channel, user=factories.user())
    notifications.stream_live_notify(stream_id=stream.pk)
    [chunk] = queued()
    drain_email_chunks()
    outcome = notifications.live_email_chunk_run(stream_id=stream.pk, notification_ids=chunk["args"][1])
    assert outcome["retry"] == chunk["args"][1] and mail.outbox == []
    row = LiveNotification.objects.get(kind="email")
    assert (row.status, row.tries, row.last_error) == ("retrying", 1, "SMTPServerDisconnected")
    [retry] = queued()
    assert retry["args"] == chunk["args"] and retry["eta"]
    notifications.live_email_chunk_run(stream_id=stream.pk, notification_ids=retry["args"][1])
    row.refresh_from_db()
    assert (row.status, row.tries, len(mail.outbox)) == ("sent", 2, 1)

    settings.EMAIL_BACKEND = f"{__name__}.RefusingSMTP"
    other = live_stream(slug="other", title="Other")
    notifications.follow_add(channel=other.channel, user=factories.user())
    notifications.stream_live_notify(stream_id=other.pk)
    refused = LiveNotification.objects.get(stream=other, kind="email")
    assert notifications.live_email_deliver(notification_id=refused.pk) == "failed"
    assert notifications.live_email_deliver(notification_id=refused.pk) == "failed"  # not tried again
    refused.refresh_from_db()
    assert refused.tries == 1


# --- the socket ---------------------------------------------------------------------------------------

async def connect(user) -> WebsocketCommunicator:
    cookie = await database_sync_to_async(login_cookie)(user)
    comm = WebsocketCommunicator(application, "/ws/v1/notifications/", headers=[
        (b"origin", b"http://localhost:8000"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, code = await comm.connect(timeout=5)
    assert connected, code
    return comm


@pytest.mark.django_db(transaction=True)
async def test_a_connected_follower_gets_the_live_notice_on_their_socket():
    def setup():
        stream = live_stream()
        fan, quiet, stranger = factories.user(), factories.user(), factories.user()
        notifications.follow_add(channel=stream.channel, user=fan)
        notifications.follow_add(channel=stream.channel, user=quiet)
        notifications.preferences_set(user=quiet, live_in_page=False, live_email=True)
        return stream, fan, quiet, stranger

    stream, fan, quiet, stranger = await database_sync_to_async(setup)()
    sockets = {u: await connect(u) for u in (fan, quiet, stranger)}
    for comm in sockets.values():
        assert json.loads(await comm.receive_from(timeout=5))["type"] == "snapshot"

    await sync_to_async(notifications.stream_live_notify, thread_sensitive=False)(stream_id=stream.pk)

    frame = json.loads(await sockets[fan].receive_from(timeout=5))
    assert frame["type"] == "notify.live" and frame["seq"] is None
    assert frame["data"] == {"stream_id": stream.pk, "stream_title": "Meteor shower, live",
                             "channel_title": "Night Sky", "channel_slug": "night-sky",
                             "url": notifications.stream_watch_url(stream)}
    assert await sockets[quiet].receive_nothing(timeout=0.5)
    assert await sockets[stranger].receive_nothing(timeout=0.1)
    # A second run of the fan-out does not notify again.
    await sync_to_async(notifications.stream_live_notify, thread_sensitive=False)(stream_id=stream.pk)
    assert await sockets[fan].receive_nothing(timeout=0.5)
    # A malformed frame gets an error frame; the socket stays open.
    await sockets[fan].send_to(text_data="{nope")
    assert json.loads(await sockets[fan].receive_from(timeout=5))["data"]["code"] == "invalid_json"
    for comm in sockets.values():
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_notification_socket_is_for_signed_in_users_only():
    comm = WebsocketCommunicator(application, "/ws/v1/notifications/", headers=[(b"origin", b"http://localhost:8000")])
    connected, _ = await comm.connect(timeout=5)
    assert connected
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}
    await comm.disconnect()



@pytest.mark.django_db(transaction=True)
async def test_notification_sockets_have_a_per_user_cap_of_their_own(monkeypatch):
    monkeypatch.setattr(notifications.NotificationConsumer, "connection_cap", 2)
    user, other = await database_sync_to_async(factories.user)(), await database_sync_to_async(factories.user)()
    held = [await connect(user) for _ in range(2)]
    for comm in held:
        assert json.loads(await comm.receive_from(timeout=5))["type"] == "snapshot"
    cookie = await database_sync_to_async(login_cookie)(user)
    extra = WebsocketCommunicator(application, "/ws/v1/notifications/", headers=[
        (b"origin", b"http://localhost:8000"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    assert (await extra.connect(timeout=5))[0]
    assert (await extra.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4429}
    await extra.disconnect()
    third = await connect(other)  # another person's cap is their own
    assert json.loads(await third.receive_from(timeout=5))["type"] == "snapshot"
    await held[0].disconnect()  # a closed page frees its slot at once
    again = await connect(user)
    assert json.loads(await again.receive_from(timeout=5))["type"] == "snapshot"
    for comm in (held[1], third, again):
        await comm.disconnect()
