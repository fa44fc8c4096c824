from django.contrib import admin

from streaming.models import Channel, ChannelRole, Stream


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
