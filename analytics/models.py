"""Analytics rollups (counts per time window and dimension), the flush ledger, and outbound event delivery.

Rollups are aggregates, never per-person rows. The flush ledger makes draining the Redis event stream
idempotent. The outbox and its deliveries carry learning events (IMS Caliper) to configured webhooks.
"""

import uuid

from django.db import models
from django.db.models import Q


class Rollup(models.Model):
    """Events of one kind in one time bucket, for one combination of dimensions.

    Every configured window (AULA_ANALYTICS_WINDOWS) holds a complete copy: a query sums one window only.
    Empty text and 0 mean "not given" (NULLs would defeat the unique constraint the flush upserts on)."""

    window_seconds = models.PositiveIntegerField()
    bucket_start = models.DateTimeField()
    scope = models.CharField(max_length=16)  # "stream" | "session"
    scope_id = models.BigIntegerField()
    kind = models.CharField(max_length=32)
    institution_id = models.BigIntegerField(default=0)  # sessions: the school (tenant scope)
    course_id = models.BigIntegerField(default=0)
    country = models.CharField(max_length=2, blank=True, default="")
    region = models.CharField(max_length=16, blank=True, default="")
    segment = models.CharField(max_length=16, blank=True, default="")
    grade = models.CharField(max_length=16, blank=True, default="")
    detail = models.CharField(max_length=64, blank=True, default="")  # e.g. "emoji=fire"
    count = models.BigIntegerField(default=0)  # sum of n
    value_sum = models.FloatField(default=0)
    value_n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["window_seconds", "bucket_start", "scope", "scope_id", "kind", "institution_id", "course_id",
                        "country", "region", "segment", "grade", "detail"],
                name="analytics_rollup_dims_unique"),
        ]
        indexes = [models.Index(fields=["scope", "scope_id", "window_seconds", "bucket_start"],
                                name="analytics_rollup_slice")]

    def __str__(self) -> str:
        return f"{self.scope}{self.scope_id} {self.kind} @{self.bucket_start:%H:%M:%S}/{self.window_seconds}s"


class FlushLedger(models.Model):
    """One row per applied batch of stream entries, written in the transaction that applied it.

    Stream ids "ms-seq" are stored as ms * 10^10 + seq. An entry is already counted iff some row covers its
    key: a batch read with XREADGROUP ">" is a contiguous run of the stream (one row, first..last); entries
    re-claimed after a crash are recorded one row each (they need not be contiguous)."""

    first_key = models.DecimalField(max_digits=30, decimal_places=0)
    last_key = models.DecimalField(max_digits=30, decimal_places=0)
    entries = models.PositiveIntegerField()
    events = models.BigIntegerField()  # sum of n over the batch
    oldest_event_at = models.DateTimeField(null=True)
    applied_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["first_key", "last_key"], name="analytics_ledger_range"),
                   models.Index(fields=["applied_at"], name="analytics_ledger_applied")]

    def __str__(self) -> str:
        return f"{self.first_key}..{self.last_key} ({self.entries})"


class WebhookEndpoint(models.Model):
    """An integration's receiver, configured by school or district staff in the admin."""

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="+", help_text="Only this school's events (empty: every "
                                    "school; platform administrators only).")
    name = models.CharField(max_length=120)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128, help_text="Shared secret for the X-Aula-Signature HMAC-SHA256.")
    event_types = models.JSONField(default=list, blank=True,
                                   help_text="Event types to deliver (empty: all). See docs/analytics.md.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["is_active", "institution"], name="analytics_endpoint_active")]

    def __str__(self) -> str:
        return self.name

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class OutboxEvent(models.Model):
    """One learning event to deliver, written in the transaction of the domain change it reports.

    Its id is the idempotency key every delivery attempt carries."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    institution_id = models.BigIntegerField(db_index=True)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()  # one Caliper event (the envelope is built at each send)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.event_type} {self.id}"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        DEAD = "dead", "Dead (gave up)"

    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="analytics_delivery_unique")]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="analytics_delivery_due")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"
# --- Per-room observability (issue 7; docs/observability.md). No personal data: room keys and figures. ------


class RoomHealth(models.Model):
    """The connection health of one live session or stream over its whole life, kept after the room's Redis
    figures expire. Upserted by a beat job (analytics.health_tasks.room_health_persist) while it is active."""

    class Kind(models.TextChoices):
        SESSION = "session", "Live session"
        STREAM = "stream", "Stream"

    room_key = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    object_id = models.PositiveBigIntegerField(help_text="The live session's or the stream's id.")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    successes = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    refusals = models.PositiveIntegerField(default=0)
    success_rate = models.FloatField(null=True, blank=True)
    reconnects = models.PositiveIntegerField(default=0)
    participants = models.PositiveIntegerField(default=0)
    reconnects_per_participant = models.FloatField(null=True, blank=True)
    latency_samples = models.PositiveIntegerField(default=0)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    latency_p99_ms = models.FloatField(null=True, blank=True)
    peak = models.PositiveIntegerField(default=0)
    player_errors = models.PositiveIntegerField(default=0)
    player_errors_by_code = models.JSONField(default=dict, blank=True)
    origin_refusals = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen_at"]
        indexes = [models.Index(fields=["kind", "object_id"])]
        verbose_name = "room health"
        verbose_name_plural = "room health"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.object_id}"


class Alert(models.Model):
    """An operational alert on one room (e.g. its connection failure rate). At most one unresolved alert per
    room and kind (the partial unique constraint on `dedupe_key`); re-evaluation updates it."""

    class Kind(models.TextChoices):
        CONNECTION_FAILURE_RATE = "connection_failure_rate", "Connection failure rate"
        GRADE_SYNC_FAILING = "grade_sync_failing", "LMS grade deliveries failing"

    class State(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    kind = models.CharField(max_length=40, choices=Kind.choices)
    room_key = models.CharField(max_length=100)
    dedupe_key = models.CharField(max_length=160)
    state = models.CharField(max_length=12, choices=State.choices, default=State.OPEN)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by_staff = models.BooleanField(default=False)
    threshold = models.FloatField()
    peak_value = models.FloatField()
    last_value = models.FloatField()
    attempts = models.PositiveIntegerField(default=0, help_text="Decided connections in the last window.")
    failures = models.PositiveIntegerField(default=0, help_text="Failed connections in the last window.")

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(fields=["dedupe_key"], condition=~Q(state="resolved"),
                                    name="analytics_alert_one_unresolved_per_key"),
        ]
        indexes = [models.Index(fields=["state", "kind"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.room_key} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state != self.State.RESOLVED
