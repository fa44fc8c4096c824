"""Tools for whiteboard fault tests against real server processes: uvicorn processes on the shared test
PostgreSQL and Redis (log kept for assertions, killable and freezable), a collab socket client, a pycrdt
replica playing the browser's Yjs document, and a participant who draws strokes the way the browser sends them.

The protocol followed is docs/collab.md: `update` frames acknowledged once stored, `sync` both ways with
state vectors (the server's answer brings what the client lacks and the server's state vector, from which the
client computes what the server lacks and sends it with a second `sync`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import time
from pathlib import Path

import websockets
from django.conf import settings
from pycrdt import Array, Doc, Map

from tests.e2e.faultkit import LoggedServer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


# --- server processes ----------------------------------------------------------------------------------

class CollabServer(LoggedServer):
    """One uvicorn process on a free port using the test database and Redis."""

    def __init__(self, name: str, log_dir: Path, extra_env: dict | None = None):
        from django.db import connection

        db = connection.settings_dict
        super().__init__(name, log_dir, {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "AULA_SOCKET_RECHECK_SECONDS": "2",
            "AULA_LOG_LEVEL": "INFO", "AULA_LOG_FORMAT": "text",
            **(extra_env or {})})


# --- the socket ----------------------------------------------------------------------------------------

class Refused(Exception):
    def __init__(self, code: int | None):
        super().__init__(f"socket closed with {code}")
        self.code = code


class CollabSocket:
    """One `/ws/v1/sessions/<id>/collab/` socket. A reader task files every frame; `request` waits for the
    ack or error carrying its ref; `closed` resolves with the close code when the socket goes."""

    _refs = itertools.count(1)

    def __init__(self, name: str, ws):
        self.name = name
        self.ws = ws
        self.frames: list[dict] = []
        self.snapshot: dict | None = None
        self._arrived = asyncio.Event()
        self._replies: dict[str, asyncio.Future] = {}
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read(), name=f"collab-{name}")

    @classmethod
    async def open(cls, name: str, server: CollabServer, session_id: int, cookie: str,
                   timeout: float = 10) -> CollabSocket:
        """Connect and wait for the snapshot; raises Refused with the close code if the server closes first."""
        ws = await websockets.connect(
            f"{server.ws_base}/ws/v1/sessions/{session_id}/collab/", origin=server.origin, open_timeout=timeout,
            additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}, ping_interval=None,
            max_size=None, compression=None)
        sock = cls(name, ws)
        snapshot = asyncio.ensure_future(sock.next("snapshot", timeout=timeout))
        await asyncio.wait([snapshot, sock.closed], return_when=asyncio.FIRST_COMPLETED)
        # A close wakes the snapshot wait too, which then fails at once: both may be done by now. A socket closed
        # without a snapshot is a refusal, whichever of the two finished first.
        if sock.closed.done() and (not snapshot.done() or snapshot.exception() is not None):
            snapshot.cancel()
            await sock.close()
            raise Refused(sock.closed.result())
        sock.snapshot = snapshot.result()["data"]
        return sock

    async def _read(self) -> None:
        code = None
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                data = frame.get("data") or {}
                ref = data.get("ref") if isinstance(data, dict) else None
                if frame["type"] in ("ack", "error") and ref in self._replies:
                    fut = self._replies.pop(ref)
                    if not fut.done():
                        fut.set_result(frame)
                    continue
                self.frames.append(frame)
                self._arrived.set()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(Exception):
                code = self.ws.close_code
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{self.name}: socket closed ({code})"))
            self._replies.clear()
            if not self.closed.done():
                self.closed.set_result(code)
            self._arrived.set()

    async def next(self, type_: str, timeout: float = 10, where=lambda frame: True) -> dict:
        """The first unread frame of this type (and matching `where`), waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if frame["type"] == type_ and where(frame):
                    return self.frames.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed.done():
                raise AssertionError(f"{self.name}: no {type_} frame; got {[f['type'] for f in self.frames]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def send_request(self, type_: str, **fields) -> asyncio.Future:
        """Send a message with a fresh ref; the future gets its ack or error frame (or ConnectionError)."""
        ref = f"{self.name}-{next(self._refs)}"
        fut = asyncio.get_running_loop().create_future()
        if self.closed.done():
            fut.set_exception(ConnectionError(f"{self.name}: socket closed"))
            return fut
        self._replies[ref] = fut

        async def send():
            try:
                await self.ws.send(json.dumps({"type": type_, "ref": ref, **fields}))
            except websockets.exceptions.ConnectionClosed as exc:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{self.name}: {exc}"))

        asyncio.ensure_future(send())
        return fut

    async def request(self, type_: str, timeout: float = 10, **fields) -> dict:
        return await asyncio.wait_for(self.send_request(type_, **fields), timeout)

    async def send(self, **msg) -> None:
        await self.ws.send(json.dumps(msg))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


async def refused_at_connect(server: CollabServer, session_id: int, cookie: str) -> int | None:
    """The close code a socket gets before any snapshot (None if it was let in)."""
    try:
        sock = await CollabSocket.open("refused", server, session_id, cookie)
    except Refused as refused:
        return refused.code
    except websockets.exceptions.InvalidStatus as status:
        return status.response.status_code
    await sock.close()
    return None


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


# --- the browser's document ----------------------------------------------------------------------------

class Replica:
    """A participant's copy of one document, as the browser keeps it (same Yjs binary format)."""

    def __init__(self, kind: str = "board", client_id: int | None = None):
        self.kind = kind
        self.doc = Doc(client_id=client_id) if client_id is not None else Doc()
        self.elements = self.doc.get("elements", type=Map)
        self.sent = self.doc.get_state()
        self._n = itertools.count(1)

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    def change(self) -> bytes:
        """What changed locally since the last call (one update frame's worth)."""
        update = self.doc.get_update(self.sent)
        self.sent = self.doc.get_state()
        return update

    def new_key(self) -> str:
        return f"{self.client_id}-{next(self._n)}"

    def stroke(self, author: int, key: str | None = None, points=(10, 20, 30, 40)) -> tuple[str, bytes]:
        key = key or self.new_key()
        self.elements[key] = Map({"id": key, "type": "pen", "page": "p1", "author": author, "color": "#1f77b4",
                                  "width": 3, "z": 1, "points": Array(list(points))})
        return key, self.change()

    def extend(self, key: str, points) -> bytes:
        self.elements[key]["points"].extend(list(points))
        return self.change()

    def apply(self, update: bytes) -> None:
        self.doc.apply_update(update)
        self.sent = self.doc.get_state()

    def state(self) -> dict:
        return self.elements.to_py() or {}

    async def pull(self, sock: CollabSocket) -> dict:
        """`sync` with our state vector: take what we lack; returns the ack's data (with the server's sv)."""
        ack = await sock.request("sync", doc=self.kind, sv=b64(self.doc.get_state()))
        assert ack["type"] == "ack", ack
        self.doc.apply_update(unb64(ack["data"]["update"]))
        return ack["data"]

    async def sync(self, sock: CollabSocket) -> dict:
        """Both ways: pull, then send (with a second `sync`) what the server lacks according to its sv."""
        data = await self.pull(sock)
        missing = self.doc.get_update(unb64(data["sv"]))
        ack = await sock.request("sync", doc=self.kind, sv=b64(self.doc.get_state()), update=b64(missing))
        assert ack["type"] == "ack", ack
        self.doc.apply_update(unb64(ack["data"]["update"]))
        self.sent = self.doc.get_state()
        return ack["data"]


def elements_of(update: bytes) -> dict:
    doc = Doc()
    doc.apply_update(update)
    return doc.get("elements", type=Map).to_py() or {}


async def caught_up(name: str, server: CollabServer, session_id: int, cookie: str) -> dict:
    """A late joiner's view: a fresh replica synced over a fresh socket."""
    sock = await CollabSocket.open(name, server, session_id, cookie)
    try:
        fresh = Replica()
        await fresh.pull(sock)
        return fresh.state()
    finally:
        await sock.close()


# --- a participant drawing -----------------------------------------------------------------------------

class Drawer:
    """Someone drawing pen strokes as the browser sends them: each stroke is one `update` (the element),
    then one more as it grows (points appended), sent without waiting; every answer is recorded. After a
    reconnect the replica syncs both ways, which re-sends whatever the server lacks. Like the browser, it sends
    nothing until that sync is done: what is drawn meanwhile (offline) stays in its document until then."""

    def __init__(self, name: str, user_id: int, cookie: str, session_id: int):
        self.name, self.user_id, self.cookie, self.session_id = name, user_id, cookie, session_id
        self.replica = Replica()
        self.sock: CollabSocket | None = None
        self.keys: list[str] = []  # every stroke drawn, in order
        self.acked: set[str] = set()  # strokes whose creating update was acknowledged (stored)
        self.refused: dict[str, str] = {}
        self.lost: set[str] = set()  # no answer: the socket went first
        self.offline: set[str] = set()  # drawn while not connected: only the sync carries them
        self.ready = False
        self._outbox: list[tuple[str, bytes, bool]] = []  # drawn while not ready, sent once ready
        self._inflight: set[asyncio.Future] = set()

    async def connect(self, server: CollabServer) -> None:
        self.ready = False
        self.sock = await CollabSocket.open(self.name, server, self.session_id, self.cookie)
        await self.replica.sync(self.sock)
        self.ready = True
        # What was drawn during the sync itself is in no message yet (the rest goes twice: harmless).
        outbox, self._outbox = self._outbox, []
        for key, update, creates in outbox:
            self._send(key, update, creates)

    def _send(self, key: str, update: bytes, creates: bool) -> None:
        if not self.ready or self.sock.closed.done():
            self.ready = False
            self.offline.add(key)
            self._outbox.append((key, update, creates))
            return
        fut = self.sock.send_request("update", doc="board", update=b64(update))
        self._inflight.add(fut)

        def answered(f: asyncio.Future) -> None:
            self._inflight.discard(f)
            if f.cancelled():
                return
            if f.exception() is not None:
                self.lost.add(key)
                return
            frame = f.result()
            if frame["type"] == "ack":
                if creates:
                    self.acked.add(key)
            else:
                self.refused[key] = frame["data"]["code"]

        fut.add_done_callback(answered)

    async def stroke(self, pause: float = 0.03) -> str:
        """Draw one stroke: the element goes, then (a moment later) the rest of its points."""
        key, update = self.replica.stroke(self.user_id)
        self.keys.append(key)
        self._send(key, update, creates=True)
        await asyncio.sleep(pause)
        self._send(key, self.replica.extend(key, [50, 60, 70, 80]), creates=False)
        return key

    async def draw(self, count: int, every: float = 0.08) -> None:
        for _ in range(count):
            await self.stroke()
            await asyncio.sleep(every)

    async def draw_until(self, stop: asyncio.Event, every: float = 0.08) -> None:
        while not stop.is_set():
            await self.stroke()
            await asyncio.sleep(every)

    async def settle(self, timeout: float = 30) -> None:
        """Wait for the answer to everything sent."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)
        assert not self._inflight, f"{self.name}: {len(self._inflight)} updates unanswered after {timeout}s"

    async def close(self) -> None:
        if self.sock is not None:
            await self.sock.close()
