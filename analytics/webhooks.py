"""Outbound learning events: an outbox written with the domain change, delivered at least once to webhooks.

`outbox_write` runs inside the transaction of the change it reports (a signal receiver in that transaction),
so an event exists iff its change committed. It creates one delivery per matching active endpoint and queues
each on commit. `delivery_attempt` POSTs a Caliper 1.2 envelope, signed with HMAC-SHA256 over
"<timestamp>.<body>", with the event's id as the idempotency key on every attempt; a failure is retried with
exponential backoff and full jitter until AULA_WEBHOOK_MAX_ATTEMPTS, then the delivery is dead. A sweeper
re-queues due retries whose countdown task was lost with a worker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import time
import urllib.error
import urllib.request
import uuid

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from analytics.models import OutboxEvent, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger("aula.analytics.webhooks")

CALIPER_CONTEXT = "http://purl.imsglobal.org/ctx/caliper/v1p2"
DATA_VERSION = CALIPER_CONTEXT
SENSOR = "urn:aula:sensor"
SIGNATURE_HEADER = "X-Aula-Signature"
TIMESTAMP_HEADER = "X-Aula-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"

# Event types an endpoint can subscribe to (WebhookEndpoint.event_types).
EVENT_TYPES = ("session.joined", "session.left", "poll.answered", "exam.submitted")


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def person(user_id: int) -> dict:
    # A pseudonymous id: the district maps it through its roster (OneRoster sourcedId), no names or e-mail.
    return {"id": f"urn:aula:user:{user_id}", "type": "Person"}


def caliper_event(*, type_: str, action: str, actor: dict, object_: dict, event_time: dt.datetime,
                  event_id: uuid.UUID, extra: dict | None = None) -> dict:
    event = {"@context": CALIPER_CONTEXT, "id": f"urn:uuid:{event_id}", "type": type_, "actor": actor,
             "action": action, "object": object_, "eventTime": _iso(event_time)}
    if extra:
        event.update(extra)
    return event


def envelope(events: list[dict], *, sent_at: dt.datetime | None = None) -> dict:
    return {"sensor": SENSOR, "sendTime": _iso(sent_at or timezone.now()), "dataVersion": DATA_VERSION,
            "data": events}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# Per process: the active endpoints that may want a school's events, read at most every few seconds (a
# learning event is written in its change's transaction: 2,000 poll answers must not cost 2,000 lookups).
# A change made in this process clears it at once (receivers below); one made elsewhere (the admin in
# another process) applies within ENDPOINT_CACHE_SECONDS.
ENDPOINT_CACHE_SECONDS = 5.0
_endpoints: dict[int, tuple[float, list[WebhookEndpoint]]] = {}


def endpoints_clear(**_) -> None:
    _endpoints.clear()


def endpoints_for(institution_id: int, event_type: str) -> list[WebhookEndpoint]:
    now = time.monotonic()
    hit = _endpoints.get(institution_id)
    if hit is None or now - hit[0] > ENDPOINT_CACHE_SECONDS:
        candidates = list(WebhookEndpoint.objects.filter(
            Q(institution_id=institution_id) | Q(institution__isnull=True), is_active=True))
        hit = _endpoints[institution_id] = (now, candidates)
    return [e for e in hit[1] if e.wants(event_type)]


def outbox_write(*, institution_id: int, event_type: str, build) -> OutboxEvent | None:
    """Record one learning event for delivery, in the caller's transaction. `build(event_id)` returns the
    Caliper event; it is only called when some active endpoint wants this type (no row otherwise)."""
    endpoints = endpoints_for(institution_id, event_type)
    if not endpoints:
        return None
    event_id = uuid.uuid4()
    with transaction.atomic():
        event = OutboxEvent.objects.create(id=event_id, institution_id=institution_id, event_type=event_type,
                                           payload=build(event_id))
        now = timezone.now()
        deliveries = [WebhookDelivery.objects.create(event=event, endpoint=e, next_attempt_at=now)
                      for e in endpoints]
    for delivery in deliveries:
        _queue(delivery.pk)
    return event


def _queue(delivery_id: int, countdown: float = 0) -> None:
    from analytics import tasks

    transaction.on_commit(lambda: tasks.webhook_deliver.apply_async((delivery_id,), countdown=countdown))


def backoff_seconds(attempts: int) -> float:
    """Delay before attempt `attempts + 1`: exponential (base · 2^(attempts-1)), capped, with full jitter in
    its upper half so a receiver that comes back is not hit by every retry at once."""
    ceiling = min(settings.AULA_WEBHOOK_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0),
                  settings.AULA_WEBHOOK_BACKOFF_MAX_SECONDS)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _post(endpoint: WebhookEndpoint, event: OutboxEvent) -> tuple[int | None, str]:
    body = json.dumps(envelope([event.payload]), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    if not endpoint.url.startswith(("https://", "http://")):
        return None, "URL scheme not allowed"
    # http(s) only, checked above
    request = urllib.request.Request(endpoint.url, data=body, method="POST", headers={  # noqa: S310
        "Content-Type": "application/json",
        "User-Agent": "Aula-Webhooks/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(endpoint.secret, timestamp, body),
        IDEMPOTENCY_HEADER: str(event.id),
        "X-Aula-Event-Type": event.event_type,
    })
    try:
        with urllib.request.urlopen(request, timeout=settings.AULA_WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return None, type(exc).__name__ + (f": {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")


def delivery_attempt(*, delivery_id: int) -> str | None:
    """One attempt at a due pending delivery; returns its new status (None: not due, gone or busy).

    The row stays locked during the request, so a sweeper or a duplicate task skips it (no parallel sends);
    a crash before the commit leaves it pending and due, and it is sent again: at least once."""
    with transaction.atomic():
        delivery = (WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("event", "endpoint")
                    .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING,
                            next_attempt_at__lte=timezone.now() + dt.timedelta(seconds=1)).first())
        if delivery is None:
            return None
        if not delivery.endpoint.is_active:
            return None  # kept pending; delivered if the endpoint is turned back on (the sweeper re-queues)
        code, error = _post(delivery.endpoint, delivery.event)
        now = timezone.now()
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.last_status_code = code
        if code is not None and 200 <= code < 300:
            delivery.status = WebhookDelivery.Status.DELIVERED
            delivery.delivered_at = now
            delivery.last_error = ""
        else:
            delivery.last_error = error[:300]
            if delivery.attempts >= settings.AULA_WEBHOOK_MAX_ATTEMPTS:
                delivery.status = WebhookDelivery.Status.DEAD
                logger.warning("webhook delivery dead after %s attempts delivery=%s endpoint=%s",
                               delivery.attempts, delivery.pk, delivery.endpoint_id)
            else:
                delay = backoff_seconds(delivery.attempts)
                delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
                _queue(delivery.pk, countdown=delay)
        delivery.save(update_fields=["attempts", "last_attempt_at", "last_status_code", "status", "delivered_at",
                                     "last_error", "next_attempt_at"])
        return delivery.status


def deliveries_due(limit: int = 500) -> list[int]:
    """Pending deliveries past their time by a margin (their queued task was lost), for the sweeper."""
    cutoff = timezone.now() - dt.timedelta(seconds=15)
    return list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=cutoff,
                                               endpoint__is_active=True)
                .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def delivery_retry_now(*, delivery: WebhookDelivery) -> None:
    """Admin action: a dead or waiting delivery is tried again now, with a fresh attempt budget."""
    with transaction.atomic():
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = timezone.now()
        delivery.save(update_fields=["status", "attempts", "next_attempt_at"])
        _queue(delivery.pk)
