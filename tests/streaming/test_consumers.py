"""Stream sockets end to end in one process (WebsocketCommunicator + real Redis + PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from config.realtime.hub import hub
from streaming import services
from streaming.audience import StreamAudience
from streaming.consumers import VIEWER_COOKIE, viewer_cookie_value
from streaming.models import ChannelRole, StreamChatMessage
from tests import factories
from tests.classrooms.test_consumers import Client
from tests.conftest import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(stream, user=None, query: str = "", vid: str | None = None) -> tuple[Client, dict]:
    cookies = []
    if user is not None:
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={await database_sync_to_async(login_cookie)(user)}")
    if vid is not None:
        cookies.append(f"{VIEWER_COOKIE}={vid}")
    headers = [(b"origin", b"http://localhost:8000")]
    if cookies:
        headers.append((b"cookie", "; ".join(cookies).encode()))
    comm = WebsocketCommunicator(application, f"/ws/v1/streams/{stream.pk}/{query}", headers=headers)
    connected, code = await comm.connect(timeout=5)
    assert connected, code
    client = Client(comm)
    return client, await client.next("snapshot")


@database_sync_to_async
def cast():
    creator, mod, viewer = factories.user(), factories.user(), factories.user()
    ch = factories.channel(owner=creator)
    factories.channel_role(ch, mod, ChannelRole.Kind.MODERATOR)
    return factories.stream(ch), creator, mod, viewer


async def test_anonymous_viewer_watches_but_cannot_write_and_bad_frames_get_error_frames():
    stream, creator, mod, viewer = await cast()
    anon, snap = await connect(stream)
    assert snap["data"]["you"]["role"] == "anonymous" and snap["data"]["stream"]["status"] == "live"
    for type_, fields in [("chat.send", {"body": "hi"}), ("reaction", {"emoji": "fire"}),
                          ("question.ask", {"body": "q?"}), ("chat.lockdown", {"on": True})]:
        reply = await anon.request(type_, **fields)
        assert reply["type"] == "error" and reply["data"]["code"] == "forbidden", type_
    await anon.comm.send_to(text_data="{not json")
    assert (await anon.next("error"))["data"]["code"] == "invalid_json"
    reply = await anon.request("reaction", emoji="poop")
    assert reply["data"]["code"] == "invalid_fields"
    # Still open and still receiving broadcasts.
    await database_sync_to_async(services.chat_message_post)(stream=stream, author=viewer, body="hello all")
    msg = await anon.next("chat.message")
    assert msg["data"]["body"] == "hello all" and msg["seq"] is None and msg["data"]["cseq"] == 1
    await anon.close()


async def test_staff_only_actions_and_held_messages_flow():
    stream, creator, mod, viewer = await cast()
    staff, _ = await connect(stream, mod)
    user, _ = await connect(stream, viewer)
    assert (await user.request("chat.settings", slow_seconds=5))["data"]["code"] == "forbidden"
    ack = await staff.request("chat.lockdown", on=True)
    assert ack["type"] == "ack" and ack["data"]["settings"]["lockdown"]
    assert (await user.next("chat.settings"))["data"]["members_only"]
    await staff.request("chat.settings", members_only=False)
    ack = await user.request("chat.send", body="please approve me")
    assert ack["type"] == "ack" and ack["data"]["pending_review"]
    held = await staff.next("chat.held")
    assert held["data"]["body"] == "please approve me"
    ack = await staff.request("chat.approve", message_id=held["data"]["id"])
    assert ack["data"]["cseq"] == 1
    assert (await user.next("chat.message"))["data"]["body"] == "please approve me"
    await staff.close()
    await user.close()


async def test_tabs_popouts_and_embeds_of_one_identity_count_once_across_processes():
    stream, creator, mod, viewer = await cast()
    a = StreamAudience(hub()._redis, "proc-a", run_ticker=False)
    b = StreamAudience(hub()._redis, "proc-b", run_ticker=False)
    assert await a.join(stream.pk, f"u{viewer.pk}")
    assert not await a.join(stream.pk, f"u{viewer.pk}")  # a second tab
    assert not await b.join(stream.pk, f"u{viewer.pk}")  # the chat pop-out served by another process
    assert await b.join(stream.pk, "aVISITOR")
    assert (await a.count(stream.pk))[0] == 2
    assert not await a.leave(stream.pk, f"u{viewer.pk}")
    assert not await a.leave(stream.pk, f"u{viewer.pk}")  # still watching through process b
    assert (await b.count(stream.pk)) == (2, 2)
    assert await b.leave(stream.pk, f"u{viewer.pk}")
    assert (await a.count(stream.pk)) == (1, 2)  # the peak stays


async def test_joins_and_leaves_made_at_once_go_in_one_batch_and_each_identity_is_new_once():
    stream, *_ = await cast()
    a = StreamAudience(hub()._redis, "batch-a", run_ticker=False)
    # 200 viewers and a second tab of each of the first 50, all joining in the same turn of the loop.
    joins = [a.join(stream.pk, f"aV{i:03d}") for i in range(200)] + [a.join(stream.pk, f"aV{i:03d}") for i in range(50)]
    new = await asyncio.gather(*joins)
    assert sum(new) == 200 and not any(new[200:])
    assert (await a.count(stream.pk))[0] == 200
    gone = await asyncio.gather(*[a.leave(stream.pk, f"aV{i:03d}") for i in range(100)])
    assert gone == [False] * 50 + [True] * 50  # the first 50 still have a tab open
    assert (await a.count(stream.pk)) == (150, 200)
    # A person's reaction budget is shared by their tabs here; an identity that is not watching has none.
    budget = a.reaction_limit(stream.pk, "aV000")
    assert budget is a.reaction_limit(stream.pk, "aV000")
    assert not a.reaction_limit(stream.pk, "aNOBODY").hit().allowed


async def test_a_dead_process_ghosts_drop_after_the_ttl(settings):
    stream, *_ = await cast()
    dead = StreamAudience(hub()._redis, "dead", run_ticker=False)
    alive = StreamAudience(hub()._redis, "alive", run_ticker=False)
    await dead.join(stream.pk, "aGHOST")
    await alive.join(stream.pk, "aREAL")
    # Scaled down: heartbeats every 10 ms, a 50 ms TTL; the dead one has been silent for 100 ms.
    settings.AULA_STREAM_HEARTBEAT_SECONDS, settings.AULA_STREAM_VIEWER_TTL_SECONDS = 0.01, 0.05
    await asyncio.sleep(0.1)
    await alive.refresh(stream.pk)
    assert (await alive.count(stream.pk))[0] == 1


async def test_sockets_of_one_anonymous_cookie_count_once_and_a_forged_one_counts_alone():
    stream, *_ = await cast()
    vid = viewer_cookie_value()
    tab, _ = await connect(stream, vid=vid, query="?surface=watch")
    popout, _ = await connect(stream, vid=vid, query="?surface=chat")
    forged, _ = await connect(stream, vid="0" * 32, query="?surface=embed")
    from streaming.audience import audience

    assert (await audience().count(stream.pk))[0] == 2
    for c in (tab, popout, forged):
        await c.close()


async def test_reactions_are_counted_exactly_across_concurrent_window_closes():
    stream, *_ = await cast()
    a = StreamAudience(hub()._redis, "pa", run_ticker=False)
    b = StreamAudience(hub()._redis, "pb", run_ticker=False)
    totals: dict[str, int] = {}
    stop = asyncio.Event()

    async def closer(aud):
        while not stop.is_set():
            for emoji, n in (await aud.close_window(stream.pk)).items():
                totals[emoji] = totals.get(emoji, 0) + n
            await asyncio.sleep(0)

    closers = [asyncio.ensure_future(closer(a)), asyncio.ensure_future(closer(b))]
    await asyncio.gather(*[(a if i % 2 else b).react(stream.pk, "fire") for i in range(984)],
                         *[a.react(stream.pk, "heart") for _ in range(16)])
    stop.set()
    await asyncio.gather(*closers)
    for emoji, n in (await a.close_window(stream.pk)).items():
        totals[emoji] = totals.get(emoji, 0) + n
    assert totals == {"fire": 984, "heart": 16}


async def test_one_reactions_frame_per_window_and_a_spammer_is_limited_alone():
    stream, creator, mod, viewer = await cast()
    spammer, _ = await connect(stream, viewer)
    fan, _ = await connect(stream, mod)
    limited = 0
    for _ in range(settings.AULA_STREAM_REACTIONS_PER_SEC + 5):
        reply = await spammer.request("reaction", emoji="fire")
        if reply["type"] == "error":
            assert reply["data"]["code"] == "rate_limited" and reply["data"]["details"]["retry_after"] > 0
            limited += 1
    assert limited >= 5
    assert (await fan.request("reaction", emoji="clap"))["type"] == "ack"  # others unaffected
    frame = await fan.next("reactions", timeout=5)
    counts = frame["data"]["counts"]
    # The window may have closed between the sends: collect until every counted reaction is seen.
    seen = dict(counts)
    while sum(seen.values()) < settings.AULA_STREAM_REACTIONS_PER_SEC + 1:
        more = (await fan.next("reactions", timeout=5))["data"]["counts"]
        for k, v in more.items():
            seen[k] = seen.get(k, 0) + v
    assert seen == {"fire": settings.AULA_STREAM_REACTIONS_PER_SEC, "clap": 1}
    assert frame["data"]["window_ms"] == settings.AULA_STREAM_REACTION_WINDOW_MS
    await spammer.close()
    await fan.close()


async def test_viewers_frame_is_published_with_count_and_peak():
    stream, creator, mod, viewer = await cast()
    a, _ = await connect(stream, viewer)
    b, _ = await connect(stream)
    frame = await a.next("viewers", timeout=5)
    while frame["data"]["count"] != 2:
        frame = await a.next("viewers", timeout=5)
    assert frame["data"] == {"count": 2, "peak": 2}
    await a.close()
    await b.close()


async def test_chat_flood_is_sampled_for_viewers_but_stored_and_replayable(settings):
    settings.AULA_STREAM_CHAT_FANOUT_PER_SEC = 5
    stream, creator, mod, viewer = await cast()
    watcher, _ = await connect(stream)
    staff, _ = await connect(stream, mod)
    authors = await database_sync_to_async(lambda: [factories.user() for _ in range(4)])()

    def flood():
        for i in range(40):
            services.chat_message_post(stream=stream, author=authors[i % 4], body=f"msg {i}")

    started = time.monotonic()
    await database_sync_to_async(flood)()
    assert await database_sync_to_async(StreamChatMessage.objects.filter(stream=stream).count)() == 40
    staff_bodies = [(await staff.next("chat.message"))["data"]["body"] for _ in range(40)]
    assert staff_bodies == [f"msg {i}" for i in range(40)]  # the staff get everything
    full, skipped, last = 0, 0, 0
    while full + skipped < 40:
        frame = await watcher.next_any(("chat.message", "chat.sampled"), timeout=5)
        if frame["type"] == "chat.message":
            full += 1
            last = max(last, frame["data"]["cseq"])
        else:
            skipped += frame["data"]["skipped"]
            last = max(last, frame["data"]["last_cseq"])
    # The viewer has accounted for every message up to the last one, whether the last frame was a summary or
    # (when the flood crossed a second boundary on a slow machine) the message itself.
    seconds = int(time.monotonic() - started) + 2  # whole seconds the elapsed time touches, both ends
    assert full <= 5 * seconds and skipped > 0 and last == 40
    await watcher.send(type="chat.history", ref="h", after_cseq=0, limit=200)
    history = await watcher.next("chat.history")
    assert [m["body"] for m in history["data"]["messages"]] == [f"msg {i}" for i in range(40)]
    await watcher.close()
    await staff.close()


async def test_resume_replays_room_events_and_chat():
    stream, creator, mod, viewer = await cast()
    client, snap = await connect(stream, viewer)
    token, last_seq, cseq = snap["data"]["resume_token"], snap["data"]["last_seq"], snap["data"]["chat_cseq"]
    await client.close()

    def missed():
        services.chat_message_post(stream=stream, author=mod, body="while you were away")
        services.chat_settings_set(stream=stream, actor=mod, slow_seconds=3)

    await database_sync_to_async(missed)()
    client, _ = None, None
    comm_client, first = await _connect_raw(stream, viewer, f"?last_seq={last_seq}&chat_cseq={cseq}&resume={token}")
    types = [first["type"]]
    while types[-1] != "resume.done":
        types.append((await comm_client.next_any(("chat.settings", "chat.message", "resume.done")))["type"])
    assert types == ["chat.settings", "chat.message", "resume.done"]
    await comm_client.close()


async def _connect_raw(stream, user, query):
    cookie = await database_sync_to_async(login_cookie)(user)
    comm = WebsocketCommunicator(application, f"/ws/v1/streams/{stream.pk}/{query}", headers=[
        (b"origin", b"http://localhost:8000"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, code = await comm.connect(timeout=5)
    assert connected, code
    client = Client(comm)
    return client, json.loads(await comm.receive_from(timeout=5))




async def test_a_join_after_the_last_local_viewer_left_reads_a_fresh_snapshot():
    """The shared snapshot is reused only while this process is in the room: once its last viewer left, no
    frame arrives to say the stream changed, so the next join must read it again."""
    stream, creator, mod, viewer = await cast()
    client, _ = await connect(stream, viewer)
    await client.close()
    await database_sync_to_async(services.chat_message_post)(stream=stream, author=mod, body="while nobody here watched")
    client, snap = await connect(stream, viewer)
    assert "while nobody here watched" in [m["body"] for m in snap["data"]["chat"]]
    await client.close()
