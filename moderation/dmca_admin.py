"""Admin for DMCA cases, notices and strikes: read-only for platform staff; the one state change offered
(recording a court action) calls moderation.dmca. Imported by moderation/admin.py."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from moderation import dmca, dmca_selectors
from moderation.models import DmcaCase, DmcaCounterNotice, DmcaNotice, DmcaStrike


class ReadOnlyAdmin(admin.ModelAdmin):
    """Visible to staff holding the view permission (and superusers); never added, edited or deleted here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return dmca_selectors.is_dmca_staff(request.user)

    def has_module_permission(self, request) -> bool:
        return dmca_selectors.is_dmca_staff(request.user)


class NoticeInline(admin.StackedInline):
    model = DmcaNotice
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return dmca_selectors.is_dmca_staff(request.user)


class CounterNoticeInline(NoticeInline):
    model = DmcaCounterNotice


@admin.register(DmcaCase)
class DmcaCaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "material_type", "material_id", "material_title", "uploader", "status", "created_at",
                    "restore_not_before"]
    list_filter = ["status", "material_type"]
    search_fields = ["material_id", "material_title", "uploader__email"]
    date_hierarchy = "created_at"
    inlines = [NoticeInline, CounterNoticeInline]
    actions = ["record_court_action"]

    def has_court_permission(self, request) -> bool:
        return dmca_selectors.can_manage_cases(request.user)

    @admin.action(description="Record that the claimant filed a court action (no restoration)",
                  permissions=["court"])
    def record_court_action(self, request, queryset):
        for case in queryset:
            try:
                dmca.court_action_report(case_id=case.pk, actor=request.user, note="Recorded in the admin",
                                         now=timezone.now())
            except dmca.Conflict as exc:
                self.message_user(request, f"Case #{case.pk}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"Case #{case.pk}: court action recorded; it will not be restored.")


@admin.register(DmcaNotice)
class DmcaNoticeAdmin(ReadOnlyAdmin):
    list_display = ["id", "case", "received_at", "complainant_name", "uploader_notified_at", "counter_forwarded_at"]
    search_fields = ["complainant_name", "complainant_email", "material_url"]


@admin.register(DmcaStrike)
class DmcaStrikeAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "case", "created_at", "expires_at", "removed_at", "is_active"]
    list_filter = ["removed_at"]
    search_fields = ["user__email", "user__username"]

    @admin.display(boolean=True, description="Active")
    def is_active(self, obj: DmcaStrike) -> bool:
        return obj.removed_at is None and obj.expires_at > timezone.now()
