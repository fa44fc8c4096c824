"""The WebSocket entry point: origin allowlist, session auth, tenant checks and bad-input handling."""

from __future__ import annotations

import json

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from config.realtime.middleware import origin_allowed
from tests.conftest import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = "http://localhost:8000"


async def refusal_code(comm: WebsocketCommunicator) -> int | None:
    """The close code of a refused socket (accepted, then closed at once), or None if it stayed open."""
    connected, code = await comm.connect()
    if not connected:
        return code
    output = await comm.receive_output(timeout=5)
    return output["code"] if output["type"] == "websocket.close" else None


def communicator(path: str, cookie: str | None = None, origin: str | None = ORIGIN) -> WebsocketCommunicator:
    headers = []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:8000", True),
        ("http://LOCALHOST:8000", True),
        ("http://localhost:8000/", True),
        ("http://localhost:8001", False),
        ("https://localhost:8000", False),
        ("http://evil.localhost:8000", False),
        ("http://localhost:8000.evil.test", False),
        ("http://user@localhost:8000", False),
        ("null", False),
        ("", False),
        (None, False),
    ],
)
def test_origin_allowlist_is_exact(origin, allowed):
    assert origin_allowed(origin, ["http://localhost:8000", "https://school.example"]) is allowed


def test_leading_dot_is_not_a_wildcard():
    assert origin_allowed("https://sibling.example", [".example"]) is False
    assert origin_allowed("https://a.school.example", ["https://school.example"]) is False


async def test_foreign_origin_is_refused(world):
    cookie = await _cookie(world.student_a)
    comm = communicator(f"/ws/v1/sessions/{world.session_a.pk}/", cookie, origin="https://evil.example")
    connected, code = await comm.connect()
    assert not connected
    await comm.disconnect()


async def test_missing_origin_is_refused(world):
    cookie = await _cookie(world.student_a)
    comm = communicator(f"/ws/v1/sessions/{world.session_a.pk}/", cookie, origin=None)
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def test_anonymous_is_refused_with_4401(world):
    comm = communicator(f"/ws/v1/sessions/{world.session_a.pk}/")
    assert await refusal_code(comm) == 4401
    await comm.disconnect()


async def test_enrolled_student_joins_and_gets_welcome(world):
    comm = communicator(f"/ws/v1/sessions/{world.session_a.pk}/", await _cookie(world.student_a))
    connected, _ = await comm.connect()
    assert connected
    frame = json.loads(await comm.receive_from())
    assert frame["type"] == "snapshot"
    assert frame["data"]["you"]["id"] == world.student_a.pk
    assert frame["data"]["you"]["role"] == "student"
    assert frame["v"] == 1 and frame["seq"] is None
    await comm.disconnect()


async def test_other_school_session_looks_missing(world, caplog):
    comm = communicator(f"/ws/v1/sessions/{world.session_c.pk}/", await _cookie(world.student_a))
    assert await refusal_code(comm) == 4404
    assert any("websocket refused" in r.getMessage() for r in caplog.records)
    await comm.disconnect()


async def test_same_school_not_enrolled_is_forbidden(world):
    from channels.db import database_sync_to_async

    from classrooms import services
    from classrooms.models import Role

    # student_b is at school B; make them a member of school A without enrollment in course A.
    await database_sync_to_async(services.membership_grant)(user=world.student_b, institution=world.school_a,
                                                            role=Role.STUDENT)
    comm = communicator(f"/ws/v1/sessions/{world.session_a.pk}/", await _cookie(world.student_b))
    assert await refusal_code(comm) == 4403
    await comm.disconnect()


async def test_unknown_route_is_refused(world):
    comm = communicator("/ws/v1/nothing-here/", await _cookie(world.student_a))
    assert await refusal_code(comm) == 4404
    await comm.disconnect()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2, 3]", "invalid_message"),
        ('{"no_type": 1}', "invalid_message"),
        ('{"type": "launch.missiles"}', "unknown_type"),
        ('{"type": "ping", "unexpected": true}', "invalid_fields"),
        ('{"type": "ping", "ref": 42}', "invalid_fields"),
    ],
)
async def test_bad_frames_get_error_frames_and_socket_stays_open(world, payload, code):
    comm = communicator(f"/ws/v1/sessions/{world.session_a.pk}/", await _cookie(world.student_a))
    assert (await comm.connect())[0]
    await comm.receive_from()  # snapshot
    await comm.receive_from()  # sys.sample: the first socket of a room is latency-sampled (docs/observability.md)
    await comm.send_to(text_data=payload)
    frame = json.loads(await comm.receive_from())
    assert frame["type"] == "error"
    assert frame["data"]["code"] == code
    # still open and serving
    await comm.send_to(text_data='{"type": "ping", "ref": "p1"}')
    pong = json.loads(await comm.receive_from())
    assert pong["type"] == "pong" and pong["data"]["ref"] == "p1"
    await comm.disconnect()


async def test_oversized_and_binary_frames_get_error_frames(world):
    comm = communicator(f"/ws/v1/sessions/{world.session_a.pk}/", await _cookie(world.student_a))
    assert (await comm.connect())[0]
    await comm.receive_from()
    await comm.receive_from()  # sys.sample
    big = json.dumps({"type": "ping", "ref": "x", "pad": "é" * settings.AULA_WS_MAX_MESSAGE_BYTES})
    await comm.send_to(text_data=big)
    frame = json.loads(await comm.receive_from())
    assert frame["data"]["code"] == "too_large"
    assert frame["data"]["details"]["limit"] == settings.AULA_WS_MAX_MESSAGE_BYTES
    await comm.send_to(bytes_data=b"\x00\x01")
    frame = json.loads(await comm.receive_from())
    assert frame["data"]["code"] == "binary_not_supported"
    await comm.disconnect()


async def _cookie(user) -> str:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(login_cookie)(user)
