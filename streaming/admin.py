from django.contrib import admin

from streaming.models import Channel, ChannelRole, LiveNotification, NotificationPreference, Stream


class ChannelRoleInline(admin.TabularInline):
    model = ChannelRole
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "owner"]
    search_fields = ["title", "slug"]
    autocomplete_fields = ["owner"]
    inlines = [ChannelRoleInline]


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    list_display = ["title", "channel", "status", "scheduled_start"]
    list_filter = ["status"]
    search_fields = ["title", "channel__title"]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "live_in_page", "live_email", "updated_at"]
    search_fields = ["user__username", "user__email"]
    autocomplete_fields = ["user"]


@admin.register(LiveNotification)
class LiveNotificationAdmin(admin.ModelAdmin):
    """Delivery records, read-only: they change only through streaming.notifications."""

    list_display = ["stream", "user", "kind", "status", "tries", "sent_at"]
    list_filter = ["kind", "status"]
    search_fields = ["stream__title", "user__username"]
    list_select_related = ["stream", "user"]
    readonly_fields = ["stream", "user", "kind", "status", "tries", "last_error", "created_at", "sent_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
