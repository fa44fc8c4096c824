"""GET /metrics: Prometheus exposition of room health and process health, computed at scrape time.

Room figures come from Redis (shared by every process), so any process answers for all of them; the process
figures (open sockets, hub rooms, frames) are this process's own and carry its `pid` label. Access: a bearer
token equal to AULA_METRICS_TOKEN (compared in constant time) or a signed-in staff user; otherwise 404 when no
token is configured (the endpoint does not advertise itself) and 401 when one is (docs/observability.md).
"""

from __future__ import annotations

import hmac
import os
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from config.realtime import stats

ROOM_WINDOW_MINUTES = 5
ACTIVE_ROOM_SECONDS = 5 * 60
MAX_ROOMS = 2000  # a scrape's bound: the most recently active rooms first
# room_health() figure, metric name (aula_room_…), help.
ROOM_GAUGES = (
    ("attempts", "connection_attempts", "Connection attempts"),
    ("successes", "connection_successes", "Connections accepted and joined"),
    ("failures", "connection_failures", "Connections that failed for a server-side reason"),
    ("refusals", "connection_refusals", "Connections refused by policy (signed out, not enrolled, ended)"),
    ("success_rate", "connection_success_ratio", "successes / (successes + failures)"),
    ("reconnects", "reconnects", "Connections that resumed with a valid resume token"),
    ("participants", "participants", "Distinct participants who joined"),
    ("reconnects_per_participant", "reconnects_per_participant", "Reconnects per participant"),
    ("current", "connections", "Connections open now in live processes"),
    ("peak", "connections_peak", "Highest concurrent connections"),
    ("player_errors", "player_errors", "Video player error reports"),
    ("origin_refusals", "origin_refusals", "Handshakes refused by the origin allowlist"),
)


def _queue_depths() -> dict[str, int]:
    """Messages waiting per Celery queue: LLEN of the broker's lists (kombu's priority lists summed)."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    names = [q.name for q in settings.CELERY_TASK_QUEUES]
    pipe = client.pipeline(transaction=False)
    suffixes = ("", "\x06\x163", "\x06\x166", "\x06\x169")
    for name in names:
        for suffix in suffixes:
            pipe.llen(f"{prefix}{name}{suffix}")
    values = pipe.execute()
    client.close()
    return {name: sum(values[i * len(suffixes):(i + 1) * len(suffixes)]) for i, name in enumerate(names)}


def _analytics_buffer() -> tuple[float | None, dict[str, int], int]:
    """(flush lag in seconds, overflow counts by kind, entries waiting) of the analytics event buffer."""
    import redis

    from analytics import buffer

    client = redis.Redis.from_url(settings.REDIS_ANALYTICS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.xrange(buffer.stream_key(), count=1)
        pipe.xlen(buffer.stream_key())
        pipe.hgetall(buffer.overflow_key())
        first, length, overflow = pipe.execute()
    finally:
        client.close()
    lag = None
    try:
        from analytics.selectors import flush_lag  # the rollup pipeline's own figure, when it exists

        lag = flush_lag()
    except ImportError:
        if first:
            entry_id = first[0][0].decode() if isinstance(first[0][0], bytes) else first[0][0]
            lag = max(0.0, time.time() - int(entry_id.split("-")[0]) / 1000)
        else:
            lag = 0.0
    return lag, {k.decode(): int(v) for k, v in overflow.items()}, int(length)


class RoomHealthCollector:
    """A custom collector: every scrape reads the figures afresh (no per-process registry state)."""

    def __init__(self, process: dict | None = None):
        self.process = process or {}

    def collect(self):
        labels = ["kind", "id"]
        gauges = {name: GaugeMetricFamily(f"aula_room_{metric}", f"{help_text} (last 5 minutes)", labels=labels)
                  for name, metric, help_text in ROOM_GAUGES}
        latency = GaugeMetricFamily("aula_room_delivery_latency_seconds",
                                    "Event delivery latency quantile from sampled acks (last 5 minutes)",
                                    labels=[*labels, "quantile"])
        now = time.time()
        for room_key in stats.active_rooms(ACTIVE_ROOM_SECONDS, now=now)[-MAX_ROOMS:]:
            label = stats.room_label(room_key)
            if label is None:
                continue
            values = [label[0], str(label[1])]
            figures = stats.room_health(room_key, minutes=ROOM_WINDOW_MINUTES, now=now)
            for name, family in gauges.items():
                if figures.get(name) is not None:
                    family.add_metric(values, float(figures[name]))
            for q in ("50", "95", "99"):
                ms = figures[f"latency_p{q}_ms"]
                if ms is not None:
                    latency.add_metric([*values, f"0.{q}"], ms / 1000)
        yield from gauges.values()
        yield latency

        origin = GaugeMetricFamily("aula_ws_origin_refusals", "Handshakes refused by the origin allowlist, last 5 min",
                                   labels=["target"])
        for target, n in stats.origin_refusals_total(ROOM_WINDOW_MINUTES, now=now).items():
            origin.add_metric([target.split(":")[0]], n)
        yield origin

        queues = GaugeMetricFamily("aula_celery_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        for name, depth in _queue_depths().items():
            queues.add_metric([name], depth)
        yield queues

        lag, overflow, waiting = _analytics_buffer()
        yield GaugeMetricFamily("aula_analytics_flush_lag_seconds", "Age of the oldest unflushed analytics event",
                                value=lag or 0.0)
        yield GaugeMetricFamily("aula_analytics_buffer_entries", "Analytics events waiting in Redis", value=waiting)
        dropped = CounterMetricFamily("aula_analytics_buffer_overflow", "Analytics events dropped at a full buffer",
                                      labels=["kind"])
        for kind, n in overflow.items():
            dropped.add_metric([kind], n)
        yield dropped

        # Moderation: is the classifier being skipped (docs/moderation.md), and how many items wait for review.
        from moderation.pipeline import classifier_health

        health = classifier_health()
        yield GaugeMetricFamily("aula_moderation_classifier_up",
                                "1 while the classifier's circuit breaker is closed (0: messages screened by "
                                "pattern lists only)", value=0.0 if health.get("state") == "open" else 1.0)
        for name in ("skipped", "timeouts", "errors"):
            yield CounterMetricFamily(f"aula_moderation_classifier_{name}", f"Classifier calls {name}",
                                      value=health.get(name, 0))
        yield GaugeMetricFamily("aula_moderation_queue_open", "Moderation items waiting for a decision",
                                value=_moderation_open())

        yield CounterMetricFamily("aula_collab_resyncs", "Whiteboard/notes clients whose convergence check found "
                                  "them behind (and repaired them)", value=_collab_resyncs())

        if self.process:
            pid = [str(os.getpid())]
            for name, help_text, kind in (
                    ("open_sockets", "WebSockets open in this process", "gauge"),
                    ("hub_rooms", "Rooms this process's hub is subscribed to", "gauge"),
                    ("frames_in", "Frames the hub received from Redis", "counter"),
                    ("frames_out", "Frames written to this process's sockets", "counter")):
                family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(
                    f"aula_process_{name}", help_text, labels=["pid"])
                family.add_metric(pid, self.process[name])
                yield family
            gc_figures = self.process.get("gc")
            if gc_figures:
                count = CounterMetricFamily("aula_process_gc_collections", "Garbage collections by generation",
                                            labels=["pid", "generation"])
                seconds = CounterMetricFamily("aula_process_gc_pause_seconds",
                                              "Time spent in garbage collection (the event loop stalls)",
                                              labels=["pid", "generation"])
                longest = GaugeMetricFamily("aula_process_gc_longest_pause_seconds",
                                            "Longest single collection since start", labels=["pid", "generation"])
                for generation in (0, 1, 2):
                    labels = [pid[0], str(generation)]
                    count.add_metric(labels, gc_figures["collections"][generation])
                    seconds.add_metric(labels, gc_figures["seconds"][generation])
                    longest.add_metric(labels, gc_figures["longest"][generation])
                yield count
                yield seconds
                yield longest


def _moderation_open() -> int:
    from moderation.models import ModerationItem

    return ModerationItem.objects.exclude(status=ModerationItem.Status.DECIDED).count()


def _collab_resyncs() -> int:
    from django.conf import settings

    from config.realtime.transport import _redis

    try:
        return int(_redis().get(f"{settings.AULA_REDIS_KEY_PREFIX}:collab:resyncs") or 0)
    except Exception:
        return 0


def process_figures() -> dict:
    """This process's own real-time figures (the event loop's hub; call from the loop)."""
    from config.realtime.hub import hub

    h = hub()
    members = {m for room in h.rooms.values() for m in room}
    from config import gctuning

    return {"open_sockets": stats.local.open_sockets, "hub_rooms": len(h.rooms), "frames_in": h.frames_in,
            "frames_out": stats.local.frames_out_closed + sum(m.delivered for m in members),
            "gc": gctuning.figures()}


def render(process: dict | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoomHealthCollector(process))
    return generate_latest(registry)


def _authorized(request) -> bool | None:
    """True: allowed. False: a token is configured and was not given correctly (401). None: hide (404)."""
    token = settings.AULA_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    return False if token else None


async def metrics_view(request):
    """Async so that the process figures are this server process's (its event loop's hub)."""
    allowed = _authorized(request)
    if allowed is not True:
        user = await request.auser()
        if not (user.is_authenticated and user.is_active and user.is_staff):
            if allowed is None:
                return HttpResponse("Not found", status=404, content_type="text/plain")
            response = HttpResponse("Unauthorized", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    try:
        process = process_figures()
    except RuntimeError:
        process = None
    body = await sync_to_async(render, thread_sensitive=False)(process)
    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


metrics_view.csrf_exempt = True
