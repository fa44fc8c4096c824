"""Tools for fault tests: a private PostgreSQL + Redis + uvicorn stack, and a client that follows the protocol.

The shared test PostgreSQL and Redis serve every xdist worker, so a test that kills a store brings its
own (`FaultStack`): real servers from the same pip packages as `make test`, on free ports in a temporary
directory, migrated and seeded through a subprocess, with uvicorn processes pointed at them whose log
output is kept for assertions.

`LiveClient` does what docs/protocol.md asks of a client: it tracks the last `seq`, sends `resume` on a gap,
on `sys.lagged` and on `sys.resync` (and again if a resume is refused), and reconnects with
`?last_seq=&resume=` when the socket drops, trying the next server when one is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
import websockets
from django.conf import settings

from config.devservers import EmbeddedPostgres, EmbeddedRedis, free_port, uvicorn_tuning_args
from tests.conftest import wait_http

ROOT = Path(__file__).resolve().parents[2]
NO_RECONNECT = {4401, 4403, 4404, 4408, 4409, 1009}
# The stack's servers run the test profile outside xdist: Redis key prefix "aula-t0", realtime data in db 1.
REDIS_PREFIX, REALTIME_DB = "aula-t0", 1


class LoggedServer:
    """One uvicorn process on a free port with `env`; stdout+stderr kept in a file; it can be frozen (SIGSTOP),
    killed (SIGKILL) or stopped."""

    def __init__(self, name: str, log_dir: Path, env: dict):
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"server-{name}-{self.port}.log"
        env = {**env, "AULA_WS_ALLOWED_ORIGINS": f"http://127.0.0.1:{self.port}",
               "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
        argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                "--port", str(self.port), *uvicorn_tuning_args()]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(self.port, self.proc)
        except Exception:
            self.stop()
            raise

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def freeze(self) -> None:
        """SIGSTOP: the process holds its sockets open but reads, stores and answers nothing (a hung host)."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: no disconnect handlers run, no pending work is flushed (a crashed host)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)  # a frozen process must run to handle SIGTERM
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class FaultServer(LoggedServer):
    """A server pointed at a FaultStack."""

    def __init__(self, stack: FaultStack, name: str):
        super().__init__(name, stack.base, stack.env)


class FaultStack:
    """A private PostgreSQL and Redis (killable at will), migrated and seeded, plus uvicorn servers."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="aula-fault-"))
        if os.geteuid() == 0:
            self.base.chmod(0o755)  # PostgreSQL runs as its own system user and needs to enter it
        self.pg = EmbeddedPostgres(self.base / "pgdata", free_port())
        self.redis = EmbeddedRedis(self.base / "redis", free_port(), persistent=False)
        self.servers: list[FaultServer] = []
        self.data: dict = {}
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.pg.start()
        self.pg.ensure_database("aula")
        self.redis.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DATABASE_URL", "REDIS_URL"))}
        self.env = {**env,
                    "DATABASE_URL": self.pg.url, "REDIS_URL": self.redis.url, "AULA_ENV": "test",
                    "AULA_DB_CONNECT_TIMEOUT": "2", "AULA_SOCKET_RECHECK_SECONDS": "2",
                    # The scenarios send bursts on purpose; the limits themselves are tested elsewhere.
                    "AULA_RATE_LIMITS": "chat=10000/1,resume=1000/1,presence=1000/1"}
        self._python("manage.py", "migrate", "--noinput", "-v", "0")
        self.data = json.loads(self._python("tests/e2e/faultdata.py", "seed"))

    def post_chat(self, session_id: int, user_id: int, count: int) -> list[int]:
        """Chat written by another process through the service (no socket involved)."""
        return json.loads(self._python("tests/e2e/faultdata.py", "post", str(session_id), str(user_id), str(count)))

    def logout(self, cookie: str) -> None:
        self._python("tests/e2e/faultdata.py", "logout", cookie)

    def _python(self, *args: str) -> str:
        out = subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                             timeout=300)
        if out.returncode:
            raise RuntimeError(f"{args} failed:\n{out.stderr[-4000:]}")
        return out.stdout

    def server(self, name: str) -> FaultServer:
        s = FaultServer(self, name)
        self.servers.append(s)
        return s

    def stop_servers(self) -> None:
        for s in self.servers:
            s.stop()
        self.servers.clear()

    # --- faults -------------------------------------------------------------------------------------
    def kill_redis(self) -> None:
        self.redis.proc.kill()
        self.redis.proc.wait(10)

    def start_redis(self) -> None:
        """The same port and directory, empty (no persistence): like a failed-over or restarted cache node."""
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()

    def stop_postgres(self) -> None:
        self.pg.stop()  # pg_ctl stop -m fast: open connections are terminated, transactions roll back
        if self.postgres_up():
            raise RuntimeError("PostgreSQL is still accepting connections after pg_ctl stop")

    def start_postgres(self) -> None:
        if not self.postgres_up():
            self.pg.start()

    def postgres_up(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.pg.port), timeout=0.5):
            return True
        return False

    def close(self) -> None:
        self.stop_servers()
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # --- the database as the truth --------------------------------------------------------------------
    def sql(self, query: str, params=()) -> list[tuple]:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.pg.port}/aula", connect_timeout=5) as c:
            return c.execute(query, params).fetchall()

    def realtime_redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis.port, db=REALTIME_DB)

    def presence_metas(self, room_key: str) -> int:
        """How many connections Redis holds presence entries for in a room."""
        with self.realtime_redis() as client:
            return client.hlen(f"{REDIS_PREFIX}:pres:{room_key}:metas")

    def chat_seqs(self, session_id: int) -> set[int]:
        return {r[0] for r in self.sql("SELECT seq FROM classrooms_chatmessage WHERE session_id = %s", [session_id])}


def tcp_send_queue(local_port: int, remote_port: int) -> int | None:
    """Bytes waiting in the kernel's send buffer of one IPv4 TCP socket on this host (/proc/net/tcp)."""
    want = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == want:
            return int(fields[4].split(":")[0], 16)
    return None


__all__ = ["REDIS_PREFIX", "FaultServer", "LoggedServer", "FaultStack", "LiveClient", "tcp_send_queue", "wait_until"]


@dataclass
class Received:
    seq: int
    type: str
    at: float  # monotonic time of arrival


@dataclass
class LiveClient:
    """A protocol-following socket client of one live session (see the module docstring)."""

    name: str
    servers: list[FaultServer]
    session_id: int
    cookie: str
    server_index: int = 0
    reconnect: bool = True
    recv_buffer: int | None = None  # a small SO_RCVBUF makes "stops reading" bite quickly
    max_queue: int = 16

    last_seq: int | None = None
    first_seq: int | None = None  # last_seq of the first snapshot: everything after it must arrive
    token: str | None = None
    chat_seqs: set[int] = field(default_factory=set)
    received: dict[int, Received] = field(default_factory=dict)
    frames: list[tuple[float, dict]] = field(default_factory=list)  # non-seq frames, kept for assertions
    counts: dict[str, int] = field(default_factory=dict)
    connects: list[int] = field(default_factory=list)  # server index of each successful connect
    closes: list[int | None] = field(default_factory=list)
    refused: int | None = None  # a close code that forbids reconnecting
    presence_count: int | None = None  # the latest count of people present, from the snapshot or a diff

    def __post_init__(self):
        self.ws = None
        self.ready = asyncio.Event()  # set when a snapshot or resume.done brought the client up to date
        self.reading = asyncio.Event()
        self.reading.set()
        self._resuming: str | None = None  # ref of the resume in flight
        self._resume_again = False
        self._replies: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        self._stopped = False
        self._n = 0

    # --- connection ------------------------------------------------------------------------------------
    def url(self) -> str:
        server = self.servers[self.server_index]
        query = ""
        if self.token and self.last_seq is not None:
            query = "?" + urllib.parse.urlencode({"last_seq": self.last_seq, "resume": self.token})
        return f"{server.ws_base}/ws/v1/sessions/{self.session_id}/{query}"

    async def _connect(self):
        server = self.servers[self.server_index]
        kwargs = {}
        if self.recv_buffer:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            kwargs["sock"] = sock
        return await websockets.connect(
            self.url(), origin=server.origin, open_timeout=5, max_queue=self.max_queue,
            additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={self.cookie}"}, ping_interval=None,
            compression=None, **kwargs)

    async def start(self, timeout: float = 10) -> LiveClient:
        self._task = asyncio.create_task(self._run(), name=f"client-{self.name}")
        await asyncio.wait_for(self.ready.wait(), timeout)
        if self.refused is not None and self.reconnect:
            raise AssertionError(f"{self.name} was refused with close code {self.refused}")
        return self

    async def _run(self) -> None:
        backoff = 0.25
        while not self._stopped:
            try:
                self.ws = await self._connect()
            except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as exc:
                code = getattr(getattr(exc, "response", None), "status_code", None)
                self.count(f"connect_failed:{code or type(exc).__name__}")
                if not self.reconnect:
                    return
                self.server_index = (self.server_index + 1) % len(self.servers)  # that host may be gone
                await asyncio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, 2.0)
                continue
            self.connects.append(self.server_index)
            self._resuming, self._resume_again = None, False
            code = None
            try:
                while True:
                    await self.reading.wait()
                    raw = await self.ws.recv()
                    backoff = 0.25
                    await self._on_frame(json.loads(raw))
            except websockets.exceptions.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            self.closes.append(code)
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"socket closed ({code})"))
            self._replies.clear()
            if code in NO_RECONNECT:
                self.refused = code
                self.ready.set()
                return
            if not self.reconnect or self._stopped:
                return
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, 2.0)

    async def close(self) -> None:
        self._stopped = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 3)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # --- inbound ----------------------------------------------------------------------------------------
    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    async def _on_frame(self, frame: dict) -> None:
        kind, seq, data = frame["type"], frame.get("seq"), frame.get("data") or {}
        now = time.monotonic()
        self.count(kind)
        if kind == "snapshot":
            self.last_seq = data["last_seq"]
            if self.first_seq is None:
                self.first_seq = self.last_seq
            self.token = data["resume_token"]
            self.presence_count = data["presence"]["count"]
            for m in data["chat"]:
                self._accept(m["seq"], "chat.message", now)
            self._resume_done()
            return
        if kind == "resume.done":
            self.last_seq = max(self.last_seq or 0, data["last_seq"])
            self.token = data["resume_token"]
            self._resume_done()
            return
        if seq is not None:
            if self.last_seq is None or seq <= self.last_seq:
                return  # already have it (a replay overlapping the live stream)
            if seq == self.last_seq + 1:
                self.last_seq = seq
                self._accept(seq, kind, now)
                return
            self.count("gap")
            await self.request_resume()  # a gap: the replay brings what is missing, in order
            return
        if kind in ("sys.lagged", "sys.resync"):
            await self.request_resume()
            return
        self.frames.append((now, frame))
        if kind in ("presence.diff", "presence.count") and data.get("count") is not None:
            self.presence_count = data["count"]
        ref = data.get("ref") if isinstance(data, dict) else None
        if kind in ("ack", "error", "pong") and ref:
            if ref == self._resuming and kind == "error":  # the resume was refused (rate limit, store away)
                self.count(f"resume_refused:{data.get('code')}")
                self._resuming = None
                asyncio.get_running_loop().call_later(0.5, lambda: asyncio.ensure_future(self.request_resume()))
            fut = self._replies.pop(ref, None)
            if fut is not None and not fut.done():
                fut.set_result(frame)

    def _accept(self, seq: int, kind: str, now: float) -> None:
        self.received.setdefault(seq, Received(seq, kind, now))
        if kind == "chat.message":
            self.chat_seqs.add(seq)

    def _resume_done(self) -> None:
        self._resuming = None
        self.ready.set()
        if self._resume_again:
            self._resume_again = False
            asyncio.ensure_future(self.request_resume())

    async def request_resume(self) -> None:
        if self.ws is None or self.last_seq is None:
            return
        if self._resuming:
            self._resume_again = True  # one resume in flight at a time; go again once it is done
            return
        self._n += 1
        self._resuming = f"resume-{self._n}"
        self.count("resume_sent")
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self.ws.send(json.dumps({"type": "resume", "ref": self._resuming, "last_seq": self.last_seq}))

    # --- outbound ---------------------------------------------------------------------------------------
    async def request(self, type_: str, timeout: float = 10, ref: str | None = None, **fields) -> dict:
        """Send a message and wait for its ack or error frame (pass the same `ref` to retry safely)."""
        self._n += 1
        ref = ref or f"{self.name}-{self._n}"
        fut = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        if self.ws is None:
            raise ConnectionError("not connected")
        try:
            await self.ws.send(json.dumps({"type": type_, "ref": ref, **fields}))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._replies.pop(ref, None)

    def wanted(self, db_seqs: set[int]) -> set[int]:
        """The stored seqs this client must have: everything after its first snapshot."""
        return {s for s in db_seqs if s > (self.first_seq or 0)}

    def missing(self, db_chat_seqs: set[int]) -> set[int]:
        return self.wanted(db_chat_seqs) - self.chat_seqs

    def presence_leaves(self) -> list[tuple[float, dict]]:
        out = []
        for at, frame in self.frames:
            if frame["type"] == "presence.diff":
                for metas in frame["data"]["leaves"].values():
                    out.extend((at, m) for m in metas["metas"])
        return out


async def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll until predicate() is true; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


class TcpProxy:
    """A TCP relay in front of a server whose network can be cut: `cut()` blackholes every open connection
    (bytes are dropped both ways and neither end learns of it, like a pulled cable) and every new one, until
    `restore()`; connections that lived through a cut stay dead but open on the server's side (ghosts)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.is_cut = False
        self._conns: list[dict] = []
        self._server: asyncio.base_events.Server | None = None

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    def cut(self) -> None:
        self.is_cut = True
        for conn in self._conns:
            conn["frozen"] = True

    def restore(self) -> None:
        self.is_cut = False

    async def _handle(self, client_r, client_w) -> None:
        conn = {"frozen": self.is_cut, "writers": [client_w]}
        self._conns.append(conn)
        if conn["frozen"]:  # the connection attempt goes nowhere
            await self._pipe(client_r, None, conn)
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        conn["writers"].append(server_w)
        await asyncio.gather(self._pipe(client_r, server_w, conn), self._pipe(server_r, client_w, conn),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader, writer, conn) -> None:
        while True:
            data = await reader.read(65536)
            if conn["frozen"] or writer is None:
                if not data:
                    return  # one end gave up; the other is not told (nothing crosses a cut)
                continue
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self._conns:
            for w in conn["writers"]:
                w.close()
