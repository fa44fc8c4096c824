"""Outbound learning events reach a real HTTP receiver, signed, at least once, with one idempotency key."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading

import pytest

from analytics import webhooks
from analytics.models import WebhookDelivery, WebhookEndpoint
from classrooms import services as classroom_services
from classrooms.models import Role
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, secret: str, fail_first: int):
        self.secret, self.fail_first, self.calls = secret, fail_first, []
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ts = self.headers[webhooks.TIMESTAMP_HEADER]
        expected = "sha256=" + hmac.new(self.server.secret.encode(), ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, self.headers[webhooks.SIGNATURE_HEADER])
        self.server.calls.append({"key": self.headers[webhooks.IDEMPOTENCY_HEADER], "valid": valid,
                                  "body": json.loads(body)})
        status = 503 if len(self.server.calls) <= self.server.fail_first or not valid else 204
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_learning_event_is_delivered_signed_after_retries_with_one_idempotency_key(settings):
    settings.AULA_WEBHOOK_MAX_ATTEMPTS = 5
    receiver = Receiver("s3cret", fail_first=2)
    inst = factories.institution()
    WebhookEndpoint.objects.create(institution=inst, name="LRS", url=receiver.url, secret="s3cret",
                                   event_types=["session.joined", "session.left"])
    course = factories.course(inst)
    student = factories.user("kid")
    factories.enroll(course, student, Role.STUDENT)
    session = factories.live_session(course)
    now = dt.datetime.now(dt.UTC)
    classroom_services.attendance_interval_record(
        session_id=session.pk, user_id=student.pk, conn_id="c1", joined_at=now.timestamp() - 60,
        left_at=now.timestamp(), active=50, idle=10, away=0, resumed=False, reason="closed")
    deliveries = list(WebhookDelivery.objects.select_related("event"))
    assert sorted(d.event.event_type for d in deliveries) == ["session.joined", "session.left"]
    joined = next(d for d in deliveries if d.event.event_type == "session.joined")
    statuses = []
    for _ in range(3):  # the retry's due time is the backoff: run each attempt as the task would when due
        WebhookDelivery.objects.filter(pk=joined.pk).update(next_attempt_at=dt.datetime.now(dt.UTC))
        statuses.append(webhooks.delivery_attempt(delivery_id=joined.pk))
    assert statuses == ["pending", "pending", "delivered"]
    calls = [c for c in receiver.calls if c["body"]["data"][0]["id"] == f"urn:uuid:{joined.event_id}"]
    assert len(calls) == 3 and all(c["valid"] for c in calls)
    assert {c["key"] for c in calls} == {str(joined.event_id)}
    envelope = calls[-1]["body"]
    assert envelope["dataVersion"] == webhooks.CALIPER_CONTEXT and envelope["sensor"]
    event = envelope["data"][0]
    assert event["actor"] == {"id": f"urn:aula:user:{student.pk}", "type": "Person"} and event["action"] == "Started"
    joined.refresh_from_db()
    assert joined.attempts == 3 and joined.delivered_at is not None
    receiver.shutdown()


def test_a_delivery_is_dead_after_the_attempt_budget(settings):
    settings.AULA_WEBHOOK_MAX_ATTEMPTS = 2
    receiver = Receiver("s3cret", fail_first=100)
    inst = factories.institution()
    endpoint = WebhookEndpoint.objects.create(institution=inst, name="LRS", url=receiver.url, secret="s3cret")
    event = webhooks.outbox_write(institution_id=inst.pk, event_type="exam.submitted",
                                  build=lambda event_id: {"id": f"urn:uuid:{event_id}"})
    delivery = WebhookDelivery.objects.get(event=event, endpoint=endpoint)
    assert webhooks.delivery_attempt(delivery_id=delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert delivery.next_attempt_at > dt.datetime.now(dt.UTC)  # backed off
    assert webhooks.delivery_attempt(delivery_id=delivery.pk) is None  # not due yet
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=dt.datetime.now(dt.UTC))
    assert webhooks.delivery_attempt(delivery_id=delivery.pk) == "dead"
    receiver.shutdown()


def test_backoff_grows_and_is_capped(settings):
    settings.AULA_WEBHOOK_BACKOFF_SECONDS, settings.AULA_WEBHOOK_BACKOFF_MAX_SECONDS = 10, 100
    assert 5 <= webhooks.backoff_seconds(1) <= 10
    assert 20 <= webhooks.backoff_seconds(3) <= 40
    assert 50 <= webhooks.backoff_seconds(9) <= 100


def test_no_endpoint_no_outbox_row():
    assert webhooks.outbox_write(institution_id=1, event_type="session.joined", build=lambda i: {}) is None


def test_a_class_poll_answer_is_counted_and_sent_once_with_its_class_dimensions():
    import uuid

    from django.db.models import Sum

    from analytics import buffer, services
    from analytics.models import OutboxEvent, Rollup

    inst = factories.institution()
    WebhookEndpoint.objects.create(institution=inst, name="LRS", url="http://127.0.0.1:9/hook", secret="s",
                                   event_types=["poll.answered"])
    course = factories.course(inst)
    teacher, student = factories.user(), factories.user("kid")
    factories.enroll(course, teacher, Role.TEACHER)
    factories.enroll(course, student, Role.STUDENT)
    session = factories.live_session(course)
    poll = classroom_services.poll_create(session=session, actor=teacher, question="?", kind="single",
                                          options=["a", "b"])
    attempt = uuid.uuid4()
    for _ in range(2):  # the client's retry of the same answer is accepted and counted once
        classroom_services.poll_answer(poll_id=poll.pk, user=student, attempt_id=attempt, positions=[1])
    events = list(OutboxEvent.objects.filter(event_type="poll.answered"))
    assert len(events) == 1 and events[0].institution_id == inst.pk
    caliper = events[0].payload
    assert caliper["actor"]["id"] == f"urn:aula:user:{student.pk}" and caliper["type"] == "AssessmentItemEvent"
    assert caliper["object"]["isPartOf"]["id"] == f"urn:aula:live-session:{session.pk}"
    buffer.flush_now()
    services.flush(max_seconds=5)
    rows = Rollup.objects.filter(scope="session", scope_id=session.pk, kind="poll.answer", window_seconds=10)
    assert rows.aggregate(n=Sum("count"))["n"] == 1
    assert {(r.institution_id, r.course_id, r.segment) for r in rows} == {(inst.pk, course.pk, Role.STUDENT)}
