"""Admin for channels and streams. State changes (go live, end, lockdown) call streaming.services."""

from django.contrib import admin, messages

from streaming import services
from streaming.models import Channel, ChannelRole, Stream, StreamChatBan


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


def _each(modeladmin, request, queryset, fn, done: str):
    for stream in queryset.select_related("channel"):
        try:
            fn(stream)
        except (services.Conflict, Exception) as exc:  # one refused stream does not stop the others
            modeladmin.message_user(request, f"{stream}: {exc}", messages.WARNING)
        else:
            modeladmin.message_user(request, f"{stream}: {done}")


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    list_display = ["title", "channel", "status", "scheduled_start", "peak_viewers"]
    list_filter = ["status"]
    search_fields = ["title", "channel__title"]
    readonly_fields = ["status", "started_at", "ended_at", "peak_viewers", "peak_viewers_at", "chat_lockdown"]
    actions = ["go_live", "end", "lockdown_on", "lockdown_off"]

    # The admin is the site's operators: they act as the system (None), after Django's own permission check.
    @admin.action(description="Go live", permissions=["change"])
    def go_live(self, request, queryset):
        _each(self, request, queryset, lambda s: services.stream_go_live(stream=s, actor=None), "live")

    @admin.action(description="End the stream", permissions=["change"])
    def end(self, request, queryset):
        _each(self, request, queryset, lambda s: services.stream_end(stream=s, actor=None), "ended")

    @admin.action(description="Chat lockdown", permissions=["change"])
    def lockdown_on(self, request, queryset):
        _each(self, request, queryset, lambda s: services.chat_lockdown(stream=s, actor=None, on=True), "locked down")

    @admin.action(description="Lift chat lockdown", permissions=["change"])
    def lockdown_off(self, request, queryset):
        _each(self, request, queryset, lambda s: services.chat_lockdown(stream=s, actor=None, on=False), "unlocked")

    def save_model(self, request, obj, form, change):
        chat_fields = {f: form.cleaned_data[f"chat_{f}"] for f in services._SETTINGS_FIELDS if f"chat_{f}" in
                       form.changed_data}
        if change and chat_fields:
            # Chat settings go through the service (broadcast to viewers); other fields save as usual.
            for f in chat_fields:
                setattr(obj, f"chat_{f}", form.initial.get(f"chat_{f}"))
            super().save_model(request, obj, form, change)
            services.chat_settings_set(stream=obj, actor=None, **chat_fields)
        else:
            super().save_model(request, obj, form, change)


@admin.register(StreamChatBan)
class StreamChatBanAdmin(admin.ModelAdmin):
    list_display = ["user", "channel", "until", "created_at"]
    autocomplete_fields = ["user", "channel"]
    readonly_fields = ["created_by", "created_at"]
