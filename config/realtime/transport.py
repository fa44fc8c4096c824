"""Persist first, then broadcast: the one way a room event leaves the server.

`room_event_emit` must run inside the writer's transaction. It takes the room's next sequence number
(the row lock on the room's counter orders concurrent writers, so commit order equals seq order),
stores the event for resume, encodes the frame once, and publishes it to Redis only after commit.
Ephemeral events (presence diffs, counters) use `room_signal_publish`: no seq, no storage.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import json
import logging
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.realtime.models import RoomEvent

logger = logging.getLogger("aula.realtime")

PROTOCOL_VERSION = 1
_NEXT_SEQ_SQL = """
INSERT INTO realtime_roomsequence (room_key, last_seq) VALUES (%s, 1)
ON CONFLICT (room_key) DO UPDATE SET last_seq = realtime_roomsequence.last_seq + 1
RETURNING last_seq
"""

_client_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}  # one sync client per real-time shard URL


_pools: dict[str, ThreadPoolExecutor] = {}


def process_pool(name: str, threads: int) -> ThreadPoolExecutor:
    """One named thread pool per process, made on first use (its threads each keep a database connection)."""
    pool = _pools.get(name)
    if pool is None:
        with _client_lock:
            pool = _pools.get(name)
            if pool is None:
                pool = _pools[name] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
    return pool


def db_executor() -> ThreadPoolExecutor:
    """The process's pool for socket database work (AULA_DB_THREADS threads, one connection each).

    Its own pool, not the event loop's default executor: anything else that uses the default one
    (`asyncio.to_thread`, DNS lookups) must not queue behind a join storm's queries (measured: presence
    diffs 16 s late when both shared the default pool)."""
    return process_pool("aula-db", settings.AULA_DB_THREADS)


def db_call(fn, *, health_check: bool = True):
    """Run blocking database work from a socket handler in the database thread pool.

    Channels' `database_sync_to_async` is thread-sensitive by default: every socket of a process would
    share ONE thread, so each autosave waits behind every other one (measured: 2,000 students saving every
    5 s queued for seconds). Socket handlers have no thread affinity, so they run in parallel threads,
    each with its own database connection, with Django's per-request connection housekeeping around each
    call (as Channels does), and the caller's context variables (log ids, the audit actor).

    `health_check=False` is for the hottest writes (autosave): never a `SELECT 1` round trip before the
    work; otherwise only when the thread's connection sat idle longer than AULA_DB_HEALTH_CHECK_IDLE_SECONDS.
    A connection that died since (PostgreSQL restarted) fails the work itself with OperationalError /
    InterfaceError, and the handler refuses the frame as unavailable, so the client sends it again (a
    replayed version changes nothing). Nothing is half done: the work is one autocommit statement or one
    transaction. Django marks the connection as errored; the next call checks it and replaces it."""

    @functools.wraps(fn)
    async def run(*args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(db_executor(), contextvars.copy_context().run, _in_db_thread,
                                          fn, health_check, args, kwargs)

    return run


_thread_state = threading.local()  # per database thread: when its connection last finished work cleanly


def _in_db_thread(fn, health_check: bool, args, kwargs):
    from django.db import close_old_connections

    idle = time.monotonic() - getattr(_thread_state, "ok_at", -1e9)
    if health_check and idle > settings.AULA_DB_HEALTH_CHECK_IDLE_SECONDS:
        # Idle for a while (PostgreSQL may have restarted meanwhile): Django's `SELECT 1` before the work.
        close_old_connections()
    else:
        # Used cleanly moments ago, or the hottest writes: no round trip before the work. In a join storm
        # the check was one of every three round trips (docs/benchmarks.md, "Live streams"). A connection
        # that died since fails the work with OperationalError/InterfaceError; nothing is half done (one
        # autocommit statement or one transaction) and the caller refuses the frame or the socket as
        # unavailable, so the client tries again; Django marks the connection, the next call replaces it.
        connection.close_if_unusable_or_obsolete()
        connection.health_check_done = True
    try:
        result = fn(*args, **kwargs)
    finally:
        close_old_connections()  # past its max age or errored: closed now (no round trip)
    if connection.connection is not None and not connection.errors_occurred:
        _thread_state.ok_at = time.monotonic()
    return result


def async_redis(url: str):
    """An asyncio Redis client for the real-time tier with a bounded, *blocking* pool: under a connect or
    disconnect storm (thousands of presence updates at once) callers wait for a connection instead of
    failing with "Too many connections" (redis-py's default pool refuses above 100)."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=settings.AULA_REALTIME_REDIS_POOL, timeout=10, socket_connect_timeout=2,
        health_check_interval=15, **settings.REDIS_CLIENT_IDENTITY)
    return aioredis.Redis(connection_pool=pool)


def redis_channel(room_key: str) -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:rt:{room_key}"


def shard_index(room_key: str, shards: int | None = None) -> int:
    """The real-time Redis shard that holds a room: its channel, its presence keys, its publishes.

    A stable hash (CRC-32, not Python's per-process salted `hash`) so every process and the Celery
    sweeper agree. `shards` defaults to the length of settings.REDIS_REALTIME_SHARDS."""
    if shards is None:
        shards = len(settings.REDIS_REALTIME_SHARDS)
    if shards == 1:
        return 0
    return zlib.crc32(room_key.encode()) % shards


def _redis(shard: int = 0) -> redis.Redis:
    """The sync client of one real-time shard (shard 0 also holds the global keys)."""
    url = settings.REDIS_REALTIME_SHARDS[shard]
    client = _clients.get(url)
    if client is None:
        with _client_lock:
            client = _clients.get(url)
            if client is None:
                client = _clients[url] = redis.Redis.from_url(
                    url, socket_timeout=2, socket_connect_timeout=2,
                    health_check_interval=30, **settings.REDIS_CLIENT_IDENTITY,
                )
    return client


def encode_frame(type_: str, data: dict, *, seq: int | None = None, ts: dt.datetime | None = None) -> str:
    """The wire envelope, encoded once per event (see docs/protocol.md)."""
    frame = {"v": PROTOCOL_VERSION, "type": type_, "seq": seq,
             "ts": (ts or timezone.now()).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "data": data}
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, default=str)


def room_next_seq(room_key: str) -> int:
    if not connection.in_atomic_block:
        raise RuntimeError("room_next_seq() must run inside the writer's transaction")
    with connection.cursor() as cur:
        cur.execute(_NEXT_SEQ_SQL, [room_key])
        return cur.fetchone()[0]


def room_event_emit(room_key: str, type_: str, data: dict) -> RoomEvent:
    """Store an event in the room's log and broadcast it once the surrounding transaction commits."""
    with transaction.atomic():
        return room_event_record(room_key, room_next_seq(room_key), type_, data)


def room_event_record(room_key: str, seq: int, type_: str, data: dict) -> RoomEvent:
    """Store an event under a seq already taken in this transaction (when the domain row carries it too)."""
    if not connection.in_atomic_block:
        raise RuntimeError("room_event_record() must run inside the writer's transaction")
    event = RoomEvent.objects.create(room_key=room_key, seq=seq, type=type_, payload=data)
    frame = encode_frame(type_, data, seq=seq, ts=event.created_at)
    transaction.on_commit(lambda: publish_frame(room_key, frame))
    return event


def room_signal_publish(room_key: str, type_: str, data: dict) -> None:
    """An ephemeral event (not stored, no seq), published after commit if a transaction is open."""
    frame = encode_frame(type_, data)
    transaction.on_commit(lambda: publish_frame(room_key, frame))


async def publish_frame_async(client, room_key: str, frame: str) -> bool:
    """`publish_frame` from the event loop with an asyncio client (presence diffs, coalesced results):
    no thread hop, so fan-out never waits behind database work. `client` must be the room's shard's."""
    try:
        await client.publish(redis_channel(room_key), frame)
        return True
    except (redis.RedisError, OSError) as exc:
        logger.warning("realtime publish failed for room %s: %s", room_key, type(exc).__name__)
        return False


def room_direct_publish(room_key: str, user_id: int, type_: str, data: dict) -> None:
    """An ephemeral event for one member of a room only (a private notice), published after commit.

    It travels on the room's channel with a `@<user_id> ` prefix that the hub routes to that user's local
    sockets: no channel per user, so Redis subscriptions grow with processes and rooms, not with people."""
    frame = f"@{int(user_id)} {encode_frame(type_, data)}"
    transaction.on_commit(lambda: publish_frame(room_key, frame))


def publish_frame(room_key: str, frame: str) -> bool:
    """PUBLISH an encoded frame to every process that has members of the room.

    Published on the room's shard, where every process subscribed to it. A failure is logged, not
    raised: the event is already stored and clients recover it by seq.
    """
    try:
        _redis(shard_index(room_key)).publish(redis_channel(room_key), frame)
        return True
    except redis.RedisError as exc:
        logger.warning("realtime publish failed for room %s: %s", room_key, type(exc).__name__)
        return False


def room_events_since(room_key: str, after_seq: int, limit: int) -> list[RoomEvent]:
    return list(RoomEvent.objects.filter(room_key=room_key, seq__gt=after_seq).order_by("seq")[:limit])


def room_last_seq(room_key: str) -> int:
    from config.realtime.models import RoomSequence

    return RoomSequence.objects.filter(room_key=room_key).values_list("last_seq", flat=True).first() or 0


def event_frame(event: RoomEvent) -> str:
    return encode_frame(event.type, event.payload, seq=event.seq, ts=event.created_at)


def room_control_publish(room_key: str, action: str, **fields) -> None:
    """Tell every process's consumers in a room to act (close a user's sockets, end the session).

    Sent after commit, on the room's channel, with a prefix the hub routes to consumers, not sockets.
    """
    frame = json.dumps({"ctl": {"action": action, **fields}}, separators=(",", ":"))
    transaction.on_commit(lambda: publish_frame(room_key, frame))
