"""Admin for room health summaries and alerts: read-only figures; alert state changes go through services.

Scoping: a school's staff see their institutions' live sessions only (room keys `i<institution>.…`);
streams and platform-wide figures are for staff without an institution scope (platform operators).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Q, QuerySet

from analytics import alerts
from analytics.models import Alert, RoomHealth


def room_scope(request, qs: QuerySet) -> QuerySet:
    from classrooms.admin import staff_scope

    ids = staff_scope(request)
    if ids is None:
        return qs
    if not ids:
        return qs.none()
    condition = Q()
    for institution_id in ids:
        condition |= Q(room_key__startswith=f"i{int(institution_id)}.")
    return qs.filter(condition)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RoomHealth)
class RoomHealthAdmin(ReadOnlyAdmin):
    list_display = ("room_key", "kind", "object_id", "last_seen_at", "attempts", "success_rate_pct",
                    "reconnects_per_participant", "latency_p95_ms", "peak", "player_errors")
    list_filter = ("kind",)
    search_fields = ("=room_key", "=object_id")
    date_hierarchy = "last_seen_at"
    readonly_fields = [f.name for f in RoomHealth._meta.fields]

    def get_queryset(self, request):
        return room_scope(request, super().get_queryset(request))

    @admin.display(description="success rate", ordering="success_rate")
    def success_rate_pct(self, obj: RoomHealth) -> str:
        return "—" if obj.success_rate is None else f"{obj.success_rate:.2%}"


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("kind", "room_key", "state", "opened_at", "last_seen_at", "resolved_at", "peak_pct",
                    "last_pct", "failures", "attempts")
    list_filter = ("state", "kind")
    search_fields = ("=room_key",)
    readonly_fields = [f.name for f in Alert._meta.fields]
    actions = ("acknowledge", "resolve")

    def get_queryset(self, request):
        return room_scope(request, super().get_queryset(request))

    def has_resolve_permission(self, request) -> bool:
        # The form stays read-only; the actions change state through services, for staff who may change alerts.
        return request.user.has_perm("analytics.change_alert")

    @admin.display(description="peak", ordering="peak_value")
    def peak_pct(self, obj: Alert) -> str:
        return self._figure(obj, obj.peak_value)

    @admin.display(description="last", ordering="last_value")
    def last_pct(self, obj: Alert) -> str:
        return self._figure(obj, obj.last_value)

    @staticmethod
    def _figure(obj: Alert, value: float) -> str:
        if obj.kind == Alert.Kind.GRADE_SYNC_FAILING:
            return f"{int(value)} failing"
        return f"{value:.2%}"

    @admin.action(description="Acknowledge selected alerts", permissions=["resolve"])
    def acknowledge(self, request, queryset):
        done = 0
        for alert_id in queryset.values_list("pk", flat=True):
            alert = alerts.alert_acknowledge(alert_id=alert_id)
            if alert is not None:
                self.log_change(request, alert, "Acknowledged")
                done += 1
        self.message_user(request, f"{done} alert(s) acknowledged.", messages.SUCCESS)

    @admin.action(description="Resolve selected alerts", permissions=["resolve"])
    def resolve(self, request, queryset):
        done = 0
        for alert_id in queryset.values_list("pk", flat=True):
            alert = alerts.alert_resolve(alert_id=alert_id)
            if alert is not None:
                self.log_change(request, alert, "Resolved")
                done += 1
        self.message_user(request, f"{done} alert(s) resolved.", messages.SUCCESS)
