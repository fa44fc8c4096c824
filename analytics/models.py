"""Models arrive with this app's capability issue."""


# --- Per-room observability (issue 7; docs/observability.md). No personal data: room keys and figures. ------
from django.db import models  # noqa: E402  (the analytics pipeline's models sit above; merged by the integrator)
from django.db.models import Q  # noqa: E402


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
