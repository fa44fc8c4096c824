"""The queue socket end to end in one process (WebsocketCommunicator + real Redis + PostgreSQL): who may open
it, which groups' signals reach whom (never another school's), actions and stale versions over frames, bad
frames, and the periodic re-check following a reviewer's groups."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from classrooms.models import DistrictRole, Enrollment, Role
from config.asgi import application
from moderation import realtime
from moderation.selectors import queue_groups_for
from tests import factories
from tests.classrooms.test_consumers import Client
from tests.conftest import login_cookie
from tests.moderation.test_queue_pages import adapter, held  # noqa: F401 (the adapter fixture)

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/moderation/queue/"


async def open_socket(user) -> tuple[Client, dict | int]:
    headers = [(b"origin", b"http://localhost:8000")]
    if user is not None:
        cookie = await database_sync_to_async(login_cookie)(user)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    comm = WebsocketCommunicator(application, PATH, headers=headers)
    connected, code = await comm.connect(timeout=5)
    assert connected, code
    output = await comm.receive_output(timeout=5)
    if output["type"] == "websocket.close":
        await comm.disconnect()
        return Client(comm), output["code"]
    return Client(comm), json.loads(output["text"])


async def signals(client: Client, timeout: float = 1.0) -> list[dict]:
    """Every queue.item frame that arrives within `timeout` (and those already buffered)."""
    found = [f for f in client.frames if f["type"] == "queue.item"]
    client.frames = [f for f in client.frames if f["type"] != "queue.item"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await client.comm.receive_nothing(timeout=max(deadline - loop.time(), 0.01)):
        frame = json.loads(await client.comm.receive_from(timeout=1))
        if frame["type"] == "queue.item":
            found.append(frame)
        else:
            client.frames.append(frame)
        if loop.time() >= deadline:
            break
    return found


@database_sync_to_async
def make_world():
    world = factories.World()
    world.teacher_b = factories.user("teacher_b")
    factories.enroll(world.course_b, world.teacher_b, Role.TEACHER)
    world.district_admin = factories.user("district_admin")
    DistrictRole.objects.create(user=world.district_admin, district=world.district)
    world.root = factories.user("root", superuser=True)
    return world


async def test_only_reviewers_may_open_it_and_bad_frames_get_error_frames(adapter):  # noqa: F811
    world = await make_world()
    for person, code in ((None, 4401), (world.student_a, 4404), (world.outsider, 4404)):
        _, answer = await open_socket(person)
        assert answer == code
    client, snapshot = await open_socket(world.teacher_a)
    assert snapshot["type"] == "snapshot" and snapshot["seq"] is None
    assert snapshot["data"]["counts"] == {"open": 0, "claimed": 0, "total": 0}
    for raw, code in (("{not json", "invalid_json"), ('{"type": "nope"}', "unknown_type"),
                      ('{"type": "item.claim", "id": "x", "version": 1}', "invalid_fields"),
                      ('{"type": "item.decide", "id": 1, "version": 1, "decision": "explode"}', "invalid_fields"),
                      ('{"type": "item.claim", "id": 1, "version": 1, "extra": true}', "invalid_fields")):
        await client.comm.send_to(text_data=raw)
        assert (await client.next("error"))["data"]["code"] == code, raw
    reply = await client.request("item.claim", id=987654, version=1)  # no such item: refused, not leaked
    assert reply["type"] == "error" and reply["data"]["code"] == "forbidden"
    await client.send(type="ping", ref="p1")
    assert (await client.next("pong"))["data"]["ref"] == "p1"  # still open
    await client.close()


async def test_groups_follow_the_reviewer_scope(adapter):  # noqa: F811
    world = await make_world()
    groups = await database_sync_to_async(lambda: {
        "teacher_a": queue_groups_for(world.teacher_a), "staff_a": queue_groups_for(world.staff_a),
        "district": queue_groups_for(world.district_admin), "root": queue_groups_for(world.root),
        "student": queue_groups_for(world.student_a)})()
    assert groups["teacher_a"] == [realtime.queue_course(world.course_a.pk)]
    assert groups["staff_a"] == [realtime.queue_school(world.school_a.pk)]
    assert groups["district"] == [realtime.queue_district(world.district.pk)]
    assert groups["root"] == [realtime.queue_platform()]
    assert groups["student"] == []


async def test_each_reviewer_receives_the_signals_of_their_groups_only(adapter):  # noqa: F811
    world = await make_world()
    sockets = {}
    for name in ("teacher_a", "teacher_b", "staff_a", "staff_b", "district_admin", "root"):
        sockets[name], _ = await open_socket(getattr(world, name))
    item_a = await database_sync_to_async(held)(world.course_a, world.student_a, "rude in A")
    got = {name: await signals(s, 0.8) for name, s in sockets.items()}
    for name in ("teacher_a", "staff_a", "district_admin", "root"):
        assert [f["data"]["id"] for f in got[name]] == [item_a.pk], name
        frame = got[name][0]
        assert frame["data"] == {"change": "new", "id": item_a.pk, "version": 1, "status": "open", "tier": 1,
                                 "assigned_to": None, "priority": item_a.priority}
        assert "rude" not in json.dumps(frame)  # a signal never carries text
    # Cross-school: school B's teacher and staff hear nothing of school A's item.
    assert got["teacher_b"] == [] and got["staff_b"] == []

    item_b = await database_sync_to_async(held)(world.course_b, world.student_b, "rude in B")
    got = {name: await signals(s, 0.8) for name, s in sockets.items()}
    for name in ("teacher_b", "staff_b", "district_admin", "root"):
        assert [f["data"]["id"] for f in got[name]] == [item_b.pk], name
    assert got["teacher_a"] == [] and got["staff_a"] == []
    # Nor can A's staff act on B's item over the socket.
    reply = await sockets["staff_a"].request("item.claim", id=item_b.pk, version=1)
    assert reply["type"] == "error" and reply["data"]["code"] == "forbidden"
    for s in sockets.values():
        await s.close()


async def test_claims_and_decisions_reach_every_reviewer_and_a_stale_version_is_a_conflict(adapter):  # noqa: F811
    world = await make_world()
    second = await database_sync_to_async(factories.user)("teacher_two")
    await database_sync_to_async(factories.enroll)(world.course_a, second, Role.TEACHER)
    item = await database_sync_to_async(held)(world.course_a, world.student_a)
    one, _ = await open_socket(world.teacher_a)
    two, _ = await open_socket(second)
    staff, _ = await open_socket(world.staff_a)

    ack = await one.request("item.claim", id=item.pk, version=1)
    assert ack["type"] == "ack" and ack["data"]["version"] == 2 and ack["data"]["status"] == "claimed"
    for s in (one, two, staff):
        frame = (await signals(s, 0.8))[-1]["data"]
        assert frame["change"] == "claimed" and frame["assigned_to"] == world.teacher_a.pk

    # The second teacher still has version 1: a conflict, with the item's id to re-read.
    reply = await two.request("item.decide", id=item.pk, version=1, decision="approve")
    assert reply["type"] == "error" and reply["data"]["code"] == "conflict"
    assert reply["data"]["details"]["id"] == item.pk
    reply = await two.request("item.decide", id=item.pk, version=2, decision="approve")
    assert reply["data"]["code"] == "conflict"  # current version, but claimed by someone else
    reply = await one.request("item.decide", id=item.pk, version=2, decision="remove")
    assert reply["type"] == "error" and reply["data"]["code"] == "invalid"  # a removal needs a reason
    ack = await one.request("item.decide", id=item.pk, version=2, decision="timeout", minutes=10, note="calm",
                            scope="room")
    assert ack["type"] == "ack" and ack["data"]["status"] == "decided"
    for s in (one, two, staff):
        frame = (await signals(s, 0.8))[-1]["data"]
        assert frame["change"] == "decided" and frame["status"] == "decided"
    reply = await two.request("item.claim", id=item.pk, version=3)
    assert reply["data"]["code"] == "conflict"  # decided once, for everyone
    for s in (one, two, staff):
        await s.close()


async def test_the_recheck_follows_group_changes_and_closes_a_former_reviewer(adapter, settings):  # noqa: F811
    settings.AULA_SOCKET_RECHECK_SECONDS = 1
    world = await make_world()
    # teacher_a also becomes a teacher of course B (another school): after a re-check B's signals reach them.
    teacher, _ = await open_socket(world.teacher_a)
    await database_sync_to_async(factories.enroll)(world.course_b, world.teacher_a, Role.TEACHER)
    await asyncio.sleep(2.2)
    item_b = await database_sync_to_async(held)(world.course_b, world.student_b)
    assert [f["data"]["id"] for f in await signals(teacher, 0.8)] == [item_b.pk]
    # Removed from course A: A's signals stop.
    await database_sync_to_async(
        lambda: Enrollment.objects.filter(user=world.teacher_a, course=world.course_a).update(is_active=False))()
    await asyncio.sleep(2.2)
    await database_sync_to_async(held)(world.course_a, world.student_a)
    assert await signals(teacher, 0.8) == []
    # Removed from B too: they review nothing any more, and the socket is closed.
    await database_sync_to_async(
        lambda: Enrollment.objects.filter(user=world.teacher_a).update(is_active=False))()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6
    while True:
        output = await teacher.comm.receive_output(timeout=max(deadline - loop.time(), 0.01))
        if output["type"] == "websocket.close":
            assert output["code"] == 4403
            break
    await teacher.comm.disconnect()
