"""A bare `websockets` broadcast server: the ceiling Aula's room fan-out is measured against.

It speaks just enough of Aula's protocol for the same load generator to drive it: a `snapshot` frame on
connect, an `ack` for every message, and for `chat.send` one `chat.message` frame (same envelope, with a
room sequence number) encoded once and handed to `websockets.broadcast` for every connected socket. No
auth, no database, no Redis: what is left is the cost of writing one frame to many sockets in Python.

    python -m benchmarks.bare_server --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal

from websockets.asyncio.server import broadcast, serve


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _frame(type_: str, data: dict, seq: int | None = None) -> str:
    # The same envelope and key order as config.realtime.transport.encode_frame.
    return json.dumps({"v": 1, "type": type_, "seq": seq, "ts": _now(), "data": data},
                      separators=(",", ":"), ensure_ascii=False)


async def serve_room(host: str, port: int) -> None:
    members: set = set()
    seq = 0

    async def handler(ws) -> None:
        nonlocal seq
        members.add(ws)
        try:
            await ws.send(_frame("snapshot", {"last_seq": seq, "presence": {"count": len(members)}}))
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    type_, ref = msg["type"], msg.get("ref")
                except (ValueError, KeyError, TypeError):
                    await ws.send(_frame("error", {"code": "invalid_json", "ref": None}))
                    continue
                if type_ == "chat.send":
                    seq += 1
                    broadcast(members, _frame("chat.message", {
                        "id": seq, "author": {"id": 0, "name": "bench"}, "body": msg.get("body", ""),
                        "at": _now()}, seq=seq))
                    await ws.send(_frame("ack", {"ref": ref, "seq": seq, "id": seq}))
                else:
                    await ws.send(_frame("ack", {"ref": ref}))
        finally:
            members.discard(ws)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # Same socket settings as Aula's uvicorn: no compression, 1 MiB frames, 20 s pings, backlog 4096.
    async with serve(handler, host, port, compression=None, max_size=2**20, ping_interval=20, ping_timeout=20,
                     backlog=4096):
        await stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="uvloop by default, as uvicorn uses it when installed")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve_room(args.host, args.port))
    else:
        asyncio.run(serve_room(args.host, args.port))


if __name__ == "__main__":
    main()
