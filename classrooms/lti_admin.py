"""Admin for LTI: platform registrations (district admins), Aula's signing keys (rotate), linked LMS courses
(reconcile the roster now), placements, launches and the external identities that map accounts."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse

from classrooms import lti_services
from classrooms.admin import TenantAdmin
from classrooms.models import (
    District,
    DistrictRole,
    ExternalIdentity,
    LtiContext,
    LtiLaunch,
    LtiPlatform,
    LtiRegistrationInvite,
    LtiResourceLink,
    LtiToolKey,
)


def _district_admin(request, district_id: int | None) -> bool:
    if request.user.is_superuser:
        return True
    return district_id is not None and DistrictRole.objects.filter(
        user=request.user, district_id=district_id, role=DistrictRole.Kind.ADMIN).exists()


class ReadOnlyTenantAdmin(TenantAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(LtiPlatform)
class LtiPlatformAdmin(TenantAdmin):
    """Registering an LMS: what the LMS shows its admin when they add Aula as an LTI 1.3 tool (its issuer, the
    client id it assigned, deployment ids and endpoints). Aula's side is at /lti/config.json."""

    tenant_field = "district__institutions__id"
    list_display = ["name", "district", "issuer", "client_id", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "issuer", "client_id"]

    def get_queryset(self, request):
        return super().get_queryset(request).distinct()

    def has_add_permission(self, request):
        return request.user.is_superuser or DistrictRole.objects.filter(
            user=request.user, role=DistrictRole.Kind.ADMIN).exists()

    def has_change_permission(self, request, obj=None):
        return obj is None or _district_admin(request, obj.district_id)

    def has_delete_permission(self, request, obj=None):
        return obj is not None and _district_admin(request, obj.district_id)

    def save_model(self, request, obj, form, change):
        if not _district_admin(request, obj.district_id):
            raise ValidationError("Only the district's administrators register its LMS.")
        lti_services.platform_save(platform=obj)


@admin.register(LtiRegistrationInvite)
class LtiRegistrationInviteAdmin(TenantAdmin):
    """Dynamic registration: a district admin makes a single-use link (valid 7 days) and pastes it into the LMS's
    "register a tool by URL"; the LMS and Aula then exchange everything else (docs/lti.md)."""

    tenant_field = "district__institutions__id"
    list_display = ["district", "created_by", "created_at", "expires_at", "used_at", "platform"]
    fields = ["district"]

    def get_queryset(self, request):
        return super().get_queryset(request).distinct()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "district" and not request.user.is_superuser:
            kwargs["queryset"] = District.objects.filter(roles__user=request.user,
                                                         roles__role=DistrictRole.Kind.ADMIN).distinct()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_add_permission(self, request):
        return request.user.is_superuser or DistrictRole.objects.filter(
            user=request.user, role=DistrictRole.Kind.ADMIN).exists()

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if not _district_admin(request, obj.district_id):
            raise ValidationError("Only the district's administrators register its LMS.")
        invite, token = lti_services.registration_invite_create(district_id=obj.district_id, actor=request.user)
        obj.pk, obj.token_hash, obj.expires_at, obj.created_at = invite.pk, invite.token_hash, invite.expires_at, \
            invite.created_at
        obj._state.adding = False
        url = settings.AULA_PUBLIC_URL + reverse("lti-register", args=[token])
        self.message_user(request, f"Registration link for {obj.district} (shown once, valid 7 days, single use): "
                                   f"{url}", messages.WARNING)


@admin.register(LtiToolKey)
class LtiToolKeyAdmin(admin.ModelAdmin):
    """Aula's signing keys (superusers). The private key is never shown."""

    list_display = ["kid", "created_at", "retire_at"]
    fields = ["kid", "created_at", "retire_at", "public_jwk"]
    readonly_fields = fields
    actions = ["rotate", "replace_now"]

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Rotate: publish a new key now, sign with it after the publish lead")
    def rotate(self, request, queryset):
        key = lti_services.key_rotate()
        self.message_user(request, f"New key {key.kid} published; Aula signs with it after "
                                   f"{settings.AULA_LTI_KEY_PUBLISH_SECONDS} s.", messages.SUCCESS)

    @admin.action(description="Replace now (a leaked key): unpublish the old keys, sign with a new one at once")
    def replace_now(self, request, queryset):
        key = lti_services.key_rotate(immediate=True)
        self.message_user(request, f"Old keys unpublished; Aula signs with {key.kid} now. LMSs with a cached key "
                                   f"set refuse Aula's signatures until they fetch it again.", messages.WARNING)


@admin.register(LtiContext)
class LtiContextAdmin(ReadOnlyTenantAdmin):
    list_display = ["title", "context_id", "platform", "course", "roster_synced_at"]
    search_fields = ["title", "context_id"]
    readonly_fields = ["platform", "context_id", "title", "course", "memberships_url", "lineitems_url",
                       "roster_synced_at", "roster_report"]
    actions = ["roster_now"]

    @admin.action(description="Reconcile the roster with the LMS now")
    def roster_now(self, request, queryset):
        from classrooms.tasks import lti_roster_sync

        for context_id in queryset.filter(course__isnull=False).values_list("pk", flat=True):
            lti_roster_sync.apply_async(args=[context_id], queue="bulk")
        self.message_user(request, "Roster reconciliation queued.", messages.SUCCESS)


@admin.register(LtiResourceLink)
class LtiResourceLinkAdmin(ReadOnlyTenantAdmin):
    list_display = ["title", "target", "target_id", "context", "resource_link_id", "lineitem_url", "created_at"]
    list_filter = ["target"]


@admin.register(LtiLaunch)
class LtiLaunchAdmin(ReadOnlyTenantAdmin):
    tenant_field = "context__institution"
    list_display = ["at", "user", "platform", "context", "resource_link", "message_type", "role"]
    list_filter = ["message_type", "role"]


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(ReadOnlyTenantAdmin):
    """Which LMS / identity-provider account is which Aula account. Deleting one unlinks it (the next launch or
    sign-in matches again by SIS sourcedId or email)."""

    tenant_field = "district__institutions__id"
    list_display = ["user", "kind", "issuer", "subject", "district", "last_seen_at"]
    list_filter = ["kind"]
    search_fields = ["subject", "issuer", "user__email", "user__username"]

    def get_queryset(self, request):
        return super().get_queryset(request).distinct()

    def has_delete_permission(self, request, obj=None):
        return obj is not None and _district_admin(request, obj.district_id)
