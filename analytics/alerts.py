"""Operational alerts on rooms: the one write path for opening, updating, acknowledging and resolving them,
and their delivery (staff UI, e-mail, a signed webhook) once per open and once per resolve.

Connection failure rate (docs/observability.md): over the last AULA_ALERT_WINDOW_SECONDS (whole minutes,
including the current one), failures / (successes + failures). Refusals (signed out, not enrolled, removed,
ended, per-user cap) are not in it. An alert opens above AULA_ALERT_CONNECTION_FAILURE_RATE once the window
holds at least AULA_ALERT_MIN_ATTEMPTS decided connections (1 failure of 3 is noise, not an incident); it
resolves when the rate falls under AULA_ALERT_RESOLVE_RATIO × the threshold, or the window has no
connections left (hysteresis: a rate that hovers at the threshold does not open and resolve every run).

LMS grade deliveries (exams.GradeSync, per school, room key `i<id>.grades`): an alert opens when results
keep failing — retried at least AULA_ALERT_GRADE_SYNC_TRIES times and still failing, or given up in the last 24
hours — and resolves when none is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from analytics.models import Alert
from config.realtime import stats

logger = logging.getLogger("aula.analytics.alerts")

OPENED, RESOLVED = "opened", "resolved"
SIGNATURE_HEADER = "X-Aula-Signature"


class WebhookRejected(Exception):
    """The receiver answered with a status worth retrying (5xx, 429)."""


def dedupe_key(kind: str, room_key: str) -> str:
    return f"{kind}:{room_key}"


def window_minutes() -> int:
    return max(1, settings.AULA_ALERT_WINDOW_SECONDS // 60)


def alerts_evaluate(*, now: float | None = None) -> dict[str, int]:
    """Evaluate every room active in the window and every room with an unresolved alert."""
    now = time.time() if now is None else now
    rooms = set(stats.active_rooms(settings.AULA_ALERT_WINDOW_SECONDS, now=now))
    rooms |= set(Alert.objects.exclude(state=Alert.State.RESOLVED)
                 .filter(kind=Alert.Kind.CONNECTION_FAILURE_RATE).values_list("room_key", flat=True))
    outcome = {"opened": 0, "updated": 0, "resolved": 0}
    for room_key in sorted(rooms):
        figures = stats.room_health(room_key, minutes=window_minutes(), now=now)
        result = connection_failure_evaluate(room_key=room_key, figures=figures, now=now)
        if result:
            outcome[result] += 1
    for result in grade_sync_evaluate(now=now):
        outcome[result] += 1
    return outcome


def grade_sync_evaluate(*, now: float | None = None) -> list[str]:
    """Open, update or resolve each school's "LMS grade deliveries failing" alert."""
    from django.db.models import Count, Q

    from exams.models import GradeSync

    at = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    tries = settings.AULA_ALERT_GRADE_SYNC_TRIES
    failing = Q(status=GradeSync.Status.FAILED, tries__gte=tries) | Q(
        status=GradeSync.Status.DEAD, updated_at__gte=at - dt.timedelta(hours=24))
    counts = dict(GradeSync.objects.filter(failing).values_list("institution_id").annotate(n=Count("id")))
    kind = Alert.Kind.GRADE_SYNC_FAILING
    open_keys = dict(Alert.objects.filter(kind=kind).exclude(state=Alert.State.RESOLVED)
                     .values_list("room_key", "id"))
    results = []
    for room_key in sorted(set(open_keys) | {f"i{i}.grades" for i in counts}):
        n = counts.get(int(room_key[1:].split(".")[0]), 0)
        key = dedupe_key(kind, room_key)
        with transaction.atomic():
            alert = Alert.objects.select_for_update().filter(dedupe_key=key).exclude(
                state=Alert.State.RESOLVED).first()
            if alert is None:
                if not n:
                    continue
                try:
                    with transaction.atomic():
                        alert = Alert.objects.create(kind=kind, room_key=room_key, dedupe_key=key, opened_at=at,
                                                     last_seen_at=at, threshold=tries, peak_value=n, last_value=n,
                                                     attempts=n, failures=n)
                except IntegrityError:
                    continue
                logger.warning("alert opened kind=%s room=%s failing=%d", kind, room_key, n)
                _deliver_on_commit(alert, OPENED)
                results.append("opened")
            elif not n:
                _resolve(alert, at, by_staff=False, rate=0.0)
                results.append("resolved")
            else:
                alert.last_value, alert.peak_value = n, max(alert.peak_value, n)
                alert.attempts = alert.failures = n
                alert.last_seen_at = at
                alert.save(update_fields=["last_value", "peak_value", "attempts", "failures", "last_seen_at"])
                results.append("updated")
    return results


def connection_failure_evaluate(*, room_key: str, figures: dict, now: float | None = None) -> str | None:
    """Open, update or resolve the room's connection-failure alert from its window figures."""
    at = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    threshold = settings.AULA_ALERT_CONNECTION_FAILURE_RATE
    decided = figures["successes"] + figures["failures"]
    rate = figures["failures"] / decided if decided else None
    breaching = rate is not None and decided >= settings.AULA_ALERT_MIN_ATTEMPTS and rate > threshold
    kind = Alert.Kind.CONNECTION_FAILURE_RATE
    key = dedupe_key(kind, room_key)
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(dedupe_key=key).exclude(state=Alert.State.RESOLVED).first()
        if alert is None:
            if not breaching:
                return None
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        kind=kind, room_key=room_key, dedupe_key=key, opened_at=at, last_seen_at=at,
                        threshold=threshold, peak_value=rate, last_value=rate, attempts=decided,
                        failures=figures["failures"])
            except IntegrityError:
                return None  # another evaluator opened it a moment ago; the next run updates it
            logger.warning("alert opened kind=%s room=%s rate=%.4f", kind, room_key, rate)
            _deliver_on_commit(alert, OPENED)
            return "opened"
        if rate is None or rate < threshold * settings.AULA_ALERT_RESOLVE_RATIO:
            _resolve(alert, at, by_staff=False, rate=rate or 0.0)
            return "resolved"
        alert.last_value = rate
        alert.peak_value = max(alert.peak_value, rate)
        alert.attempts, alert.failures = decided, figures["failures"]
        if breaching:
            alert.last_seen_at = at
        alert.save(update_fields=["last_value", "peak_value", "attempts", "failures", "last_seen_at"])
        return "updated"


def _resolve(alert: Alert, at: dt.datetime, *, by_staff: bool, rate: float | None = None) -> None:
    alert.state = Alert.State.RESOLVED
    alert.resolved_at = at
    alert.resolved_by_staff = by_staff
    if rate is not None:
        alert.last_value = rate
    alert.save(update_fields=["state", "resolved_at", "resolved_by_staff", "last_value"])
    logger.info("alert resolved kind=%s room=%s by_staff=%s", alert.kind, alert.room_key, by_staff)
    _deliver_on_commit(alert, RESOLVED)


def alert_acknowledge(*, alert_id: int) -> Alert | None:
    """Staff take an open alert in hand: it stays unresolved (and deduplicating) but stops asking."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(pk=alert_id, state=Alert.State.OPEN).first()
        if alert is None:
            return None
        alert.state = Alert.State.ACKNOWLEDGED
        alert.acknowledged_at = timezone.now()
        alert.save(update_fields=["state", "acknowledged_at"])
    return alert


def alert_resolve(*, alert_id: int) -> Alert | None:
    """Staff close an alert by hand (delivered as resolved once, like an automatic resolve)."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(pk=alert_id).exclude(state=Alert.State.RESOLVED).first()
        if alert is None:
            return None
        _resolve(alert, timezone.now(), by_staff=True)
    return alert


def open_alert_count() -> int:
    return Alert.objects.exclude(state=Alert.State.RESOLVED).count()


# --- delivery ---------------------------------------------------------------------------------------------------

def _deliver_on_commit(alert: Alert, event: str) -> None:
    from analytics import health_tasks

    alert_id = alert.pk
    if settings.AULA_ALERT_EMAILS:
        transaction.on_commit(lambda: health_tasks.alert_email_send.delay(alert_id, event))
    if settings.AULA_ALERT_WEBHOOK_URL:
        transaction.on_commit(lambda: health_tasks.alert_webhook_deliver.delay(alert_id, event))


def alert_payload(alert: Alert, event: str) -> dict:
    """What e-mail and webhook say: room kind and id, figures, times. Never names or personal data."""
    label = stats.room_label(alert.room_key)
    return {
        "event": event,
        "alert": {
            "id": alert.pk, "kind": alert.kind, "state": alert.state, "room_key": alert.room_key,
            "room_kind": label[0] if label else None, "room_id": label[1] if label else None,
            "threshold": alert.threshold, "peak_value": round(alert.peak_value, 4),
            "last_value": round(alert.last_value, 4), "window_seconds": settings.AULA_ALERT_WINDOW_SECONDS,
            "attempts": alert.attempts, "failures": alert.failures,
            "opened_at": alert.opened_at.isoformat(), "last_seen_at": alert.last_seen_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
    }


def alert_email_deliver(*, alert_id: int, event: str) -> bool:
    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None or not settings.AULA_ALERT_EMAILS:
        return False
    data = alert_payload(alert, event)["alert"]
    where = f"{data['room_kind']} {data['room_id']}" if data["room_kind"] else alert.room_key
    subject = f"[Aula] Alert {event}: {alert.get_kind_display()} on {where}"
    body = "\n".join([
        f"{alert.get_kind_display()} on {where} ({alert.room_key}) {event}.",
        f"Failure rate now {data['last_value']:.2%}, peak {data['peak_value']:.2%}, threshold {data['threshold']:.2%} "
        f"over {data['window_seconds']} s ({data['failures']} of {data['attempts']} connections failed).",
        f"Opened {data['opened_at']}" + (f", resolved {data['resolved_at']}." if data["resolved_at"] else "."),
        "See the Alerts page of the Aula admin.",
    ])
    send_mail(subject, body, None, settings.AULA_ALERT_EMAILS)
    return True


def webhook_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def alert_webhook_post(*, alert_id: int, event: str) -> int | None:
    """POST the alert to AULA_ALERT_WEBHOOK_URL, signed; raises WebhookRejected / OSError to be retried."""
    url = settings.AULA_ALERT_WEBHOOK_URL
    alert = Alert.objects.filter(pk=alert_id).first()
    if alert is None or not url:
        return None
    if not url.startswith(("https://", "http://")):
        raise ValueError("AULA_ALERT_WEBHOOK_URL must be an http(s) URL")
    body = json.dumps(alert_payload(alert, event), separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Aula-Alerts/1",
               SIGNATURE_HEADER: webhook_signature(body, settings.AULA_ALERT_WEBHOOK_SECRET),
               "X-Aula-Event": f"alert.{event}", "X-Aula-Delivery": f"{alert.pk}.{event}"}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 (checked above)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (scheme checked above)
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise WebhookRejected(f"webhook answered {exc.code}") from None
        logger.warning("alert webhook refused delivery status=%s alert=%s", exc.code, alert.pk)
        return exc.code
