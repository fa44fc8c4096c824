"""Liveness and readiness probes.

/healthz/ answers while the process can serve; /readyz/ also proves PostgreSQL, Redis (cache), every
real-time Redis shard and the channel layer (a real send and receive through Redis) work, so a load
balancer only routes to ready pods.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@never_cache
@require_GET
def liveness(request):
    return JsonResponse({"status": "ok"})


def _check_db() -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchone()


def _check_cache() -> None:
    key = f"readyz:{uuid.uuid4().hex}"
    cache.set(key, "1", 5)
    if cache.get(key) != "1":
        raise RuntimeError("cache round trip failed")
    cache.delete(key)


async def _check_layer() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    message = await asyncio.wait_for(layer.receive(channel), timeout=2)
    if message.get("type") != "readyz.ping":
        raise RuntimeError("unexpected channel layer message")


def _check_realtime() -> None:
    """Every real-time Redis shard answers (a room on a dead shard would get no broadcasts)."""
    from django.conf import settings

    from config.realtime.transport import _redis

    for shard in range(len(settings.REDIS_REALTIME_SHARDS)):
        _redis(shard).ping()


CHECKS = {
    "database": sync_to_async(_check_db),
    "redis": sync_to_async(_check_cache),
    "realtime_redis": sync_to_async(_check_realtime, thread_sensitive=False),
    "channel_layer": _check_layer,
}


@never_cache
@require_GET
async def readiness(request):
    results, ok = {}, True
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            await asyncio.wait_for(check(), timeout=5)
            results[name] = {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
        except Exception as exc:  # report the kind of failure only, never connection strings
            ok = False
            results[name] = {"ok": False, "error": type(exc).__name__}
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": results}, status=200 if ok else 503)
