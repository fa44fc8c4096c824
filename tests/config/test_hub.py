"""The per-process room hub: one subscription per room, inline delivery, slow sockets isolated."""

from __future__ import annotations

import asyncio
import json

import pytest

from config.realtime import hub as hub_module
from config.realtime.hub import BACKLOG_LIMIT, Member, RoomHub
from config.realtime.transport import encode_frame


class FastSocket:
    def __init__(self):
        self.frames: list[str] = []

    async def send(self, message):
        self.frames.append(message["text"])


class StuckSocket:
    """A client that stopped reading: every send waits until released."""

    def __init__(self):
        self.frames: list[str] = []
        self.release = asyncio.Event()

    async def send(self, message):
        await self.release.wait()
        self.frames.append(message["text"])


async def test_fast_members_receive_inline_without_tasks():
    a, b = FastSocket(), FastSocket()
    ma, mb = Member(a.send), Member(b.send)
    tasks_before = len(asyncio.all_tasks())
    for i in range(100):
        for m in (ma, mb):
            m.deliver(f"f{i}")
    assert len(asyncio.all_tasks()) == tasks_before  # delivered synchronously, no task per frame
    assert a.frames == [f"f{i}" for i in range(100)] == b.frames
    assert ma.delivered == 100


async def test_slow_member_does_not_block_others_and_is_told_to_resync():
    slow, fast = StuckSocket(), FastSocket()
    ms, mf = Member(slow.send), Member(fast.send)
    total = BACKLOG_LIMIT + 50
    for i in range(total):
        ms.deliver(f"f{i}")
        mf.deliver(f"f{i}")
    assert len(fast.frames) == total  # unaffected
    assert ms.dropped > 0
    slow.release.set()
    for _ in range(50):
        await asyncio.sleep(0)
    # The slow socket got the first frame, then a bounded backlog was dropped and it is told to resync.
    assert slow.frames[0] == "f0"
    last = json.loads(slow.frames[-1])
    assert last["type"] == "sys.lagged"
    assert len(slow.frames) < total


@pytest.mark.django_db(transaction=True)
async def test_hub_relays_published_frames_to_local_members_of_the_room():
    from channels.db import database_sync_to_async

    from config.realtime.transport import publish_frame

    room_hub = RoomHub(__import__("django.conf").conf.settings.REDIS_REALTIME_URL)
    inside, outside = FastSocket(), FastSocket()
    await room_hub.join("i1.lsH", Member(inside.send))
    await room_hub.join("i1.lsOther", Member(outside.send))
    await asyncio.sleep(0.2)
    frame = encode_frame("chat.message", {"body": "hi"}, seq=1)
    await database_sync_to_async(publish_frame)("i1.lsH", frame)
    for _ in range(50):
        if inside.frames:
            break
        await asyncio.sleep(0.02)
    assert inside.frames == [frame]
    assert outside.frames == []
    assert room_hub.frames_in == 1


def test_one_hub_per_event_loop():
    async def get():
        return hub_module.hub()

    loop = asyncio.new_event_loop()
    try:
        h1 = loop.run_until_complete(get())
        h2 = loop.run_until_complete(get())
    finally:
        loop.close()
    assert h1 is h2


def _hub_with(room_key: str, *sockets) -> RoomHub:
    # No Redis needed: frames are handed to deliver_local as the reader would.
    room_hub = RoomHub("redis://127.0.0.1:1/0")
    room_hub.rooms[room_key] = {Member(s.send): None for s in sockets}
    return room_hub


def _seqs(sock: FastSocket) -> list:
    return [json.loads(f)["seq"] for f in sock.frames]


async def test_frames_ahead_of_their_seq_wait_for_the_missing_one():
    # Two writers committed 2 and 3 but published 3 first: sockets still see 1, 2, 3 (no resume storm).
    sock = FastSocket()
    room_hub = _hub_with("r", sock)
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=1))
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=3))
    room_hub.deliver_local("r", encode_frame("presence.diff", {}))  # no seq: never held
    assert _seqs(sock) == [1, None]
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=2))
    assert _seqs(sock) == [1, None, 2, 3]
    assert room_hub.reordered == 1


async def test_a_missing_frame_is_waited_for_briefly_then_the_client_resumes():
    sock = FastSocket()
    room_hub = _hub_with("r", sock)
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=5))
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=7))
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=8))
    assert _seqs(sock) == [5]
    await asyncio.sleep(hub_module.REORDER_WAIT + 0.1)
    assert _seqs(sock) == [5, 7, 8]  # the gap is the client's to fill from the database
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=6))  # late: still delivered, never held
    room_hub.deliver_local("r", encode_frame("chat.message", {}, seq=9))
    assert _seqs(sock) == [5, 7, 8, 6, 9]


async def test_seq_is_read_without_parsing_the_frame():
    assert hub_module.frame_seq(encode_frame("chat.message", {"seq": 99}, seq=12)) == 12
    assert hub_module.frame_seq(encode_frame("presence.diff", {"seq": 99})) is None
