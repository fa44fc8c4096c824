"""One load-generator process: many real `websockets` clients on one event loop, driven over a pipe.

The harness (benchmarks/classroom.py) starts a few of these with multiprocessing and sends each the same
sequence of phase commands (join, chat, poll, close) with absolute start times; all processes share the
machine's clock, so a timestamp written into a message body by one process is compared with
`time.time()` in another. Chat frames, the hot path, are recognised by their prefix and their send time is
read out of the body without a JSON parse, so the generator takes as little of the shared CPU as it can.
Every loop here is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from array import array

from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import parse_uri

CHAT_PREFIX = '{"v":1,"type":"chat.message","seq":'
BODY_MARK = '"body":"B|'
ENVELOPE = '{"v":1,"type":"'
FILLER = "a question about the last slide, could you go over it once more please"


class Client:
    __slots__ = ("idx", "user_id", "key", "teacher", "ws", "t_start", "t_open", "t_snapshot", "snapshot", "fail",
                 "chat", "last_seq", "gaps", "dups", "lagged", "missing", "reordered")

    def __init__(self, idx: int, user_id: int, key: str, teacher: bool = False):
        self.idx, self.user_id, self.key, self.teacher = idx, user_id, key, teacher
        self.ws: SansIOSocket | AsyncioSocket | None = None
        self.t_start = self.t_open = self.t_snapshot = None
        self.snapshot: asyncio.Future | None = None
        self.fail = None
        self.chat = self.last_seq = self.gaps = self.dups = self.lagged = self.reordered = 0
        self.missing: set[int] | None = None  # seqs skipped over (a gap), until they arrive late


class SansIOSocket(asyncio.Protocol):
    """A client socket on websockets' own protocol (sans-I/O ClientProtocol) driven by an asyncio.Protocol.

    Same handshake, framing, ping replies and closing handshake as `websockets.asyncio.client`, without a
    future, a queue and a task wake-up per received message: one `data_received` call handles every frame
    that arrived in one read. This keeps the generator's CPU per frame low on a machine it shares."""

    def __init__(self, gen: LoadGen, c: Client, cookie: str):
        self.gen, self.c = gen, c
        self.proto = ClientProtocol(parse_uri(gen.url), origin=Origin(gen.origin), max_size=None)
        self.cookie = cookie
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.parts: list[bytes] = []
        self.close_code: int | None = None

    @classmethod
    async def open(cls, gen: LoadGen, c: Client, cookie: str, timeout: float) -> SansIOSocket:
        loop = asyncio.get_running_loop()
        sock = cls(gen, c, cookie)
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: sock, gen.host, gen.port)
            await sock.opened
        return sock

    def connection_made(self, transport) -> None:
        self.transport = transport
        request = self.proto.connect()
        request.headers["Cookie"] = self.cookie
        self.proto.send_request(request)
        self._flush()

    def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is Opcode.TEXT:
                    if event.fin:
                        self.gen.on_frame(self.c, event.data.decode(), now)
                    else:
                        self.parts = [event.data]
                elif opcode is Opcode.CONT:
                    self.parts.append(event.data)
                    if event.fin:
                        self.gen.on_frame(self.c, b"".join(self.parts).decode(), now)
                        self.parts = []
                elif opcode is Opcode.CLOSE and self.proto.close_rcvd is not None:
                    self.close_code = self.proto.close_rcvd.code
            elif isinstance(event, Response) and not self.opened.done():
                if proto.handshake_exc is None:
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(proto.handshake_exc)
        self._flush()
        if proto.close_expected():
            self.transport.close()

    def eof_received(self) -> bool:
        self.proto.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc) -> None:
        if self.close_code is None:
            self.close_code = self.proto.close_rcvd.code if self.proto.close_rcvd else 1006
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost ({self.close_code})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def is_open(self) -> bool:
        return not self.closed.done()

    async def send(self, text: str) -> None:
        if self.closed.done():
            raise ConnectionError("closed")
        self.proto.send_text(text.encode())
        self._flush()

    async def close(self) -> None:
        if not self.closed.done():
            self.proto.send_close(1000)
            self._flush()
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2)
            except TimeoutError:
                self.transport.abort()


class AsyncioSocket:
    """A client socket on `websockets.asyncio.client` (the library's standard client), for cross-checks."""

    def __init__(self, gen: LoadGen, c: Client, ws):
        self.gen, self.c, self.ws = gen, c, ws
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, gen: LoadGen, c: Client, cookie: str, timeout: float) -> AsyncioSocket:
        ws = await connect(
            gen.url, origin=gen.origin, additional_headers=[("Cookie", cookie)], compression=None, max_size=None,
            max_queue=None, ping_interval=None, close_timeout=2, open_timeout=timeout, proxy=None)
        return cls(gen, c, ws)

    async def _read(self) -> None:
        on_frame, now, c = self.gen.on_frame, time.time, self.c
        try:
            async for raw in self.ws:
                on_frame(c, raw, now())
        except ConnectionClosed:
            pass

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    def is_open(self) -> bool:
        return not self.reader.done()

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            raise ConnectionError("closed") from None

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception:
            pass
        self.reader.cancel()


class LoadGen:
    def __init__(self, spec: dict):
        self.url = spec["url"]
        self.origin = spec["origin"]
        uri = parse_uri(self.url)
        self.host, self.port = uri.host, uri.port
        self.cookie_name = spec.get("cookie_name", "sessionid")
        self.socket_class = AsyncioSocket if spec.get("client") == "asyncio" else SansIOSocket
        self.clients: dict[int, Client] = {}
        self.teacher: Client | None = None
        self.lat = array("d")        # receive time - send time, per chat delivery
        self.lat_sent = array("d")   # the send time of each sample (for a latency timeline)
        self.types: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.waiting: dict[str, list] = {}  # ref -> [t_send, t_ack, data or None, error code or None]
        self.presence_seen: dict[tuple[int, str], float] = {}  # (user_id, state) -> first time the teacher saw it
        self.poll_results: list[tuple[float, int, int]] = []  # teacher: (time, poll_id, respondents)
        self.nframes = 0
        self.chat_receivers: list[Client] = []
        self.chat_end = 0  # len(self.lat) when the chat phase reported

    # --- frames ------------------------------------------------------------------------------------
    def on_frame(self, c: Client, raw, now: float | None = None) -> None:
        if now is None:
            now = time.time()
        self.nframes += 1
        if raw.startswith(CHAT_PREFIX):
            n = len(CHAT_PREFIX)
            seq = int(raw[n:raw.index(",", n)])
            if seq <= c.last_seq:
                if c.missing is None or seq not in c.missing:
                    c.dups += 1
                    return
                c.missing.discard(seq)  # arrived after a later one: delivered, but out of order
                c.reordered += 1
            else:
                if c.last_seq and seq != c.last_seq + 1:
                    c.gaps += seq - c.last_seq - 1
                    if c.missing is None:
                        c.missing = set()
                    c.missing.update(range(c.last_seq + 1, seq))
                c.last_seq = seq
            i = raw.find(BODY_MARK)
            if i >= 0:
                i += len(BODY_MARK)
                sent = float(raw[i:raw.index("|", i)])
                self.lat.append(now - sent)
                self.lat_sent.append(sent)
                c.chat += 1
            return
        if not isinstance(raw, str) or not raw.startswith(ENVELOPE):
            self.types["?"] += 1
            return
        start = len(ENVELOPE)
        type_ = raw[start:raw.index('"', start)]
        self.types[type_] += 1
        if type_ == "snapshot":
            data = json.loads(raw)["data"]
            c.t_snapshot = now
            c.last_seq = data.get("last_seq") or 0
            if c.snapshot is not None and not c.snapshot.done():
                c.snapshot.set_result(None)
        elif type_ in ("ack", "error"):
            data = json.loads(raw)["data"]
            if type_ == "error":
                self.errors[data.get("code", "?")] += 1
            record = self.waiting.get(data.get("ref"))
            if record is not None and record[1] is None:
                record[1] = now
                record[2] = data
                if type_ == "error":
                    record[3] = data.get("code", "?")
        elif type_ == "sys.lagged":
            c.lagged += 1
        elif c.teacher:
            if type_ == "presence.diff":
                data = json.loads(raw)["data"]
                for uid, entry in (data.get("joins") or {}).items():
                    for meta in entry.get("metas", []):
                        self.presence_seen.setdefault((int(uid), meta.get("state")), now)
            elif type_ == "poll.results":
                data = json.loads(raw)["data"]
                self.poll_results.append((now, data.get("poll_id"), data.get("respondents", 0)))

    # --- connections ---------------------------------------------------------------------------------
    async def open_client(self, c: Client, timeout: float) -> None:
        c.t_start = time.time()
        deadline = c.t_start + timeout
        c.snapshot = asyncio.get_running_loop().create_future()
        try:
            c.ws = await self.socket_class.open(self, c, f"{self.cookie_name}={c.key}", timeout)
        except InvalidStatus as exc:
            c.fail = f"http_{exc.response.status_code}"
            return
        except Exception as exc:  # refused, reset, timeout: all count as a failed join
            c.fail = type(exc).__name__
            return
        c.t_open = time.time()
        try:
            async with asyncio.timeout(max(deadline - time.time(), 0.01)):
                # The server may close instead of sending a snapshot (4403, 4429, ...).
                closed = c.ws.closed if isinstance(c.ws, SansIOSocket) else c.ws.reader
                await asyncio.wait([c.snapshot, closed], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            c.fail = "snapshot_timeout"
            return
        if c.t_snapshot is None:
            c.fail = f"closed_{c.ws.close_code}"

    def alive(self) -> list[Client]:
        return [c for c in self.clients.values() if c.ws is not None and c.t_snapshot and c.ws.is_open()]

    async def send(self, c: Client, ref: str, message: dict, t_send: float | None = None) -> list:
        record = [t_send or time.time(), None, None, None]
        self.waiting[ref] = record
        try:
            await c.ws.send(json.dumps(message, separators=(",", ":")))
        except ConnectionError:
            record[3] = "closed"
        return record

    # --- phases ----------------------------------------------------------------------------------------
    async def cmd_join(self, cmd: dict) -> dict:
        new = []
        for idx, user_id, key in cmd["clients"]:
            c = self.clients[idx] = Client(idx, user_id, key, teacher=cmd.get("teacher", False))
            if c.teacher:
                self.teacher = c
            new.append(c)
        await _sleep_until(cmd["start_at"])
        cpu = time.process_time()
        await asyncio.gather(*(self.open_client(c, cmd["timeout"]) for c in new))
        return {"clients": [(c.user_id, c.t_start, c.t_open, c.t_snapshot, c.fail) for c in new],
                "cpu": time.process_time() - cpu}

    async def cmd_chat(self, cmd: dict) -> dict:
        """Send the scheduled chat messages and presence changes; count what every client receives."""
        receivers = self.alive()
        for c in receivers:
            c.chat = c.gaps = c.dups = c.reordered = 0
            c.missing = None
        self.lat, self.lat_sent = array("d"), array("d")
        self.types.clear()
        start_at = cmd["start_at"]
        sends: list[dict] = []
        states: list[dict] = []
        items = sorted([(off, "chat", idx, n) for idx, off, n in cmd["sends"]] +
                       [(off, "state", idx, st) for idx, off, st in cmd.get("states", [])])
        await _sleep_until(start_at - 0.05)
        cpu = time.process_time()
        for off, kind, idx, arg in items:
            await _sleep_until(start_at + off)
            c = self.clients[idx]
            if c.ws is None:
                continue
            t = time.time()
            if kind == "chat":
                ref = f"m{arg}"
                body = f"B|{t:.6f}|{arg}| {FILLER}"
                rec = await self.send(c, ref, {"type": "chat.send", "ref": ref, "body": body}, t)
                sends.append({"n": arg, "sched": start_at + off, "rec": rec})
            else:
                ref = f"p{c.user_id}{arg}"
                rec = await self.send(c, ref, {"type": "presence.state", "ref": ref, "state": arg}, t)
                states.append({"user_id": c.user_id, "state": arg, "rec": rec})
        # Drain: at least drain_min after the last send, then until chat frames stop arriving (bounded).
        last_send = start_at + (items[-1][0] if items else 0)
        await _sleep_until(last_send + cmd["drain_min"])
        hard_stop = last_send + cmd["drain_max"]
        seen = len(self.lat)
        while time.time() < hard_stop:
            await asyncio.sleep(0.5)
            if len(self.lat) == seen:
                break
            seen = len(self.lat)
        cpu = time.process_time() - cpu
        counts = [c.chat for c in receivers]
        self.chat_receivers, self.chat_end = receivers, len(self.lat)
        return {
            "receivers": len(receivers),
            "deliveries": sum(counts),
            "per_receiver_min": min(counts) if counts else 0,
            "per_receiver_max": max(counts) if counts else 0,
            "gaps": sum(c.gaps for c in receivers),
            "dups": sum(c.dups for c in receivers),
            "reordered": sum(c.reordered for c in receivers),
            "receivers_that_saw_a_gap": sum(1 for c in receivers if c.gaps),
            "lagged": sum(c.lagged for c in receivers),
            "closed_during": sum(1 for c in receivers if not c.ws.is_open()),
            "lat": self.lat.tobytes(),
            "lat_sent": self.lat_sent.tobytes(),
            "sends": [{"n": s["n"], "sched": s["sched"], "t_send": s["rec"][0], "t_ack": s["rec"][1],
                       "seq": (s["rec"][2] or {}).get("seq"), "error": s["rec"][3]} for s in sends],
            "states": [{"user_id": s["user_id"], "state": s["state"], "t_send": s["rec"][0],
                        "t_ack": s["rec"][1], "error": s["rec"][3]} for s in states],
            "presence_seen": [(u, st, t) for (u, st), t in self.presence_seen.items()],
            "frames": dict(self.types),
            "errors": dict(self.errors),
            "cpu": cpu,
        }

    async def cmd_quiesce(self, cmd: dict) -> dict:
        """Wait (bounded) until every message sent has its ack and no frame has arrived for `quiet` seconds;
        report the chat frames that came after the chat phase's drain window."""
        started = time.time()
        last, last_change = self.nframes, started
        while time.time() - started < cmd["timeout"]:
            await asyncio.sleep(0.1)
            if self.nframes != last:
                last, last_change = self.nframes, time.time()
            elif time.time() - last_change >= cmd["quiet"] and not any(
                    r[1] is None and r[3] is None for r in self.waiting.values()):
                break
        late = self.lat[self.chat_end:]
        counts = [c.chat for c in self.chat_receivers]
        return {"waited": round(time.time() - started, 2), "quiet": time.time() - last_change >= cmd["quiet"],
                "late_lat": late.tobytes(), "per_receiver_min": min(counts) if counts else 0,
                "deliveries": sum(counts)}

    async def cmd_presence_seen(self, cmd: dict) -> dict:
        return {"presence_seen": [(u, st, t) for (u, st), t in self.presence_seen.items()]}

    async def cmd_poll_create(self, cmd: dict) -> dict:
        c = self.teacher
        rec = await self.send(c, "poll-create", {"type": "poll.create", "ref": "poll-create",
                                                 "question": "Which option?", "kind": "single",
                                                 "options": ["A", "B", "C", "D"]})
        deadline = time.time() + cmd["timeout"]
        while rec[1] is None and rec[3] is None and time.time() < deadline:
            await asyncio.sleep(0.02)
        data = rec[2] or {}
        return {"poll_id": data.get("poll_id"), "error": rec[3], "t_send": rec[0], "t_ack": rec[1]}

    async def cmd_poll_answer(self, cmd: dict) -> dict:
        start_at, poll_id = cmd["start_at"], cmd["poll_id"]
        self.poll_results = [r for r in self.poll_results if r[1] != poll_id]
        records = []
        await _sleep_until(start_at - 0.05)
        cpu = time.process_time()
        for idx, off, position in sorted(cmd["answers"], key=lambda a: a[1]):
            await _sleep_until(start_at + off)
            c = self.clients[idx]
            if c.ws is None:
                continue
            ref = f"a{poll_id}-{c.user_id}"
            records.append(await self.send(c, ref, {
                "type": "poll.answer", "ref": ref, "poll_id": poll_id, "attempt_id": str(uuid.uuid4()),
                "positions": [position]}))
        deadline = time.time() + cmd["timeout"]
        while time.time() < deadline:
            acks_done = all(r[1] is not None or r[3] is not None for r in records)
            teacher_done = self.teacher is None or any(
                p == poll_id and n >= cmd["expect_total"] for _, p, n in self.poll_results)
            if acks_done and teacher_done:
                break
            await asyncio.sleep(0.05)
        return {
            "answers": [{"t_send": r[0], "t_ack": r[1], "duplicate": (r[2] or {}).get("duplicate"), "error": r[3]}
                        for r in records],
            "results": [(t, n) for t, p, n in self.poll_results if p == poll_id],
            "errors": dict(self.errors),
            "cpu": time.process_time() - cpu,
        }

    async def cmd_leave(self, cmd: dict) -> dict:
        """Close every student socket (the teacher stays), e.g. before a second join storm."""
        students = [c for c in self.clients.values() if not c.teacher and c.ws is not None]
        await asyncio.gather(*(c.ws.close() for c in students))
        for c in students:
            del self.clients[c.idx]
        return {"closed": len(students)}

    async def cmd_close(self, cmd: dict) -> dict:
        closes = collections.Counter(str(c.ws.close_code) for c in self.clients.values()
                                     if c.ws is not None and c.t_snapshot and not c.ws.is_open())
        await asyncio.gather(*(c.ws.close() for c in self.clients.values() if c.ws is not None))
        return {"closed_by_server_before_end": dict(closes), "frames": dict(self.types)}


async def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _serve(conn, spec: dict) -> None:
    factory = LoadGen
    if spec.get("generator"):  # "module:Class", a LoadGen subclass (e.g. benchmarks.stream_loadgen:StreamLoadGen)
        import importlib

        module, _, name = spec["generator"].partition(":")
        factory = getattr(importlib.import_module(module), name)
    gen = factory(spec)
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        name = cmd["cmd"]
        try:
            result = await getattr(gen, f"cmd_{name}")(cmd)
        except Exception as exc:  # reported to the harness, which stops the run
            import traceback

            result = {"exception": "".join(traceback.format_exception(exc))}
        conn.send(result)
        if name == "close":
            return


def run(conn, spec: dict) -> None:
    """Process entry point (multiprocessing target)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if spec.get("uvloop", True):
        import uvloop

        uvloop.run(_serve(conn, spec))
    else:
        asyncio.run(_serve(conn, spec))
