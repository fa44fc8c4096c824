"""Admin for COPPA records: staff record consent and school authorization, revoke them, and carry out
deletion requests. Every change goes through compliance.coppa.services; nothing here is deletable."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from classrooms.admin import TenantAdmin
from compliance.coppa import services
from compliance.models import (
    ChildDataDeletion,
    ParentalConsent,
    PersonalInfoFeature,
    RetentionRun,
    SchoolAuthorization,
)


class _ScopeForm(forms.ModelForm):
    scope = forms.MultipleChoiceField(choices=PersonalInfoFeature.choices, widget=forms.CheckboxSelectMultiple,
                                      initial=PersonalInfoFeature.values)


class ParentalConsentForm(_ScopeForm):
    class Meta:
        model = ParentalConsent
        fields = ["institution", "student", "guardian", "guardian_name", "method", "evidence_reference", "scope",
                  "third_party_disclosure", "given_at"]


class SchoolAuthorizationForm(_ScopeForm):
    class Meta:
        model = SchoolAuthorization
        fields = ["institution", "scope", "authorized_on", "expires_on", "signatory", "evidence_reference"]


class _RecordAdmin(TenantAdmin):
    """Records are written once through a service and then only revoked: no edits, no deletes."""

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _each(self, request, queryset, fn, done: str) -> None:
        count = 0
        for obj in queryset:
            try:
                fn(obj)
                count += 1
            except (PermissionDenied, ValidationError) as exc:
                self.message_user(request, f"{obj}: {exc}", messages.ERROR)
        self.message_user(request, f"{done}: {count}.", messages.SUCCESS)


@admin.register(ParentalConsent)
class ParentalConsentAdmin(_RecordAdmin):
    form = ParentalConsentForm
    list_display = ["student", "guardian_name", "method", "scope", "third_party_disclosure", "given_at",
                    "revoked_at", "institution"]
    list_filter = ["institution", "method", "third_party_disclosure"]
    search_fields = ["student__username", "student__display_name", "guardian_name", "evidence_reference"]
    autocomplete_fields = ["student", "guardian"]
    actions = ["revoke_selected"]

    def save_model(self, request, obj, form, change):
        obj.pk = services.consent_record(
            student=obj.student, institution=obj.institution, guardian=obj.guardian,
            guardian_name=obj.guardian_name, method=obj.method, evidence_reference=obj.evidence_reference,
            scope=form.cleaned_data["scope"], third_party_disclosure=obj.third_party_disclosure,
            given_at=obj.given_at, actor=request.user).pk

    @admin.action(description="Revoke the selected consents")
    def revoke_selected(self, request, queryset):
        self._each(request, queryset, lambda c: services.consent_revoke(consent=c, actor=request.user), "Revoked")


@admin.register(SchoolAuthorization)
class SchoolAuthorizationAdmin(_RecordAdmin):
    form = SchoolAuthorizationForm
    list_display = ["institution", "scope", "authorized_on", "expires_on", "signatory", "revoked_at"]
    list_filter = ["institution"]
    actions = ["revoke_selected"]

    def save_model(self, request, obj, form, change):
        obj.pk = services.school_authorization_record(
            institution=obj.institution, scope=form.cleaned_data["scope"], authorized_on=obj.authorized_on,
            expires_on=obj.expires_on, signatory=obj.signatory, evidence_reference=obj.evidence_reference,
            actor=request.user).pk

    @admin.action(description="Revoke the selected authorizations")
    def revoke_selected(self, request, queryset):
        self._each(request, queryset,
                   lambda a: services.school_authorization_revoke(authorization=a, actor=request.user), "Revoked")


class DeletionRequestForm(forms.ModelForm):
    class Meta:
        model = ChildDataDeletion
        fields = ["institution", "student"]

    def clean(self):
        data = super().clean()
        if not data.get("student") or not data.get("institution"):
            raise ValidationError("Choose the school and the student.")
        return data


@admin.register(ChildDataDeletion)
class ChildDataDeletionAdmin(_RecordAdmin):
    """Deletion requests (from guardians, or entered by staff) and, once carried out, their tokenised record."""

    form = DeletionRequestForm
    list_display = ["token", "origin", "institution", "student", "requested_at", "completed_at"]
    list_filter = ["origin", "institution"]
    readonly_fields = ["subject_token", "origin", "requested_by", "requested_at", "completed_by", "completed_at",
                       "removed"]
    autocomplete_fields = ["student"]
    actions = ["carry_out"]

    @admin.display(description="Subject token")
    def token(self, obj):
        return obj.subject_token[:16] + "…"

    def save_model(self, request, obj, form, change):
        obj.pk = services.deletion_request(student=obj.student, institution=obj.institution, actor=request.user,
                                           origin=ChildDataDeletion.Origin.SCHOOL).pk

    @admin.action(description="Delete these children's personal information now (cannot be undone)")
    def carry_out(self, request, queryset):
        self._each(request, queryset.filter(completed_at__isnull=True),
                   lambda d: services.child_data_delete(deletion=d, actor=request.user), "Deleted")


@admin.register(RetentionRun)
class RetentionRunAdmin(admin.ModelAdmin):
    list_display = ["started_at", "finished_at", "removed"]
    readonly_fields = ["started_at", "finished_at", "policy", "removed"]

    def has_module_permission(self, request):
        return request.user.is_superuser  # the purge is platform-wide, not one school's

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser
