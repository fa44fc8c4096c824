"""Admin of the analytics pipeline: webhook endpoints (school staff, their schools only), delivery status and
retries, and the flush ledger page that shows flush lag, last flush and overflow counts."""

from __future__ import annotations

from django.contrib import admin, messages

from analytics import selectors, webhooks
from analytics.models import FlushLedger, WebhookDelivery, WebhookEndpoint
from classrooms.selectors import staff_institution_ids


def _scope(request, queryset, field: str):
    ids = staff_institution_ids(request.user)
    return queryset if ids is None else queryset.filter(**{f"{field}__in": ids})


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("name", "institution", "url", "is_active", "event_types")
    list_filter = ("is_active",)
    fields = ("name", "institution", "url", "secret", "event_types", "is_active")

    def get_queryset(self, request):
        return _scope(request, super().get_queryset(request), "institution_id")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "institution":
            field.queryset = _scope(request, field.queryset, "id")
            field.required = staff_institution_ids(request.user) is not None  # all schools: platform admins
        return field


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at", "delivered_at")
    list_filter = ("status",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["retry_now"]

    def get_queryset(self, request):
        return _scope(request, super().get_queryset(request).select_related("event", "endpoint"),
                      "endpoint__institution_id")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Retry now (fresh attempt budget)", permissions=["view"])
    def retry_now(self, request, queryset):
        for delivery in queryset:
            webhooks.delivery_retry_now(delivery=delivery)
        self.message_user(request, f"{queryset.count()} deliveries queued.", messages.SUCCESS)


@admin.register(FlushLedger)
class FlushLedgerAdmin(admin.ModelAdmin):
    """The pipeline's health: flush lag, last flush, stream length and overflow counts above the ledger."""

    list_display = ("applied_at", "first_key", "last_key", "entries", "events", "oldest_event_at")
    change_list_template = "analytics/admin_ledger.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def changelist_view(self, request, extra_context=None):
        extra = {"pipeline": selectors.pipeline_status(), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

from analytics import admin_health  # noqa: E402, F401  (room health and alerts)
