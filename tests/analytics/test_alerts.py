"""The connection-failure alert: opens once, deduplicates, resolves with hysteresis, delivered once per change."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.db import IntegrityError, transaction

from analytics import alerts, health_tasks
from analytics.models import Alert
from config.celery import app as celery_app
from config.realtime import stats

pytestmark = pytest.mark.django_db(transaction=True)


async def in_loop(fn) -> None:
    """Run `fn` as a server process's event loop would, then close that loop's Redis clients."""
    from config.realtime.hub import hub

    try:
        await fn()
    finally:
        for shard in hub()._shards:
            await shard.redis.aclose()

SECRET = "s" * 40
ROOM = "i1.ls42"


def connections(room: str, ok: int, fail: int, *, now: float) -> None:
    """What the consumer base records for `ok` accepted and `fail` failed sockets (one event loop per call)."""

    async def run():
        for _ in range(ok):
            await stats.record_connect(room, "ok", user_id=1, now=now)
        for _ in range(fail):
            await stats.record_connect(room, "fail", now=now)

    asyncio.run(in_loop(run))


@pytest.fixture
def delivery(settings):
    settings.AULA_ALERT_EMAILS = ["ops@school.example"]
    settings.AULA_ALERT_CONNECTION_FAILURE_RATE = 0.02
    settings.AULA_ALERT_MIN_ATTEMPTS = 20
    settings.AULA_ALERT_RESOLVE_RATIO = 0.5
    settings.AULA_ALERT_WINDOW_SECONDS = 300
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True  # queued deliveries run in the test
    yield settings
    celery_app.conf.task_always_eager = eager


def test_an_alert_opens_once_and_reevaluation_updates_it(delivery):
    t0 = time.time()
    connections(ROOM, ok=95, fail=5, now=t0)  # 5 % failures over 100 decided connections
    assert alerts.alerts_evaluate(now=t0) == {"opened": 1, "updated": 0, "resolved": 0}
    connections(ROOM, ok=0, fail=5, now=t0)
    assert alerts.alerts_evaluate(now=t0 + 1)["updated"] == 1
    assert alerts.alerts_evaluate(now=t0 + 2)["updated"] == 1
    alert = Alert.objects.get()
    assert alert.state == Alert.State.OPEN and alert.room_key == ROOM
    assert alert.peak_value == pytest.approx(10 / 105) and alert.failures == 10 and alert.attempts == 105
    assert len(mail.outbox) == 1 and "opened" in mail.outbox[0].subject  # one e-mail for the open, not per run
    assert "ops@school.example" in mail.outbox[0].to


def test_few_attempts_are_not_an_alert(delivery):
    t0 = time.time()
    connections(ROOM, ok=2, fail=1, now=t0)  # 1 of 3 failed: noise below the minimum attempts
    assert alerts.alerts_evaluate(now=t0)["opened"] == 0
    assert not Alert.objects.exists() and mail.outbox == []


def test_refusals_do_not_count_towards_the_rate(delivery):
    t0 = time.time()

    async def run():
        for _ in range(50):
            await stats.record_connect(ROOM, "ref", now=t0)
        for _ in range(30):
            await stats.record_connect(ROOM, "ok", user_id=1, now=t0)

    asyncio.run(in_loop(run))
    assert alerts.alerts_evaluate(now=t0)["opened"] == 0


def test_resolution_has_hysteresis_and_is_delivered_once(delivery):
    figures = {"successes": 90, "failures": 10}
    assert alerts.connection_failure_evaluate(room_key=ROOM, figures=figures) == "opened"
    # 1.5 %: under the 2 % threshold but above the 1 % resolve line: stays open.
    assert alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 197, "failures": 3}) == "updated"
    assert Alert.objects.get().state == Alert.State.OPEN
    assert alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 995, "failures": 5}) == "resolved"
    alert = Alert.objects.get()
    assert alert.state == Alert.State.RESOLVED and alert.resolved_at and not alert.resolved_by_staff
    assert alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 995, "failures": 5}) is None
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["[Aula] Alert opened", "[Aula] Alert resolved"]
    # A new incident later is a new alert (the unique key only binds unresolved ones).
    assert alerts.connection_failure_evaluate(room_key=ROOM, figures=figures) == "opened"
    assert Alert.objects.count() == 2


def test_an_idle_room_resolves_its_alert(delivery):
    t0 = time.time()
    connections(ROOM, ok=40, fail=10, now=t0)
    assert alerts.alerts_evaluate(now=t0)["opened"] == 1
    assert alerts.alerts_evaluate(now=t0 + 600)["resolved"] == 1  # the window holds no connections any more


def test_one_unresolved_alert_per_room_and_kind_in_the_database(delivery):
    alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 10, "failures": 20})
    existing = Alert.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(kind=existing.kind, room_key=ROOM, dedupe_key=existing.dedupe_key,
                             opened_at=existing.opened_at, last_seen_at=existing.opened_at, threshold=0.02,
                             peak_value=1, last_value=1)


def test_staff_acknowledge_then_resolve(delivery):
    alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 10, "failures": 20})
    alert = Alert.objects.get()
    assert alerts.alert_acknowledge(alert_id=alert.pk).state == Alert.State.ACKNOWLEDGED
    assert alerts.alert_acknowledge(alert_id=alert.pk) is None  # only an open alert can be acknowledged
    # Still unresolved: re-evaluation updates the acknowledged alert, no new one, no new e-mail.
    assert alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 10, "failures": 20}) == "updated"
    assert alerts.alert_resolve(alert_id=alert.pk).resolved_by_staff is True
    assert alerts.alert_resolve(alert_id=alert.pk) is None
    assert len(mail.outbox) == 2


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []
    fail_first = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.fail_first > 0:
            _Receiver.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhook_is_signed_and_sent_once_per_open_and_resolve(delivery, receiver):
    delivery.AULA_ALERT_EMAILS = []
    delivery.AULA_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{receiver.server_port}/hooks/aula"
    delivery.AULA_ALERT_WEBHOOK_SECRET = SECRET
    alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 50, "failures": 50})
    alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 50, "failures": 50})
    alerts.connection_failure_evaluate(room_key=ROOM, figures={"successes": 100, "failures": 0})
    assert [json.loads(body)["event"] for _, body in _Receiver.received] == ["opened", "resolved"]
    for headers, body in _Receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Aula-Signature"], expected)
        payload = json.loads(body)["alert"]
        assert payload["room_kind"] == "session" and payload["room_id"] == 42
    assert mail.outbox == []


def test_webhook_server_errors_are_retried(delivery, receiver):
    delivery.AULA_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{receiver.server_port}/"
    delivery.AULA_ALERT_WEBHOOK_SECRET = SECRET
    delivery.AULA_ALERT_EMAILS = []
    with transaction.atomic():
        alert = Alert.objects.create(kind=Alert.Kind.CONNECTION_FAILURE_RATE, room_key=ROOM,
                                     dedupe_key=alerts.dedupe_key(Alert.Kind.CONNECTION_FAILURE_RATE, ROOM),
                                     opened_at="2026-01-01T00:00:00Z", last_seen_at="2026-01-01T00:00:00Z",
                                     threshold=0.02, peak_value=0.5, last_value=0.5)
    _Receiver.fail_first = 1
    with pytest.raises(alerts.WebhookRejected):
        alerts.alert_webhook_post(alert_id=alert.pk, event="opened")  # the task retries this with backoff
    assert health_tasks.alert_webhook_deliver.autoretry_for == (OSError, alerts.WebhookRejected)
    assert alerts.alert_webhook_post(alert_id=alert.pk, event="opened") == 204
    assert len(_Receiver.received) == 1
