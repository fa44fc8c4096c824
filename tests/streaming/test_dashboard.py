"""The creator dashboard's socket: who may open it, what its snapshot says from the live counters, the
re-check that evicts a demoted moderator, and one tick per interval whatever the number of tickers."""

from __future__ import annotations

import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from streaming import dashboard, live
from streaming import services as streaming_services
from streaming.models import ChannelRole
from tests import factories
from tests.conftest import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def make_stream():
    creator, moderator, member, viewer = (factories.user() for _ in range(4))
    channel = streaming_services.channel_upsert(owner=creator, slug="kitchen", title="Kitchen <b>live</b>")
    streaming_services.channel_role_grant(channel=channel, user=moderator, role=ChannelRole.Kind.MODERATOR)
    streaming_services.channel_role_grant(channel=channel, user=member, role=ChannelRole.Kind.MEMBER)
    stream = streaming_services.stream_upsert(channel=channel, title="Bread at home")
    return stream, creator, moderator, member, viewer


async def open_socket(user, stream_id: int) -> tuple[WebsocketCommunicator, dict | int]:
    headers = [(b"origin", b"http://localhost:8000")]
    if user is not None:
        cookie = await database_sync_to_async(login_cookie)(user)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/v1/streams/{stream_id}/dashboard/", headers=headers)
    connected, code = await comm.connect(timeout=5)
    assert connected, code
    output = await comm.receive_output(timeout=5)
    if output["type"] == "websocket.close":
        await comm.disconnect()
        return comm, output["code"]
    return comm, json.loads(output["text"])


async def test_only_the_creator_and_moderators_may_open_the_dashboard():
    stream, creator, moderator, member, viewer = await database_sync_to_async(make_stream)()
    for person, code in ((None, 4401), (viewer, 4403), (member, 4403)):
        _, answer = await open_socket(person, stream.pk)
        assert answer == code
    _, missing = await open_socket(creator, stream.pk + 1000)
    assert missing == 4404
    for person in (creator, moderator):
        comm, snapshot = await open_socket(person, stream.pk)
        assert snapshot["type"] == "snapshot" and snapshot["data"]["stream_id"] == stream.pk
        await comm.send_to(text_data='{"type": "nope"}')  # bad input: an error frame, the socket stays
        assert json.loads(await comm.receive_from(timeout=5))["data"]["code"] == "unknown_type"
        await comm.disconnect()


async def test_a_demoted_moderator_is_evicted_at_the_recheck(settings):
    settings.AULA_SOCKET_RECHECK_SECONDS = 1
    settings.AULA_STREAM_DASHBOARD_TICK_SECONDS = 3600  # ticks are rare (see below)
    stream, creator, moderator, *_ = await database_sync_to_async(make_stream)()
    creator_socket, _ = await open_socket(creator, stream.pk)
    moderator_socket, _ = await open_socket(moderator, stream.pk)

    await database_sync_to_async(
        lambda: ChannelRole.objects.filter(user=moderator, role=ChannelRole.Kind.MODERATOR).delete())()

    output = await moderator_socket.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4403}
    # The creator stays through a full re-check. A tick may still land if the test straddles a minute boundary
    # (ticks are aligned to wall-clock multiples of the period), so only a close would be wrong.
    deadline = time.monotonic() + 1.5
    while (left := deadline - time.monotonic()) > 0:
        if await creator_socket.receive_nothing(timeout=left):
            break
        frame = await creator_socket.receive_output(timeout=1)
        assert frame["type"] == "websocket.send", frame
        assert json.loads(frame["text"])["type"] == dashboard.TICK_FRAME, frame
    await creator_socket.disconnect()
    await moderator_socket.disconnect()


def seed(stream_id: int, now: float) -> None:
    live.incr(stream_id, at=now - 200, join=4)  # outside the last minute
    live.incr(stream_id, at=now - 30, join=3, leave=1, chat=5, chat_held=1, **{"rx.❤️": 2, "rx.👏": 1})
    live.incr(stream_id, at=now - 5, chat=2, sentiment_sum=1.2, sentiment_n=2)
    live.incr(stream_id, at=now - 3, sentiment_sum=-0.4, sentiment_n=1)
    live.incr(stream_id, at=now - 400, chat=99)  # older than the snapshot's five minutes
    live.gauges_set(stream_id, viewers=42, peak=57, held=3)


async def test_the_snapshot_holds_the_last_five_minutes_of_counters():
    stream, creator, *_ = await database_sync_to_async(make_stream)()
    now = time.time()
    await database_sync_to_async(seed)(stream.pk, now)

    comm, snapshot = await open_socket(creator, stream.pk)
    data = snapshot["data"]
    await comm.disconnect()

    assert data["gauges"] == {"viewers": 42, "peak": 57, "held": 3}
    assert data["summary"] == {"joins_per_minute": 3, "leaves_per_minute": 1, "chat_per_minute": 7,
                               "sentiment": round(0.8 / 3, 4), "sentiment_n": 3}
    points = {p["t"]: p for p in data["points"]}
    assert len(data["points"]) == dashboard.SNAPSHOT_SECONDS
    assert sum(p["chat"] for p in data["points"]) == 7  # the 99 of seven minutes ago is not in it
    assert sum(p["join"] for p in data["points"]) == 7
    assert points[int(now) - 30]["rx"] == {"❤️": 2, "👏": 1}
    assert points[int(now) - 30]["chat_held"] == 1
    assert points[int(now) - 5]["sentiment_sum"] == 1.2 and points[int(now) - 5]["sentiment_n"] == 2
    assert data["health"] is None or isinstance(data["health"], dict)


async def test_two_tickers_publish_one_tick_per_interval(settings):
    """Two processes with dashboards open (two ticker registries here) share each tick: one publish each."""
    settings.AULA_STREAM_DASHBOARD_TICK_SECONDS = 1
    stream, creator, *_ = await database_sync_to_async(make_stream)()
    await database_sync_to_async(live.gauges_set)(stream.pk, viewers=5, peak=5, held=0)
    comm, _ = await open_socket(creator, stream.pk)  # its own process ticker runs too: three in all
    other_a, other_b = dashboard._Tickers(), dashboard._Tickers()
    other_a.add(stream.pk)
    other_b.add(stream.pk)
    ticks = []
    try:
        while len(ticks) < 3:
            frame = json.loads(await comm.receive_from(timeout=5))
            if frame["type"] == "dashboard.tick":
                ticks.append(frame["data"])
    finally:
        other_a.discard(stream.pk)
        other_b.discard(stream.pk)
    await comm.disconnect()
    seconds = [t["t"] for t in ticks]
    assert len(set(seconds)) == len(seconds) == 3  # no tick published twice
    assert seconds == sorted(seconds)
    assert ticks[-1]["gauges"]["viewers"] == 5 and ticks[-1]["viewers"] == [seconds[-1], 5]


async def test_ticks_carry_new_counters_and_the_viewer_history(settings):
    settings.AULA_STREAM_DASHBOARD_TICK_SECONDS = 60  # the ticks here are run by hand
    stream, creator, *_ = await database_sync_to_async(make_stream)()

    def tick_with_chat():
        live.gauges_set(stream.pk, viewers=9, peak=12, held=0)
        now = time.time()
        live.incr(stream.pk, at=now - 1, chat=4)
        assert dashboard.tick_run(stream.pk, slot=1, now=now) is True
        assert dashboard.tick_run(stream.pk, slot=1, now=now) is False  # the lease of this tick is taken
        return dashboard.dashboard_snapshot(stream.pk)

    comm, _ = await open_socket(creator, stream.pk)
    snapshot = await database_sync_to_async(tick_with_chat)()
    frame = json.loads(await comm.receive_from(timeout=5))
    while frame["type"] != "dashboard.tick":
        frame = json.loads(await comm.receive_from(timeout=5))
    await comm.disconnect()
    assert frame["data"]["summary"]["chat_per_minute"] == 4
    assert sum(p["chat"] for p in frame["data"]["points"]) == 4
    assert frame["data"]["gauges"] == {"viewers": 9, "peak": 12, "held": 0}
    assert snapshot["viewers_history"][-1][1] == 9
