"""Django admin for school staff: everything scoped to the institutions they administer.

Scoping lives in `TenantAdmin.get_queryset` (changelist, change view, search, autocomplete and raw-id
popups all start from it), in foreign-key choices, and in list filters that only offer values present in
the scoped rows. State changes go through services. Reads of student records are recorded for FERPA
(compliance.audit.AuditedAdminMixin: changelist, search, change view with inlines; autocomplete too).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db import models
from django.db.models import QuerySet

from classrooms import selectors, services
from classrooms.models import (
    Course,
    District,
    DistrictRole,
    Enrollment,
    Guardianship,
    Institution,
    LiveSession,
    Membership,
    User,
)
from compliance.audit import AuditedAdminMixin


def staff_scope(request) -> frozenset[int] | None:
    cached = getattr(request, "_aula_staff_scope", "unset")
    if cached == "unset":
        cached = selectors.staff_institution_ids(request.user)
        request._aula_staff_scope = cached
    return cached


def limit_to(qs: QuerySet, ids: frozenset[int] | None, field: str) -> QuerySet:
    return qs if ids is None else qs.filter(**{f"{field}__in": ids})


class ScopedRelatedFilter(admin.RelatedOnlyFieldListFilter):
    """A list filter offering only related objects that appear in the (already scoped) changelist."""


class TenantAdmin(AuditedAdminMixin, admin.ModelAdmin):
    tenant_field = "institution"
    # Foreign keys whose choices must be scoped too, with the path from that model to its institution.
    scoped_foreign_keys: dict[str, str] = {
        "institution": "id",
        "course": "institution",
        "district": "institutions__id",
    }

    def get_queryset(self, request):
        return limit_to(super().get_queryset(request), staff_scope(request), self.tenant_field)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        ids = staff_scope(request)
        related = db_field.related_model
        if db_field.name in self.scoped_foreign_keys:
            kwargs["queryset"] = limit_to(related._default_manager.all(), ids,
                                          self.scoped_foreign_keys[db_field.name]).distinct()
        elif related is User:
            kwargs["queryset"] = users_for_scope(ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        return [(f, ScopedRelatedFilter) if self._is_fk(f) else f for f in super().get_list_filter(request)]

    def _is_fk(self, name) -> bool:
        if not isinstance(name, str) or "__" in name:
            return False
        try:
            return self.model._meta.get_field(name).is_relation
        except Exception:
            return False


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """Platform configuration (identity providers, SIS connections): platform operators only."""

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


def users_for_scope(ids: frozenset[int] | None) -> QuerySet[User]:
    if ids is None:
        return User.objects.all()
    from django.db.models import Q

    return User.objects.filter(
        pk__in=User.objects.filter(
            Q(memberships__institution_id__in=ids) | Q(enrollments__institution_id__in=ids)
            | Q(guardians__institution_id__in=ids) | Q(wards__institution_id__in=ids)
        ).values("pk")
    )


@admin.register(District)
class DistrictAdmin(TenantAdmin):
    tenant_field = "institutions__id"
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]

    def get_queryset(self, request):
        return super().get_queryset(request).distinct()


@admin.register(Institution)
class InstitutionAdmin(TenantAdmin):
    tenant_field = "id"
    list_display = ["name", "district", "slug", "timezone"]
    list_filter = ["district"]
    search_fields = ["name", "slug"]

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def save_model(self, request, obj, form, change):
        services.institution_save(institution=obj, actor=request.user)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["institution", "role", "grade_level", "is_active"]

    def get_queryset(self, request):
        return limit_to(super().get_queryset(request), staff_scope(request), "institution")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "institution":
            kwargs["queryset"] = limit_to(Institution.objects.all(), staff_scope(request), "id")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(User)
class UserAdmin(AuditedAdminMixin, DjangoUserAdmin):
    list_display = ["username", "email", "display_name", "is_active", "is_staff"]
    list_filter = ["is_active", "is_staff"]
    search_fields = ["username", "email", "display_name", "first_name", "last_name"]
    ordering = ["username"]
    inlines = [MembershipInline]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Profile", {"fields": ("first_name", "last_name", "display_name", "email", "date_of_birth")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),
    )

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        ids = staff_scope(request)
        return qs if ids is None else qs.filter(pk__in=users_for_scope(ids).values("pk"))

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._may_manage(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._may_manage(request, obj)

    def _may_manage(self, request, obj) -> bool:
        """School staff see everyone connected to their school, but may change (and reset the password of)
        only people with no more admin reach than their own: never a superuser, never staff of another
        school or a district admin — otherwise a password reset would be an account takeover."""
        ids = staff_scope(request)
        if obj is None or ids is None:
            return True
        if obj.is_superuser:
            return False
        theirs = selectors.staff_institution_ids(obj)
        return theirs is not None and theirs <= ids

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        for membership in formset.save(commit=False):
            membership.user = form.instance
            services.membership_save(membership=membership, actor=request.user)
        for membership in formset.deleted_objects:
            membership.is_active = False  # deactivated, not deleted: the history stays audited
            services.membership_save(membership=membership, actor=request.user)

    def get_readonly_fields(self, request, obj=None):
        if request.user.is_superuser:
            return super().get_readonly_fields(request, obj)
        # School staff manage people, not platform privileges.
        return ["is_staff", "is_superuser", "groups", "user_permissions", "last_login", "date_joined"]


@admin.register(DistrictRole)
class DistrictRoleAdmin(TenantAdmin):
    tenant_field = "district__institutions__id"
    list_display = ["user", "district", "role"]
    autocomplete_fields = ["user", "district"]

    def get_queryset(self, request):
        return super().get_queryset(request).distinct()

    def has_module_permission(self, request):
        return request.user.is_superuser


@admin.register(Membership)
class MembershipAdmin(TenantAdmin):
    list_display = ["user", "institution", "role", "grade_level", "is_active"]
    list_filter = ["role", "is_active", "institution"]
    search_fields = ["user__username", "user__email", "user__display_name"]
    autocomplete_fields = ["user"]

    def save_model(self, request, obj, form, change):
        services.membership_save(membership=obj, actor=request.user)


@admin.register(Guardianship)
class GuardianshipAdmin(TenantAdmin):
    list_display = ["guardian", "student", "relationship", "institution", "verified_at"]
    list_filter = ["institution"]
    search_fields = ["guardian__email", "student__email", "student__display_name"]
    autocomplete_fields = ["guardian", "student"]

    def save_model(self, request, obj, form, change):
        services.guardianship_link(guardian=obj.guardian, student=obj.student, institution=obj.institution,
                                   relationship=obj.relationship, actor=request.user)


class EnrollmentInline(admin.TabularInline):
    model = Enrollment
    extra = 0
    fields = ["user", "role", "is_active"]
    autocomplete_fields = ["user"]

    def get_queryset(self, request):
        return limit_to(super().get_queryset(request), staff_scope(request), "institution")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Same choices as EnrollmentAdmin: enrolling an outsider would make them one of "our" people,
        # visible and editable by this school's staff.
        if db_field.name == "user":
            kwargs["queryset"] = users_for_scope(staff_scope(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Course)
class CourseAdmin(TenantAdmin):
    list_display = ["code", "title", "term", "institution", "is_active"]
    list_filter = ["institution", "is_active", "term"]
    search_fields = ["code", "title"]
    inlines = [EnrollmentInline]

    def save_model(self, request, obj, form, change):
        services.course_save(course=obj, actor=request.user)

    def save_formset(self, request, form, formset, change):
        if formset.model is not Enrollment:
            return super().save_formset(request, form, formset, change)
        instances = formset.save(commit=False)
        for enrollment in instances:
            enrollment.course = form.instance
            services.enrollment_save(enrollment=enrollment, actor=request.user)
        for enrollment in formset.deleted_objects:
            services.enrollment_drop(enrollment=enrollment, actor=request.user)
        formset.save_m2m()


@admin.register(Enrollment)
class EnrollmentAdmin(TenantAdmin):
    list_display = ["user", "course", "role", "is_active", "institution"]
    list_filter = ["role", "is_active", "institution"]
    search_fields = ["user__username", "user__email", "user__display_name", "course__code", "course__title"]
    autocomplete_fields = ["user", "course"]
    exclude = ["institution"]
    actions = ["drop_selected"]

    def save_model(self, request, obj, form, change):
        services.enrollment_save(enrollment=obj, actor=request.user)

    def delete_model(self, request, obj):
        services.enrollment_drop(enrollment=obj, actor=request.user)

    @admin.action(description="Drop the selected enrollments")
    def drop_selected(self, request, queryset):
        for enrollment in queryset:  # one service call each: audited, never a bulk .update()
            services.enrollment_drop(enrollment=enrollment, actor=request.user)
        self.message_user(request, f"Dropped {queryset.count()} enrollments.", messages.SUCCESS)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk delete bypasses services and audit
        return actions


@admin.register(LiveSession)
class LiveSessionAdmin(TenantAdmin):
    list_display = ["title", "course", "status", "scheduled_start", "institution"]
    list_filter = ["status", "institution"]
    search_fields = ["title", "course__code", "course__title"]
    autocomplete_fields = ["course"]
    exclude = ["institution", "created_by"]
    readonly_fields = ["started_at", "ended_at"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # video links are https

    def save_model(self, request, obj, form, change):
        services.live_session_save(session=obj, actor=request.user)

# Registered here so that admin autodiscovery finds them: LTI (registrations, keys, links) and identity providers.
from classrooms import lti_admin, sso_admin  # noqa: E402,F401
