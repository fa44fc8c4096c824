"""GET /metrics (who may read it, what it says) and the room-health admin pages and summaries."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics import alerts, health
from analytics.models import Alert, RoomHealth
from config.realtime import stats
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


async def in_loop(fn) -> None:
    """Run `fn` as a server process's event loop would, then close that loop's Redis clients."""
    from config.realtime.hub import hub

    try:
        await fn()
    finally:
        for shard in hub()._shards:
            await shard.redis.aclose()

TOKEN = "metrics-token-" + "x" * 30


def seed(room: str, now: float) -> None:
    async def run():
        for uid in (1, 2, 3):
            await stats.record_connect(room, "ok", user_id=uid, now=now)
        await stats.record_connect(room, "fail", now=now)
        await stats.record_connect(room, "ok", user_id=1, reconnect=True, now=now)
        await stats.record_player_error(room, "MEDIA_ERR_DECODE")

    asyncio.run(in_loop(run))


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_is_hidden_without_a_token_configured(client, settings):
    settings.AULA_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404
    student = factories.user("pupil", age=15)
    client.force_login(student)
    assert client.get("/metrics").status_code == 404


def test_metrics_wants_the_right_bearer_token(client, settings):
    settings.AULA_METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + TOKEN[:-1] + "y")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_exposes_room_and_process_figures(client, settings):
    settings.AULA_METRICS_TOKEN = TOKEN
    seed("i5.ls7", time.time())
    seed("st9", time.time())
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    values = samples(response.content)
    session = (("id", "7"), ("kind", "session"))
    assert values[("aula_room_connection_attempts", session)] == 5
    assert values[("aula_room_connection_failures", session)] == 1
    assert values[("aula_room_connection_success_ratio", session)] == pytest.approx(0.8)
    assert values[("aula_room_reconnects_per_participant", session)] == pytest.approx(1 / 3, abs=0.01)
    assert values[("aula_room_connections", session)] == 4
    assert values[("aula_room_player_errors", (("id", "9"), ("kind", "stream")))] == 1
    assert ("aula_celery_queue_depth", (("queue", "bulk"),)) in values
    assert ("aula_analytics_flush_lag_seconds", ()) in values
    assert any(name == "aula_process_open_sockets" for name, _ in values)
    # A server process tunes the collector and counts its pauses when it loads config.asgi (idempotent).
    import gc

    from config import gctuning

    gctuning.tune_server_process()
    gc.collect(2)
    values = samples(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content)
    full = [v for (name, labels), v in values.items()
            if name == "aula_process_gc_collections_total" and ("generation", "2") in labels]
    assert full and full[0] >= 1
    assert b"i5.ls7" not in response.content  # labels are kind and id only


def test_staff_may_read_metrics_with_their_session(client, settings):
    settings.AULA_METRICS_TOKEN = TOKEN
    client.force_login(factories.user("operator", staff=True, superuser=True))
    assert client.get("/metrics").status_code == 200


def test_room_health_is_persisted_idempotently(world):
    room = f"i{world.school_a.pk}.ls{world.session_a.pk}"
    now = time.time()
    seed(room, now)
    assert health.room_health_persist_active(now=now) == 1
    assert health.room_health_persist_active(now=now) == 1
    row = RoomHealth.objects.get()
    assert (row.kind, row.object_id) == ("session", world.session_a.pk)
    assert row.attempts == 5 and row.failures == 1 and row.reconnects == 1 and row.participants == 3
    assert row.peak == 4 and row.player_errors_by_code == {"MEDIA_ERR_DECODE": 1}
    assert health.room_health_for("session", world.session_a.pk)["attempts"] == 5


def test_admin_pages_render_and_actions_call_services(client, world):
    room = f"i{world.school_a.pk}.ls{world.session_a.pk}"
    seed(room, time.time())
    health.room_health_persist_active()
    alerts.connection_failure_evaluate(room_key=room, figures={"successes": 10, "failures": 10})
    alert = Alert.objects.get()
    client.force_login(factories.user("root", staff=True, superuser=True))
    index = client.get("/admin/")
    assert index.status_code == 200 and b"1 open alert" in index.content
    assert client.get("/admin/analytics/roomhealth/").status_code == 200
    row = RoomHealth.objects.get()
    assert client.get(f"/admin/analytics/roomhealth/{row.pk}/change/").status_code == 200
    assert client.get("/admin/analytics/alert/").status_code == 200
    assert client.get(f"/admin/analytics/alert/{alert.pk}/change/").status_code == 200
    response = client.post("/admin/analytics/alert/", {"action": "acknowledge", "_selected_action": [alert.pk]})
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.state == Alert.State.ACKNOWLEDGED
    client.post("/admin/analytics/alert/", {"action": "resolve", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED and alert.resolved_by_staff


def test_school_staff_see_only_their_schools_rooms(client, world):
    mine = f"i{world.school_a.pk}.ls{world.session_a.pk}"
    theirs = f"i{world.school_b.pk}.ls{world.session_b.pk}"
    for room in (mine, theirs):
        seed(room, time.time())
    health.room_health_persist_active()
    from django.contrib.auth.models import Permission

    world.staff_a.user_permissions.add(*Permission.objects.filter(content_type__app_label="analytics"))
    client.force_login(world.staff_a)
    page = client.get("/admin/analytics/roomhealth/")
    assert page.status_code == 200
    assert mine.encode() in page.content and theirs.encode() not in page.content


@pytest.mark.django_db
def test_moderation_classifier_health_and_queue_are_exported():
    from analytics.metrics import render
    from moderation import pipeline

    pipeline.health_note(skipped=3, timeouts=1)
    body = render().decode()
    assert "aula_moderation_classifier_up 1.0" in body
    assert "aula_moderation_classifier_skipped_total 3.0" in body
    assert "aula_moderation_queue_open 0.0" in body
