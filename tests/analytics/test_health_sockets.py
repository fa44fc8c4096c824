"""Room health measured under real sockets (WebsocketCommunicator against the real application, real Redis)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from config.realtime import stats
from config.realtime.consumer import Refused, RoomConsumer
from config.realtime.middleware import SessionUserMiddleware
from config.realtime.protocol import CloseCode
from tests.classrooms.test_consumers import Client, refused
from tests.classrooms.test_consumers import connect as open_socket
from tests.conftest import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(user, session, query: str = "") -> tuple[Client, dict]:
    """A joined socket whose connect has been fully handled (and counted): a consumer handles one message at
    a time, so the pong to a ping sent after the snapshot comes after the connect handler finished."""
    client, snapshot = await open_socket(user, session, query)
    await client.send(type="ping", ref="joined")
    await client.next("pong")
    return client, snapshot


def room_of(session) -> str:
    return session.room_key


async def health(room_key: str, **kwargs) -> dict:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: stats.room_health(room_key, **kwargs))


def iso(ts: dt.datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_accepted_sockets_count_as_successes_and_concurrency(world):
    room = room_of(world.session_a)
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    figures = await health(room)
    assert figures["attempts"] == 2 and figures["successes"] == 2 and figures["failures"] == 0
    assert figures["success_rate"] == 1.0
    assert figures["participants"] == 2 and figures["current"] == 2 and figures["peak"] == 2
    await student.close()
    await teacher.close()
    figures = await health(room)
    assert figures["current"] == 0 and figures["peak"] == 2
    assert room in stats.active_rooms(60)


async def test_policy_refusals_are_not_failures(world):
    room = room_of(world.session_a)
    assert await refused(world.student_b, world.session_a) in (CloseCode.NOT_FOUND, CloseCode.FORBIDDEN)
    comm = WebsocketCommunicator(application, f"/ws/v1/sessions/{world.session_a.pk}/",
                                 headers=[(b"origin", b"http://localhost:8000")])  # signed out
    connected, _ = await comm.connect(timeout=5)
    assert connected and (await comm.receive_output(timeout=5))["code"] == CloseCode.UNAUTHENTICATED
    await comm.disconnect()
    figures = await health(room)
    assert figures["attempts"] == 2 and figures["refusals"] == 2
    assert figures["failures"] == 0 and figures["successes"] == 0
    assert figures["success_rate"] is None  # nothing the platform decided: no rate at all


class CrashingConsumer(RoomConsumer):
    """A route whose authorization crashes or refuses for a server-side reason: the base must count both."""

    async def authorize(self) -> str:
        mode = self.scope["url_route"]["kwargs"]["mode"]
        if mode == "restart":
            raise Refused(CloseCode.SERVER_RESTART, "going away")
        raise RuntimeError("database exploded")


async def test_crashes_and_server_refusals_are_failures(world):
    cookie = await database_sync_to_async(login_cookie)(world.student_a)
    app = SessionUserMiddleware(CrashingConsumer.as_asgi())
    for mode in ("restart", "crash"):
        comm = WebsocketCommunicator(app, f"/ws/v1/streams/77/{mode}/",
                                     headers=[(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
        comm.scope["url_route"] = {"kwargs": {"mode": mode}}
        try:
            await comm.connect(timeout=5)
            await comm.disconnect()
        except RuntimeError:
            pass  # the crash reaches the server as before; it was counted first
    figures = await health("st77")
    assert figures["attempts"] == 2 and figures["failures"] == 2 and figures["success_rate"] == 0.0


async def test_resumed_sockets_count_as_reconnects_per_participant(world):
    room = room_of(world.session_a)
    student, snap = await connect(world.student_a, world.session_a)
    token, seen = snap["data"]["resume_token"], snap["data"]["last_seq"]
    await student.close()
    for _ in range(2):
        cookie = await database_sync_to_async(login_cookie)(world.student_a)
        comm = WebsocketCommunicator(
            application, f"/ws/v1/sessions/{world.session_a.pk}/?last_seq={seen}&resume={token}",
            headers=[(b"origin", b"http://localhost:8000"),
                     (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
        assert (await comm.connect(timeout=5))[0]
        back = Client(comm)
        token = (await back.next("resume.done"))["data"]["resume_token"]
        await back.close()
    forged, _ = await connect(world.teacher_a, world.session_a, query="?last_seq=0&resume=forged")
    await forged.close()
    figures = await health(room)
    assert figures["successes"] == 4 and figures["reconnects"] == 2  # a forged token is no reconnect
    assert figures["participants"] == 2 and figures["reconnects_per_participant"] == 1.0


async def test_sampled_socket_acks_give_latency_percentiles_and_garbage_is_ignored(world):
    room = room_of(world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    assert (await student.next("sys.sample"))["data"] == {"latency": True}  # the first socket is sampled
    now = dt.datetime.now(dt.UTC)
    for ms in (40, 40, 40, 40, 40, 40, 40, 40, 300, 2000):
        await student.send(type="latency.ack", seq=1, ts=iso(now - dt.timedelta(milliseconds=ms)))
    for garbage in ("yesterday", iso(now + dt.timedelta(minutes=5)), iso(now - dt.timedelta(hours=2)),
                    "2026-01-01T00:00:00"):
        await student.send(type="latency.ack", seq=2, ts=garbage)
    await student.send(type="latency.ack", seq="x", ts=iso(now))  # malformed: an error frame, socket open
    assert (await student.next("error"))["data"]["code"] == "invalid_fields"
    await student.send(type="ping", ref="p")
    await student.next("pong")
    figures = await health(room)
    assert figures["latency_samples"] == 10
    # Buckets are ×1.25 wide and the acks took a few ms to arrive: bounds, not exact values.
    assert 40 <= figures["latency_p50_ms"] <= 100
    assert 2000 <= figures["latency_p95_ms"] <= 3100 and 2000 <= figures["latency_p99_ms"] <= 3100
    await student.close()


async def test_latency_acks_are_rate_limited_per_socket(world):
    room = room_of(world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    await student.next("sys.sample")
    ts = iso(dt.datetime.now(dt.UTC))
    for _ in range(40):
        await student.send(type="latency.ack", seq=1, ts=ts)
    await student.send(type="ping", ref="p")
    await student.next("pong")
    assert 10 <= (await health(room))["latency_samples"] <= 12  # a burst of 10, then about one a second
    await student.close()


async def test_unsampled_sockets_acks_are_not_counted(world, settings):
    settings.AULA_LATENCY_SAMPLE_RATE = 0.0
    room = room_of(world.session_a)
    first, _ = await connect(world.teacher_a, world.session_a)
    second, _ = await connect(world.student_a, world.session_a)
    await first.next("sys.sample")
    await second.send(type="latency.ack", seq=1, ts=iso(dt.datetime.now(dt.UTC)))
    await second.send(type="ping", ref="p")
    await second.next("pong")
    assert not any(f["type"] == "sys.sample" for f in second.frames)
    assert (await health(room))["latency_samples"] == 0
    await first.close()
    await second.close()


async def test_player_errors_are_counted_by_code_and_rate_limited(world):
    room = room_of(world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    acks = 0
    for _ in range(7):
        reply = await student.request("player.error", code="MEDIA_ERR_NETWORK", message="segment 404")
        acks += reply["type"] == "ack"
        if reply["type"] == "error":
            assert reply["data"]["code"] == "rate_limited"
    assert acks == 5
    bad = await student.request("player.error", code="<script>", message="x")
    assert bad["type"] == "error" and bad["data"]["code"] == "invalid_fields"
    figures = await health(room)
    assert figures["player_errors"] == 5 and figures["player_errors_by_code"] == {"MEDIA_ERR_NETWORK": 5}
    await student.close()


async def test_origin_refusals_are_counted_for_the_room_asked_for(world):
    room = room_of(world.session_a)
    comm = WebsocketCommunicator(application, f"/ws/v1/sessions/{world.session_a.pk}/",
                                 headers=[(b"origin", b"https://evil.example")])
    connected, _ = await comm.connect(timeout=5)
    assert not connected
    figures = await health(room)
    assert figures["origin_refusals"] == 1 and figures["attempts"] == 0


async def test_the_teacher_gets_the_health_box_figures(world):
    teacher, _ = await connect(world.teacher_a, world.session_a)
    frame = await teacher.next("health")
    assert frame["data"]["room"] == {"kind": "session", "id": world.session_a.pk}
    assert frame["data"]["successes"] >= 0 and "latency_p95_ms" in frame["data"]
    student, _ = await connect(world.student_a, world.session_a)
    await student.send(type="ping", ref="p")
    await student.next("pong")
    assert not any(f["type"] == "health" for f in student.frames)  # students never get it
    await student.close()
    await teacher.close()


async def test_peak_spans_processes_and_a_dead_process_stops_counting():
    room = "st901"
    t0 = 1_900_000_000.0
    for _ in range(3):
        await stats.record_connect(room, "ok", user_id=1, process="proc-a", now=t0)
    for i in range(2):
        await stats.record_connect(room, "ok", user_id=2 + i, process="proc-b", now=t0 + 1)
    figures = await health(room, minutes=None, now=t0 + 2)
    assert figures["current"] == 5 and figures["peak"] == 5
    # proc-a dies (no more lease refreshes); proc-b keeps refreshing from its re-check loop.
    later = t0 + stats.lease_ttl() + 10
    await stats.refresh_lease(process="proc-b", now=later)
    assert (await health(room, minutes=None, now=later))["current"] == 2
    await stats.record_connect(room, "ok", user_id=9, process="proc-b", now=later)
    figures = await health(room, minutes=None, now=later)
    assert figures["current"] == 3 and figures["peak"] == 5  # the dead process's sockets are gone
    await stats.record_disconnect(room, process="proc-b")
    assert (await health(room, minutes=None, now=later))["current"] == 2


def test_percentiles_from_buckets():
    histogram = {stats.latency_bucket(10): 50, stats.latency_bucket(100): 45, stats.latency_bucket(1000): 5}
    assert 10 <= stats.percentile_ms(histogram, 0.5) < 12.5
    assert 100 <= stats.percentile_ms(histogram, 0.95) < 125
    assert 1000 <= stats.percentile_ms(histogram, 0.99) < 1250
    assert stats.percentile_ms({}, 0.5) is None
    assert stats.ack_latency_ms("not a time") is None
    assert stats.ack_latency_ms(json.dumps(1)) is None
