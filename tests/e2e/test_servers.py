"""End to end against real server processes: uvicorn (production serving) and daphne (runserver)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import websockets
from django.conf import settings

from tests.conftest import login_cookie

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def open_socket(server, path: str, cookie: str | None, origin: str | None = None, **kwargs):
    headers = {}
    if cookie:
        headers["Cookie"] = f"{settings.SESSION_COOKIE_NAME}={cookie}"
    return await websockets.connect(server.ws_base + path, origin=origin or server.origin,
                                    additional_headers=headers, open_timeout=10, **kwargs)


async def recv_json(ws, timeout: float = 10) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
def test_server_serves_http_and_a_websocket_session(world, server_factory, kind):
    server = server_factory(kind=kind)
    with urllib.request.urlopen(f"{server.origin}/healthz/", timeout=5) as r:
        assert json.load(r) == {"status": "ok"}
    cookie = login_cookie(world.student_a)

    async def scenario():
        ws = await open_socket(server, f"/ws/v1/sessions/{world.session_a.pk}/", cookie)
        welcome = await recv_json(ws)
        assert welcome["type"] == "snapshot"
        assert welcome["data"]["you"]["id"] == world.student_a.pk
        assert (await recv_json(ws))["type"] == "sys.sample"  # the first socket of a room in a process
        await ws.send("{broken")
        assert (await recv_json(ws))["data"]["code"] == "invalid_json"
        await ws.send(json.dumps({"type": "ping", "ref": "a"}))
        assert (await recv_json(ws))["type"] == "pong"
        await ws.close()

    asyncio.run(scenario())


def test_uvicorn_refuses_foreign_origin_and_enforces_frame_limits(world, server_factory):
    server = server_factory(kind="uvicorn")
    cookie = login_cookie(world.student_a)
    path = f"/ws/v1/sessions/{world.session_a.pk}/"

    async def scenario():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await open_socket(server, path, cookie, origin="https://evil.example")
        assert refused.value.response.status_code == 403

        ws = await open_socket(server, path, cookie, max_size=None)
        await recv_json(ws)
        await recv_json(ws)  # sys.sample
        # Over the app's limit but under the server's: an error frame, the socket stays open.
        await ws.send(json.dumps({"type": "ping", "pad": "x" * (settings.AULA_WS_MAX_MESSAGE_BYTES + 10)}))
        assert (await recv_json(ws))["data"]["code"] == "too_large"
        await ws.send(json.dumps({"type": "ping", "ref": "still-open"}))
        assert (await recv_json(ws))["data"]["ref"] == "still-open"
        # Over the server's 1 MiB frame limit: the server closes with 1009 (message too big).
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            # The server may close while the frame is still being written: then `send` raises.
            await ws.send("x" * (settings.AULA_WS_SERVER_MAX_BYTES + 1))
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1009

    asyncio.run(scenario())


def test_events_reach_members_on_every_server_process(world, server_factory):
    """Two server processes share one room through Redis: one publish reaches sockets on both."""
    from config.realtime.transport import room_event_emit

    one, two = server_factory(kind="uvicorn"), server_factory(kind="uvicorn")
    cookie_a = login_cookie(world.student_a)
    cookie_t = login_cookie(world.teacher_a)
    path = f"/ws/v1/sessions/{world.session_a.pk}/"

    async def scenario():
        ws1 = await open_socket(one, path, cookie_a)
        ws2 = await open_socket(two, path, cookie_t)
        await recv_json(ws1)
        await recv_json(ws2)
        await asyncio.sleep(0.6)  # subscriptions settle; presence diffs of the two joins pass
        while True:  # drain presence traffic
            try:
                await asyncio.wait_for(ws1.recv(), 0.3)
            except TimeoutError:
                break
        while True:
            try:
                await asyncio.wait_for(ws2.recv(), 0.3)
            except TimeoutError:
                break
        from channels.db import database_sync_to_async

        event = await database_sync_to_async(room_event_emit)(
            f"i{world.school_a.pk}.ls{world.session_a.pk}", "test.event", {"hello": "both"})
        got1, got2 = await recv_json(ws1), await recv_json(ws2)
        assert got1 == got2
        assert got1["type"] == "test.event" and got1["seq"] == event.seq and got1["data"] == {"hello": "both"}
        await ws1.close()
        await ws2.close()

    asyncio.run(scenario())


def test_logout_closes_the_socket_within_the_recheck_period(world, server_factory):
    from django.contrib.sessions.backends.cached_db import SessionStore

    server = server_factory(kind="uvicorn")  # AULA_SOCKET_RECHECK_SECONDS=2 in the test server
    cookie = login_cookie(world.student_a)

    async def scenario():
        ws = await open_socket(server, f"/ws/v1/sessions/{world.session_a.pk}/", cookie)
        await recv_json(ws)
        from channels.db import database_sync_to_async

        await database_sync_to_async(SessionStore(cookie).delete)()
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 4401

    asyncio.run(scenario())
