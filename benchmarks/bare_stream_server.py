"""A bare `websockets` stream room: the ceiling Aula's stream fan-out is measured against.

It speaks just enough of the stream protocol (docs/protocol.md, streams) for benchmarks/stream_loadgen.py
to drive it the same way: a `snapshot` on connect; `viewers` {count, peak} at most once per second when
the count changed; `reaction` messages added up and broadcast as one `reactions` {window_ms, counts, window_start}
delta per window; `chat.send` broadcast as one `chat.message`; an `ack` for every message. Each broadcast frame
is encoded once and handed to `websockets.broadcast`. No auth, no database, no Redis, no moderation.

    python -m benchmarks.bare_stream_server --port 8766 --window-ms 250
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import time

from websockets.asyncio.server import broadcast, serve

from benchmarks.bare_server import _frame, _now


async def serve_stream(host: str, port: int, window_ms: int, viewers_every: float) -> None:
    members: set = set()
    pending: collections.Counter[str] = collections.Counter()
    state = {"seq": 0, "peak": 0}

    async def handler(ws) -> None:
        members.add(ws)
        state["peak"] = max(state["peak"], len(members))
        try:
            await ws.send(_frame("snapshot", {"viewers": {"count": len(members), "peak": state["peak"]},
                                              "window_ms": window_ms}))
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    type_, ref = msg["type"], msg.get("ref")
                except (ValueError, KeyError, TypeError):
                    await ws.send(_frame("error", {"code": "invalid_json", "ref": None}))
                    continue
                if type_ == "reaction" and isinstance(msg.get("emoji"), str):
                    pending[msg["emoji"][:32]] += 1
                    await ws.send(_frame("ack", {"ref": ref}))
                elif type_ == "chat.send":
                    state["seq"] += 1
                    seq = state["seq"]
                    broadcast(members, _frame("chat.message", {
                        "id": seq, "author": {"id": 0, "name": "bench"}, "body": msg.get("body", ""),
                        "at": _now()}, seq=seq))
                    await ws.send(_frame("ack", {"ref": ref, "id": seq}))
                else:
                    await ws.send(_frame("ack", {"ref": ref}))
        finally:
            members.discard(ws)

    async def reactions_loop() -> None:
        window_start = time.time()
        while True:
            await asyncio.sleep(max(window_start + window_ms / 1000 - time.time(), 0))
            if pending:
                counts = dict(pending)
                pending.clear()
                broadcast(members, _frame("reactions", {"window_ms": window_ms, "counts": counts,
                                                        "window_start": round(window_start, 3)}))
            window_start += window_ms / 1000

    async def viewers_loop() -> None:
        sent = None
        while True:
            await asyncio.sleep(viewers_every)
            if len(members) != sent:
                sent = len(members)
                broadcast(members, _frame("viewers", {"count": sent, "peak": state["peak"]}))

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    tasks = [asyncio.create_task(reactions_loop()), asyncio.create_task(viewers_loop())]
    # Same socket settings as Aula's uvicorn (and benchmarks/bare_server.py).
    async with serve(handler, host, port, compression=None, max_size=2**20, ping_interval=20, ping_timeout=20,
                     backlog=4096):
        await stop
    for task in tasks:
        task.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_stream_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--window-ms", type=int, default=250, help="reaction batch window")
    parser.add_argument("--viewers-every", type=float, default=1.0, help="seconds between viewers frames")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve_stream(args.host, args.port, args.window_ms, args.viewers_every))


if __name__ == "__main__":
    main()
