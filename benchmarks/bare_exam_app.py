"""The baseline the exam benchmark measures Aula against, in the same run: a bare ASGI app under the same
uvicorn command (same workers and tuning) that speaks just enough of Aula's exam protocol for the same load
generators to drive it. Start answers `302` to `/attempts/<n>/`; the attempt socket sends a `snapshot` and
answers every `answer.save` with an `ack` (same envelope as config.realtime.transport.encode_frame). No
Django, no sessions, no database, no Redis: what is left is the cost of the HTTP and WebSocket traffic
itself in Python on this machine, with the load generators competing for the same cores.

    python -m uvicorn benchmarks.bare_exam_app:app --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

_attempts = itertools.count(1)


def _frame(type_: str, data: dict) -> str:
    ts = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"v": 1, "type": type_, "seq": None, "ts": ts, "data": data}, separators=(",", ":"))


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        await _read_body(receive)
        location = f"/attempts/{next(_attempts)}/".encode()
        await send({"type": "http.response.start", "status": 302,
                    "headers": [(b"location", location), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _frame("snapshot", {"attempt": {}, "answers": {}})})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                raw = json.loads(message.get("text") or "")
            except ValueError:
                continue
            if raw.get("type") == "answer.save":
                await send({"type": "websocket.send", "text": _frame("ack", {
                    "ref": raw.get("ref"), "question_id": raw.get("question_id"), "version": raw.get("version"),
                    "applied": True, "saved_at": dt.datetime.now(dt.UTC).isoformat()})})
