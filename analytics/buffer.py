"""The analytics event buffer: high-rate events never touch PostgreSQL one by one, and never slow the caller.

`record()` appends to a bounded in-process queue and returns (no I/O, no lock held across I/O). A daemon
thread per process writes the queue to one Redis stream every AULA_ANALYTICS_LOCAL_FLUSH_MS (or at 500
events) in a single script call, which refuses entries past AULA_ANALYTICS_BUFFER_MAX and counts them as
overflow instead, so the buffer is bounded and every dropped event is counted. Celery drains the stream
into rollup tables (analytics/services.py).

Where an event can be lost, and how it is counted:
* the process queue is full (Redis unreachable for a while): `overflow` counter, kind "local";
* the Redis stream is at its bound (the flusher is down for longer than the bound covers): per kind;
* the process dies: up to one local flush interval of events (≤ 100 ms by default), not counted.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings

logger = logging.getLogger("aula.analytics.buffer")

LOCAL_MAX = 50_000  # events queued in one process while Redis is unreachable
BATCH = 500

# KEYS: stream, overflow hash. ARGV: max length, then per event: kind, encoded fields ("k=v" joined by \x1f).
_APPEND = """
local room = tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1])
local stored = 0
for i = 2, #ARGV, 2 do
  if room > 0 then
    local parts = {}
    for part in string.gmatch(ARGV[i + 1], '([^\\31]+)') do
      local eq = string.find(part, '=', 1, true)
      table.insert(parts, string.sub(part, 1, eq - 1))
      table.insert(parts, string.sub(part, eq + 1))
    end
    redis.call('XADD', KEYS[1], '*', unpack(parts))
    room = room - 1
    stored = stored + 1
  else
    redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
  end
end
return {stored, redis.call('XLEN', KEYS[1])}
"""


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "viewer.join", "reaction", "chat.message", ...
    scope: str  # "stream" | "session"
    scope_id: int
    n: int = 1
    value: float | None = None  # summed (e.g. a chat message's sentiment score)
    at: float = 0.0  # epoch seconds
    dims: tuple[tuple[str, str], ...] = ()  # ("country", "FR"), ("segment", "member"), ("emoji", "fire")

    def encode(self) -> str:
        fields = [f"k={self.kind}", f"s={self.scope}", f"i={self.scope_id}", f"n={self.n}", f"t={self.at:.3f}"]
        if self.value is not None:
            fields.append(f"v={self.value:.6g}")
        fields.extend(f"d.{name}={_clean(val)}" for name, val in self.dims if val not in ("", None))
        return "\x1f".join(fields)


def _clean(value) -> str:
    # Dimension values come from our code (codes, slugs), but keep the encoding unambiguous anyway.
    return str(value).replace("\x1f", " ")[:64] or "-"


def stream_key() -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:an:events"


def overflow_key() -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:an:overflow"


class _Buffer:
    def __init__(self) -> None:
        self.queue: collections.deque[Event] = collections.deque()
        self.local_overflow = 0
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self.wake = threading.Event()
        self.pid = 0
        self.thread: threading.Thread | None = None
        self.client: redis.Redis | None = None
        self.script = None
        self.last_error_log = 0.0

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self.pid == pid and self.thread is not None and self.thread.is_alive():
            return
        with self.lock:
            if self.pid == pid and self.thread is not None and self.thread.is_alive():
                return
            if self.pid != pid:  # forked (Celery prefork, uvicorn workers): the parent's queue is not ours
                self.queue.clear()
                self.client = None
                self.flush_lock = threading.Lock()  # the parent's flusher may have held it at the fork
            self.pid = pid
            self.thread = threading.Thread(target=self._run, name="aula-analytics-buffer", daemon=True)
            self.thread.start()

    def put(self, event: Event) -> None:
        self._ensure_thread()
        if len(self.queue) >= LOCAL_MAX:
            self.local_overflow += 1
            return
        self.queue.append(event)
        if len(self.queue) >= BATCH:
            self.wake.set()

    def _run(self) -> None:
        interval = settings.AULA_ANALYTICS_LOCAL_FLUSH_MS / 1000
        while True:
            self.wake.wait(interval)
            self.wake.clear()
            try:
                self.flush()
            except Exception:  # never let the thread die; the queue is bounded meanwhile
                now = time.monotonic()
                if now - self.last_error_log > 60:
                    self.last_error_log = now
                    logger.warning("analytics buffer: Redis write failed; events stay queued (bounded)",
                                   exc_info=True)

    def flush(self) -> int:
        """Write what is queued now to Redis; returns events stored. Called by the thread and at exit.

        One flush at a time: a caller (flush_now at exit, a test) returns only once the batch the thread
        had already taken is written too, not while it is still in flight."""
        with self.flush_lock:
            return self._flush()

    def _flush(self) -> int:
        written = 0
        while self.queue:
            batch = []
            while self.queue and len(batch) < BATCH:
                batch.append(self.queue.popleft())
            try:
                written += self._write(batch)
            except Exception:
                self.queue.extendleft(reversed(batch))  # keep order; retried next round
                raise
        if self.local_overflow:
            lost, self.local_overflow = self.local_overflow, 0
            try:
                self._redis().hincrby(overflow_key(), "local", lost)
            except Exception:
                self.local_overflow += lost
                raise
        return written

    def _redis(self) -> redis.Redis:
        if self.client is None:
            self.client = redis.Redis.from_url(settings.REDIS_ANALYTICS_URL, socket_timeout=2,
                                               socket_connect_timeout=2, **settings.REDIS_CLIENT_IDENTITY)
            self.script = self.client.register_script(_APPEND)
        return self.client

    def _write(self, batch: list[Event]) -> int:
        self._redis()
        argv: list = [settings.AULA_ANALYTICS_BUFFER_MAX]
        for event in batch:
            argv.extend((event.kind, event.encode()))
        stored, length = self.script(keys=[stream_key(), overflow_key()], args=argv)
        if length >= settings.AULA_ANALYTICS_FLUSH_BATCH * 2:
            try:  # the batch is stored: a failed kick must not make the caller write it again
                self._kick_flush()
            except Exception:
                logger.warning("analytics buffer: could not queue a flush (beat will)", exc_info=True)
        return int(stored)

    def _kick_flush(self) -> None:
        """A backlog is building faster than beat drains it: queue one flush now (at most one per flush period
        across every process, by a Redis lease), so a burst is flushed by size, not only by time."""
        if self.client.set(f"{stream_key()}:kick", "1", nx=True, ex=settings.AULA_ANALYTICS_FLUSH_SECONDS):
            from config.celery import app

            app.send_task("analytics.tasks.flush", queue="analytics", expires=settings.AULA_ANALYTICS_FLUSH_SECONDS * 5)


_buffer = _Buffer()


def record(kind: str, *, scope: str, scope_id: int, n: int = 1, value: float | None = None,
           at: float | None = None, **dims) -> None:
    """Buffer one analytics event. Never raises, never does I/O: safe on the hottest path.

    `dims` are slicing dimensions: country, region, segment, and per-kind ones such as emoji."""
    try:
        _buffer.put(Event(kind, scope, int(scope_id), int(n), value, time.time() if at is None else at,
                          tuple(sorted(dims.items()))))
    except Exception:  # analytics must never break the action it observes
        logger.exception("analytics record failed")


def flush_now() -> int:
    """Write this process's queued events to Redis now (tests, shutdown)."""
    return _buffer.flush()


def pending_local() -> int:
    return len(_buffer.queue)


@atexit.register
def _flush_at_exit() -> None:
    if _buffer.queue and _buffer.pid == os.getpid():
        with contextlib.suppress(Exception):  # Redis may already be gone at interpreter exit
            _buffer.flush()


def parse(fields: dict) -> Event:
    """One stream entry (bytes or str keys) back into an Event."""
    f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
         for k, v in fields.items()}
    return Event(kind=f["k"], scope=f["s"], scope_id=int(f["i"]), n=int(f.get("n", 1)),
                 value=float(f["v"]) if "v" in f else None, at=float(f.get("t", 0)),
                 dims=tuple(sorted((k[2:], v) for k, v in f.items() if k.startswith("d."))))
