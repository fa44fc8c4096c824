"""The creator dashboard: who may see it, its figures from streaming/live.py, its socket and its ticker.

Figures reach the page over `/ws/v1/streams/<id>/dashboard/`: a snapshot of the last five minutes when the
socket opens, then a `dashboard.tick` every AULA_STREAM_DASHBOARD_TICK_SECONDS in the stream's staff room.
One ticker per stream, whatever the number of open dashboards and server processes: every process that holds
a dashboard socket of the stream runs a loop aligned to the tick boundaries, and at each boundary they race
for that tick's lease in Redis (SET NX); only the winner reads the counters and publishes the tick once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

import redis
from django.conf import settings
from django.utils import timezone

from config.realtime import stats
from config.realtime.consumer import Refused, RoomConsumer
from config.realtime.protocol import CloseCode, ErrorCode, error_frame
from config.realtime.transport import _redis, db_call, encode_frame, publish_frame
from streaming import live
from streaming.models import Channel, ChannelRole, Stream
from streaming.realtime import stream_room, stream_staff_room

logger = logging.getLogger("aula.streaming.dashboard")

SNAPSHOT_SECONDS = 300
MINUTE = 60
SENTIMENT_WINDOW = 10  # seconds pooled into one sentiment figure (a lone message is not a mood)
MAX_REACTION_KINDS = 16
TICK_FRAME = "dashboard.tick"


# --- who may see it ----------------------------------------------------------------------------------

def channel_staff_ids(channel: Channel) -> set[int]:
    """The creator (channel owner) and the channel's moderators."""
    moderators = ChannelRole.objects.filter(channel_id=channel.pk, role=ChannelRole.Kind.MODERATOR)
    return {channel.owner_id, *moderators.values_list("user_id", flat=True)}


def dashboard_staff_ids(stream: Stream) -> set[int]:
    return channel_staff_ids(stream.channel)


def dashboard_access(user, stream_id: int) -> tuple[Stream | None, bool]:
    """(the stream or None when there is none, whether this user may see its dashboard)."""
    stream = Stream.objects.select_related("channel").filter(pk=stream_id).first()
    if stream is None:
        return None, False
    return stream, bool(user.is_authenticated) and user.pk in dashboard_staff_ids(stream)


# --- figures -----------------------------------------------------------------------------------------

def _viewers_key(stream_id: int) -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:dash:st{int(stream_id)}:v"


def _lease_key(stream_id: int, slot: int) -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:dash:st{int(stream_id)}:t{slot}"


def _point(second: int, fields: dict[str, float]) -> dict:
    reactions = {k[3:]: int(v) for k, v in fields.items() if k.startswith("rx.") and v}
    if len(reactions) > MAX_REACTION_KINDS:
        reactions = dict(sorted(reactions.items(), key=lambda kv: -kv[1])[:MAX_REACTION_KINDS])
    return {
        "t": second,
        "join": int(fields.get("join", 0)),
        "leave": int(fields.get("leave", 0)),
        "chat": int(fields.get("chat", 0)),
        "chat_held": int(fields.get("chat_held", 0)),
        "rx": reactions,
        "sentiment_sum": round(fields.get("sentiment_sum", 0.0), 4),
        "sentiment_n": int(fields.get("sentiment_n", 0)),
    }


def _summary(points: list[dict]) -> dict:
    """Rates and the chat mood (mean VADER compound score) over the last minute. The mood chart itself pools
    SENTIMENT_WINDOW seconds per point (static/streaming/dashboard.js)."""
    last_minute = points[-MINUTE:]
    n = sum(p["sentiment_n"] for p in last_minute)
    return {
        "joins_per_minute": sum(p["join"] for p in last_minute),
        "leaves_per_minute": sum(p["leave"] for p in last_minute),
        "chat_per_minute": sum(p["chat"] for p in last_minute),
        "sentiment": round(sum(p["sentiment_sum"] for p in last_minute) / n, 4) if n else None,
        "sentiment_n": n,
    }


def _gauges(stream_id: int) -> dict[str, int]:
    g = live.gauges(stream_id)
    return {"viewers": int(g.get("viewers", 0)), "peak": int(g.get("peak", 0)), "held": int(g.get("held", 0))}


def viewers_history(stream_id: int) -> list[list[int]]:
    return [[int(t), int(v)] for t, v in (item.decode().split(":") for item in
                                          _redis().lrange(_viewers_key(stream_id), 0, -1))]


def _viewers_record(stream_id: int, second: int, viewers: int) -> None:
    keep = SNAPSHOT_SECONDS // settings.AULA_STREAM_DASHBOARD_TICK_SECONDS + 1
    pipe = _redis().pipeline(transaction=False)
    pipe.rpush(_viewers_key(stream_id), f"{second}:{viewers}")
    pipe.ltrim(_viewers_key(stream_id), -keep, -1)
    pipe.expire(_viewers_key(stream_id), live.KEEP)
    pipe.execute()


def room_health(stream_id: int) -> dict | None:
    """Connection health of the stream's room over the last five minutes (config/realtime/stats.py)."""
    try:
        return stats.room_health(stream_room(stream_id))
    except Exception:  # Redis away for a moment: the dashboard shows the rest
        logger.warning("room_health failed for stream %s", stream_id, exc_info=True)
        return None


def dashboard_snapshot(stream_id: int, *, now: float | None = None) -> dict:
    """The last five minutes, for a dashboard that just opened."""
    points = [_point(s, f) for s, f in live.series(stream_id, SNAPSHOT_SECONDS, now=now)]
    return {
        "stream_id": stream_id,
        "tick_seconds": settings.AULA_STREAM_DASHBOARD_TICK_SECONDS,
        "points": points,
        "viewers_history": viewers_history(stream_id),
        "gauges": _gauges(stream_id),
        "summary": _summary(points),
        "health": room_health(stream_id),
    }


def dashboard_tick(stream_id: int, *, now: float | None = None) -> dict:
    """One tick: the seconds since the last one (a little overlap; the page keys points by second), the
    current gauges and rates. Records the viewer count for the viewers chart."""
    now = time.time() if now is None else now
    period = settings.AULA_STREAM_DASHBOARD_TICK_SECONDS
    points = [_point(s, f) for s, f in live.series(stream_id, MINUTE, now=now)]
    gauges = _gauges(stream_id)
    _viewers_record(stream_id, int(now), gauges["viewers"])
    return {
        "stream_id": stream_id,
        "t": int(now),
        "points": points[-(period + 2):],
        "viewers": [int(now), gauges["viewers"]],
        "gauges": gauges,
        "summary": _summary(points),
        "health": room_health(stream_id),
    }


def tick_lease_take(stream_id: int, slot: int) -> bool:
    """Whether this process won this tick of this stream (one winner per tick, across processes)."""
    ttl = max(5, 3 * settings.AULA_STREAM_DASHBOARD_TICK_SECONDS)
    return bool(_redis().set(_lease_key(stream_id, slot), "1", nx=True, ex=ttl))


def tick_run(stream_id: int, slot: int, *, now: float | None = None) -> bool:
    """Sync: take the lease of this tick and, if won, compute and publish it to the staff room."""
    if not tick_lease_take(stream_id, slot):
        return False
    publish_frame(stream_staff_room(stream_id), encode_frame(TICK_FRAME, dashboard_tick(stream_id, now=now)))
    return True


class _Tickers:
    """The ticker loops of one process (event loop): one per stream with local dashboard sockets."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.tasks: dict[int, asyncio.Task] = {}

    def add(self, stream_id: int) -> None:
        self.counts[stream_id] = self.counts.get(stream_id, 0) + 1
        task = self.tasks.get(stream_id)
        if task is None or task.done():
            self.tasks[stream_id] = asyncio.create_task(self._loop(stream_id), name=f"aula-dashboard:{stream_id}")

    def discard(self, stream_id: int) -> None:
        left = self.counts.get(stream_id, 0) - 1
        if left > 0:
            self.counts[stream_id] = left
            return
        self.counts.pop(stream_id, None)
        task = self.tasks.pop(stream_id, None)
        if task is not None:
            task.cancel()

    async def _loop(self, stream_id: int) -> None:
        while stream_id in self.counts:
            period = settings.AULA_STREAM_DASHBOARD_TICK_SECONDS
            now = time.time()
            slot = int(now // period) + 1
            await asyncio.sleep(slot * period - now)  # every process wakes at the same boundary
            try:
                await asyncio.to_thread(tick_run, stream_id, slot, now=slot * period)
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                logger.warning("dashboard tick of stream %s skipped: %s", stream_id, type(exc).__name__)
            except Exception:
                logger.exception("dashboard tick of stream %s failed; trying again next tick", stream_id)


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Tickers] = weakref.WeakKeyDictionary()


def tickers() -> _Tickers:
    loop = asyncio.get_running_loop()
    t = _tickers.get(loop)
    if t is None:
        t = _tickers[loop] = _Tickers()
    return t


# --- the socket --------------------------------------------------------------------------------------

class DashboardConsumer(RoomConsumer):
    """`/ws/v1/streams/<stream_id>/dashboard/`: the creator and the channel's moderators only; re-checked
    every AULA_SOCKET_RECHECK_SECONDS (a demoted moderator's socket is closed with 4403)."""

    stream_id: int
    ticking = False

    async def authorize(self) -> str:
        stream_id = self.scope["url_route"]["kwargs"]["stream_id"]
        stream, allowed = await db_call(dashboard_access)(self.user, stream_id)
        if stream is None:
            raise Refused(CloseCode.NOT_FOUND, "no such stream")
        if not allowed:
            raise Refused(CloseCode.FORBIDDEN, "not the creator or a moderator of this channel")
        self.stream_id = stream.pk
        return stream_staff_room(stream.pk)

    async def joined(self) -> None:
        try:
            data = await asyncio.to_thread(dashboard_snapshot, self.stream_id)
        except (redis.RedisError, OSError):
            await self.reply(error_frame(ErrorCode.UNAVAILABLE, "Live figures are unavailable; they will follow.",
                                         retry_after=settings.AULA_STREAM_DASHBOARD_TICK_SECONDS))
            data = None
        if data is not None:
            # No seq: the dashboard applies every tick as it comes and ignores the staff room's numbered events.
            await self.reply(encode_frame("snapshot", {**data, "last_seq": None,
                                                       "server_time": timezone.now().isoformat()}))
        tickers().add(self.stream_id)
        self.ticking = True

    async def left(self) -> None:
        if self.ticking:
            self.ticking = False
            tickers().discard(self.stream_id)

    @property
    def recheck_group(self) -> str:
        return f"dashboard:{self.stream_id}"

    @classmethod
    def still_authorized_many(cls, consumers: list[DashboardConsumer]) -> dict[DashboardConsumer, CloseCode]:
        if not consumers:
            return {}
        stream = Stream.objects.select_related("channel").filter(pk=consumers[0].stream_id).first()
        if stream is None:
            return dict.fromkeys(consumers, CloseCode.NOT_FOUND)
        staff = dashboard_staff_ids(stream)
        return {c: CloseCode.FORBIDDEN for c in consumers if c.user.pk not in staff}
