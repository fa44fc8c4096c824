"""Live per-stream figures in Redis for the creator dashboard: per-second counters and current gauges.

Writers (the stream consumer and services) increment counters of the current second; the dashboard reads
the last few minutes. One hash per stream per second, kept AULA_STREAM_LIVE_KEEP seconds, so the
dashboard of a long stream costs the same as a short one. These are hints for a live view; the durable
figures are the analytics rollups (analytics app) and the stream's recorded peak.

Counter fields in use: join, leave, chat, chat_held, rx.<emoji>, sentiment_sum, sentiment_n.
Gauges: viewers, peak, held (chat messages waiting for review).
"""

from __future__ import annotations

import time

from django.conf import settings

from config.realtime.transport import _redis

KEEP = 3600  # seconds of per-second counters kept


def _prefix(stream_id: int) -> str:
    return f"{settings.AULA_REDIS_KEY_PREFIX}:live:st{int(stream_id)}"


def _second_key(stream_id: int, second: int) -> str:
    return f"{_prefix(stream_id)}:s{second}"


def _gauges_key(stream_id: int) -> str:
    return f"{_prefix(stream_id)}:g"


def _queue_incr(pipe, stream_id: int, at: float | None, counts: dict[str, float]):
    key = _second_key(stream_id, int(time.time() if at is None else at))
    for field, amount in counts.items():
        if isinstance(amount, float) and not amount.is_integer():
            pipe.hincrbyfloat(key, field, amount)
        else:
            pipe.hincrby(key, field, int(amount))
    pipe.expire(key, KEEP)
    return pipe


def incr(stream_id: int, *, at: float | None = None, **counts: float) -> None:
    """Add to this second's counters (sync; one round trip). Float values (sentiment sums) are allowed."""
    _queue_incr(_redis().pipeline(transaction=False), stream_id, at, counts).execute()


async def aincr(client, stream_id: int, *, at: float | None = None, **counts: float) -> None:
    """`incr` on an asyncio Redis client (the hub's), for consumers."""
    await _queue_incr(client.pipeline(transaction=False), stream_id, at, counts).execute()


def series(stream_id: int, seconds: int = 300, *, now: float | None = None) -> list[tuple[int, dict[str, float]]]:
    """The last `seconds` full seconds, oldest first, as (epoch second, {field: value}); empty seconds included."""
    end = int(time.time() if now is None else now)
    seconds_list = list(range(end - seconds, end))
    pipe = _redis().pipeline(transaction=False)
    for second in seconds_list:
        pipe.hgetall(_second_key(stream_id, second))
    out = []
    for second, raw in zip(seconds_list, pipe.execute(), strict=True):
        out.append((second, {k.decode(): float(v) for k, v in raw.items()}))
    return out


def gauges_set(stream_id: int, **values: float) -> None:
    _redis().hset(_gauges_key(stream_id), mapping=values)


async def agauges_set(client, stream_id: int, **values: float) -> None:
    await client.hset(_gauges_key(stream_id), mapping=values)


def gauges(stream_id: int) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in _redis().hgetall(_gauges_key(stream_id)).items()}


def forget(stream_id: int) -> None:
    """Drop the gauges of an ended stream (the per-second counters expire on their own)."""
    _redis().delete(_gauges_key(stream_id))
