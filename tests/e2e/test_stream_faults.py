"""Fault tests for the stream room over real uvicorn processes (docs/protocol.md, "Streams").

The servers share the test PostgreSQL and Redis (no store is killed here, so no private stack is needed):
a viewer's network is cut for 20 s by a TCP relay (tests/e2e/faultkit.py `TcpProxy`), a server process is
SIGKILLed under its viewers, and one viewer spams reactions and malformed frames. Clients follow the protocol
(track `last_seq` and `chat_cseq`, reconnect with `?last_seq=&chat_cseq=&resume=`, to the next server when one
is gone) and the viewer count is checked in every `viewers` frame another socket sees and in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings

from config.realtime.transport import _redis
from streaming import audience, services
from streaming.consumers import VIEWER_COOKIE, viewer_cookie_value
from streaming.models import ChannelRole, Stream
from tests import factories
from tests.conftest import login_cookie
from tests.e2e.faultkit import TcpProxy, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]

NO_RECONNECT = {4401, 4403, 4404, 4409, 1009}


@dataclass
class StreamClient:
    """One viewer's socket: tracks `last_seq`/`chat_cseq`, resumes after a drop, records what it saw."""

    name: str
    routes: list[tuple[str, str]]  # (ws base, origin) to try in order: a server, or a relay in front of one
    stream_id: int
    cookies: dict[str, str] = field(default_factory=dict)
    reconnect: bool = True
    ping: float | None = None  # a client-side ping notices a dead network (a browser's socket would, too)

    route: int = 0
    last_seq: int | None = None
    chat_cseq: int | None = None
    token: str | None = None
    cseqs: list[int] = field(default_factory=list)  # every chat.message received, replays included
    snapshots: int = 0
    resumes: int = 0
    viewers: list[tuple[float, int, int]] = field(default_factory=list)  # (time, count, peak), snapshots too
    reactions: dict[str, int] = field(default_factory=dict)
    replies: dict[str, dict] = field(default_factory=dict)
    unreferenced_errors: list[dict] = field(default_factory=list)
    connects: list[int] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)

    def __post_init__(self):
        self.ws = None
        self.ready = asyncio.Event()
        self._stop = False

    def url(self) -> str:
        query = {"surface": "watch"}
        if self.token and self.last_seq is not None:
            query |= {"last_seq": self.last_seq, "resume": self.token}
            if self.chat_cseq is not None:
                query["chat_cseq"] = self.chat_cseq
        return f"{self.routes[self.route][0]}/ws/v1/streams/{self.stream_id}/?{urllib.parse.urlencode(query)}"

    async def start(self, timeout: float = 10) -> StreamClient:
        self._task = asyncio.create_task(self._run(), name=f"stream-client-{self.name}")
        await asyncio.wait_for(self.ready.wait(), timeout)
        return self

    async def _run(self) -> None:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        while not self._stop:
            try:
                self.ws = await websockets.connect(
                    self.url(), origin=self.routes[self.route][1], open_timeout=2, close_timeout=1,
                    ping_interval=self.ping, ping_timeout=self.ping, compression=None,
                    additional_headers={"Cookie": cookie} if cookie else {})
            except Exception:  # refused, timed out: the server is gone or the network is down
                self.route = (self.route + 1) % len(self.routes)
                await asyncio.sleep(0.3)
                continue
            self.connects.append(self.route)
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in self.ws:
                    self._on_frame(json.loads(raw))
            self.ready.clear()
            self.closes.append(self.ws.close_code)
            if not self.reconnect or self.ws.close_code in NO_RECONNECT:
                return

    def _on_frame(self, frame: dict) -> None:
        kind, data = frame["type"], frame.get("data") or {}
        if kind == "snapshot":
            self.snapshots += 1
            self.last_seq, self.chat_cseq, self.token = data["last_seq"], data["chat_cseq"], data["resume_token"]
            self.viewers.append((time.monotonic(), data["viewers"]["count"], data["viewers"]["peak"]))
            self.ready.set()
        elif kind == "resume.done":
            self.resumes += 1
            self.last_seq, self.token = data["last_seq"], data["resume_token"]
            if data.get("chat_cseq") is not None:
                self.chat_cseq = max(self.chat_cseq or 0, data["chat_cseq"])
            self.ready.set()
        elif kind == "chat.message":
            self.cseqs.append(data["cseq"])
            self.chat_cseq = max(self.chat_cseq or 0, data["cseq"])
        elif kind == "viewers":
            self.viewers.append((time.monotonic(), data["count"], data["peak"]))
        elif kind == "reactions":
            for emoji, n in data["counts"].items():
                self.reactions[emoji] = self.reactions.get(emoji, 0) + n
        elif kind in ("ack", "error"):
            if data.get("ref"):
                self.replies[data["ref"]] = frame
            else:
                self.unreferenced_errors.append(data)
        elif frame.get("seq") is not None:
            self.last_seq = frame["seq"]

    async def send(self, type_: str, **fields) -> str:
        ref = uuid.uuid4().hex[:12]
        await self.ws.send(json.dumps({"type": type_, "ref": ref, **fields}))
        return ref

    async def request(self, type_: str, timeout: float = 5, **fields) -> dict:
        ref = await self.send(type_, **fields)
        await wait_until(lambda: ref in self.replies, timeout, what=f"a reply to {type_}")
        return self.replies[ref]

    def last_count(self) -> int | None:
        return self.viewers[-1][1] if self.viewers else None

    async def close(self) -> None:
        self._stop = True
        if self.ws is not None:
            await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 5)


@pytest.fixture
def cast(transactional_db):
    ch = factories.channel()
    users = [factories.user() for _ in range(6)]
    factories.channel_role(ch, users[0], ChannelRole.Kind.MEMBER)
    return {"stream": factories.stream(ch), "cookies": [{settings.SESSION_COOKIE_NAME: login_cookie(u)} for u in users]}


def viewers_in_redis(stream_id: int) -> int:
    return _redis().hlen(audience._k(stream_id, "vh"))


async def close_all(clients) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def test_viewer_offline_for_20_s_resumes_with_exactly_the_gap_and_is_never_counted_twice(cast, server_factory):
    stream, cookies = cast["stream"], cast["cookies"]
    server = server_factory(kind="uvicorn")
    proxy = await TcpProxy(server.port).start()
    direct = [(server.ws_base, server.origin)]
    sender = await StreamClient("sender", direct, stream.pk, cookies[0]).start()
    observer = await StreamClient("observer", direct, stream.pk, cookies[1]).start()
    viewer = await StreamClient("viewer", [(proxy.ws_base, server.origin)], stream.pk, cookies[2], ping=1.0).start()
    clients = [sender, observer, viewer]
    try:
        await wait_until(lambda: observer.last_count() == 3, 10, what="three viewers")
        for i in range(3):
            assert (await sender.request("chat.send", body=f"before {i}"))["type"] == "ack"
        await wait_until(lambda: viewer.cseqs == [1, 2, 3], 5, what="the first messages")

        samples: list[int] = []
        sampling = True

        async def sample_redis():
            while sampling:
                samples.append(viewers_in_redis(stream.pk))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample_redis())
        proxy.cut()
        cut_at = time.monotonic()
        sent = []
        while time.monotonic() - cut_at < 20:  # others chat while the viewer is offline
            ack = await sender.request("chat.send", body=f"during {len(sent)}")
            if ack["type"] == "error":  # the sender's own chat limit (5 per 5 s): wait as told, as a page does
                assert ack["data"]["code"] == "rate_limited", ack
                await asyncio.sleep(float(ack["data"].get("details", {}).get("retry_after") or 1))
                continue
            sent.append(ack["data"]["cseq"])
            await asyncio.sleep(2)
        assert not viewer.ready.is_set() and viewer.closes  # it noticed the dead network and is retrying
        assert viewer.cseqs == [1, 2, 3]
        proxy.restore()
        await wait_until(lambda: viewer.ready.is_set() and viewer.chat_cseq == sent[-1], 15, what="the resume")
        sampling = False
        await sampler

        assert viewer.cseqs == [1, 2, 3, *sent]  # exactly the gap: nothing lost, nothing twice
        assert viewer.snapshots == 1 and viewer.resumes == 1  # resumed, not re-snapshotted
        # The viewer's old socket is still open on the server (the cut hid its end); it counts once anyway.
        assert max(c for _, c, _ in observer.viewers) == 3, observer.viewers
        assert samples and max(samples) == 3, samples
        assert viewers_in_redis(stream.pk) == 3
        assert (await viewer.request("chat.send", body="back"))["type"] == "ack"
    finally:
        await close_all(clients)
        await proxy.close()


async def test_killed_server_viewers_move_over_ghosts_drop_within_30_s_and_peak_stays_exact(cast, server_factory):
    stream, cookies = cast["stream"], cast["cookies"]
    a, b = server_factory(kind="uvicorn"), server_factory(kind="uvicorn")
    route_a, route_b = (a.ws_base, a.origin), (b.ws_base, b.origin)
    anon_cookie = {VIEWER_COOKIE: viewer_cookie_value()}  # what the watch page gives an anonymous browser
    # Signed in, anonymous with the watch page's cookie, and anonymous without any cookie (an embed on a site
    # whose browser blocks third-party cookies): each must count once after moving.
    movers = [StreamClient(f"mover{i}", [route_a, route_b], stream.pk, c) for i, c in
              enumerate([cookies[0], cookies[1], anon_cookie, {}])]
    # Two whose tabs died with the server (they never come back): their entries are the ghosts to drop.
    gone = [StreamClient(f"gone{i}", [route_a], stream.pk, c, reconnect=False) for i, c in
            enumerate([cookies[2], cookies[3]])]
    stay = StreamClient("stay", [route_b], stream.pk, cookies[4])
    observer = StreamClient("observer", [route_b], stream.pk, cookies[5])
    clients = [*movers, *gone, stay, observer]
    try:
        for c in clients:
            await c.start()
        await wait_until(lambda: observer.last_count() == 8, 10, what="eight viewers")
        assert all(x.connects == [0] for x in [*movers, *gone])

        a.kill()
        killed_at = time.monotonic()
        await wait_until(lambda: all(m.ready.is_set() and m.connects[-1] == 1 for m in movers), 15,
                         what="the viewers of the dead server to reconnect to the other")
        assert all(m.resumes == 1 for m in movers)
        await wait_until(lambda: observer.last_count() == 6, 35, what="the ghosts to drop")
        dropped_after = observer.viewers[-1][0] - killed_at
        assert dropped_after <= 30, dropped_after
        # Reconnected identities (signed in and anonymous) counted once next to their own ghosts.
        counts_since_kill = [c for t, c, _ in observer.viewers if t >= killed_at]
        assert max(c for _, c, _ in observer.viewers) == 8 and max(counts_since_kill, default=6) <= 8, observer.viewers
        assert viewers_in_redis(stream.pk) == 6
        assert audience.peak_read(stream.pk)[0] == 8
        assert observer.viewers[-1][2] == 8
        ended = await database_sync_to_async(services.stream_end)(stream=stream, actor=None)
        assert ended.peak_viewers == 8
        assert (await database_sync_to_async(Stream.objects.get)(pk=stream.pk)).peak_viewers == 8
    finally:
        await close_all(clients)


async def test_reaction_spam_is_throttled_for_the_spammer_only_and_bad_frames_get_errors(cast, server_factory):
    stream, cookies = cast["stream"], cast["cookies"]
    server = server_factory(kind="uvicorn")
    route = [(server.ws_base, server.origin)]
    spammer = await StreamClient("spammer", route, stream.pk, cookies[0]).start()
    calm = await StreamClient("calm", route, stream.pk, cookies[1]).start()
    observer = await StreamClient("observer", route, stream.pk, cookies[2]).start()
    clients = [spammer, calm, observer]
    try:
        async def spam():
            return [await spammer.send("reaction", emoji="fire") for _ in range(100)]

        async def calm_reactions():
            refs = []
            for _ in range(4):
                refs.append(await calm.send("reaction", emoji="heart"))
                await asyncio.sleep(0.3)
            return refs

        spam_refs, calm_refs = await asyncio.gather(spam(), calm_reactions())
        await wait_until(lambda: all(r in spammer.replies for r in spam_refs)
                         and all(r in calm.replies for r in calm_refs), 10, what="every reply")
        accepted = [r for r in spam_refs if spammer.replies[r]["type"] == "ack"]
        refused = [spammer.replies[r]["data"] for r in spam_refs if spammer.replies[r]["type"] == "error"]
        assert 1 <= len(accepted) <= 2 * settings.AULA_STREAM_REACTIONS_PER_SEC
        assert refused and all(e["code"] == "rate_limited" for e in refused) and len(accepted) + len(refused) == 100
        assert all(calm.replies[r]["type"] == "ack" for r in calm_refs)  # the others are not throttled
        # Only accepted reactions are counted, each exactly once, in the batched frames everyone gets.
        await wait_until(lambda: observer.reactions == {"fire": len(accepted), "heart": 4}, 5,
                         what="the reaction windows")

        # Malformed frames: an error frame each, and the socket stays open and useful.
        for raw, code in [("{not json", "invalid_json"), ("[1, 2]", "invalid_message"),
                          ('{"type": "no.such.thing"}', "unknown_type")]:
            before = len(spammer.unreferenced_errors)
            await spammer.ws.send(raw)
            await wait_until(lambda b=before: len(spammer.unreferenced_errors) > b, 5, what=f"an error for {raw}")
            assert spammer.unreferenced_errors[-1]["code"] == code
        bad = await spammer.request("reaction", emoji="poop")
        assert bad["type"] == "error" and bad["data"]["code"] == "invalid_fields"
        bad = await spammer.request("chat.send", body=12)
        assert bad["type"] == "error" and bad["data"]["code"] == "invalid_fields"
        await spammer.ws.send(b"\x00\x01binary")
        await wait_until(lambda: spammer.unreferenced_errors[-1]["code"] == "binary_not_supported", 5,
                         what="an error for a binary frame")
        assert (await spammer.request("chat.send", body="still here"))["type"] == "ack"
        assert spammer.closes == [] and spammer.connects == [0]
    finally:
        await close_all(clients)
