"""Health probes, request ids and structured logs."""

from __future__ import annotations

import json
import logging

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_liveness(client):
    response = client.get("/healthz/")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readiness_checks_database_redis_and_channel_layer(client):
    response = client.get("/readyz/")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["checks"]) == {"database", "redis", "realtime_redis", "channel_layer"}
    assert all(c["ok"] for c in body["checks"].values())


def test_readiness_reports_unavailable_redis_without_secrets(client, settings):
    from channels.layers import channel_layers

    dead = "redis://:s3cret@127.0.0.1:1/0"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead,
                                   "OPTIONS": {"socket_connect_timeout": 0.2}}}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                                           "CONFIG": {"hosts": [dead]}}}
    channel_layers.backends.clear()
    from django.core.cache import caches

    caches._settings = caches.settings = settings.CACHES
    if hasattr(caches._connections, "default"):
        del caches._connections.default
    try:
        response = client.get("/readyz/")
    finally:
        channel_layers.backends.clear()
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["channel_layer"]["ok"] is False
    assert "s3cret" not in response.content.decode()


def test_readiness_fails_when_one_realtime_shard_is_down(client, settings):
    """With the real-time tier sharded, a dead shard makes the pod unready (its rooms would go silent)."""
    settings.REDIS_REALTIME_SHARDS = [settings.REDIS_REALTIME_SHARDS[0], "redis://:s3cret@127.0.0.1:1/0"]
    response = client.get("/readyz/")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["realtime_redis"] == {"ok": False, "error": "ConnectionError"}
    assert body["checks"]["database"]["ok"] is True
    assert "s3cret" not in response.content.decode()


def test_request_id_is_echoed_and_generated(client):
    assert len(client.get("/healthz/")["X-Request-ID"]) == 32
    assert client.get("/healthz/", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    # an unsafe caller-provided id is replaced, never logged as given
    rid = client.get("/healthz/", HTTP_X_REQUEST_ID="evil\nline")["X-Request-ID"]
    assert rid != "evil\nline" and len(rid) == 32


def test_json_logs_carry_request_and_user_ids_but_no_personal_data(world, client):
    from pythonjsonlogger.json import JsonFormatter

    from config.observability import ContextFilter

    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Capture()
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("aula.api")
    logger.addHandler(handler)
    try:
        client.force_login(world.staff_a)
        from unittest import mock

        with mock.patch("compliance.api.views.SchoolList.get_queryset", side_effect=RuntimeError("boom")):
            response = client.get("/api/v1/schools/", HTTP_X_REQUEST_ID="req-42")
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert response.json()["error"]["request_id"] == "req-42"
    assert records, "the unhandled API error was logged"
    formatter = JsonFormatter("%(levelname)s %(name)s %(message)s %(request_id)s %(user_id)s")
    line = json.loads(formatter.format(records[0]))
    assert line["request_id"] == "req-42"
    assert line["user_id"] == str(world.staff_a.pk)
    assert world.staff_a.email not in json.dumps(line)
