"""Django admin for moderation: pattern lists (rules inline) and policies editable through policy_services;
the queue, sanctions and appeals read-only with admin actions that call moderation.services; the audit trail
read-only with no add, change or delete at all.

Scoping follows classrooms/admin.py (TenantAdmin: the staff member's schools); queue items are further limited
to the reviewer scope (selectors.reviewer_scope, tiers included) and audit entries to the schools' ledgers, so
the admin never shows more than the moderation pages do. Channel-scoped and platform rows are superusers' only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse

from classrooms.admin import TenantAdmin, staff_scope
from moderation import patterns, policy_services, selectors, services
from moderation.audit import ledger_for
from moderation.models import Appeal, AuditEntry, ModerationItem, ModerationPolicy, PatternList, PatternRule, Sanction


def _scope_from(cleaned: dict) -> policy_services.ScopeRef:
    course, institution, channel = cleaned.get("course"), cleaned.get("institution"), cleaned.get("channel")
    if course is not None:
        return policy_services.ScopeRef(institution_id=course.institution_id, course_id=course.pk)
    return policy_services.ScopeRef(institution_id=getattr(institution, "pk", None),
                                    channel_id=getattr(channel, "pk", None))


class ScopedForm(forms.ModelForm):
    """Checks that the chosen school, course or channel is one the person manages (the service checks again)."""

    request = None  # set by the admin's get_form

    def clean(self):
        data = super().clean()
        if self.instance.pk:  # the scope of an existing row does not change here
            return data
        course = data.get("course")
        if course is not None:
            data["institution"] = course.institution
        if data.get("institution") is not None and data.get("channel") is not None:
            raise ValidationError("A school's or a channel's: not both.")
        if self.request is not None and not policy_services.can_manage(self.request.user, _scope_from(data)):
            raise ValidationError("Choose a school, course or channel you manage.")
        return data


class _ScopedAdmin(TenantAdmin):
    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def get_readonly_fields(self, request, obj=None):
        fixed = ["institution", "course", "channel"] if obj is not None else []
        if not request.user.is_superuser:
            fixed = sorted(set(fixed) | {"channel"}, key=["institution", "course", "channel"].index)
        return [*super().get_readonly_fields(request, obj), *fixed]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk delete bypasses services and audit
        return actions


# --- pattern lists and policies ------------------------------------------------------------------------------

class PatternRuleForm(forms.ModelForm):
    class Meta:
        model = PatternRule
        fields = ["kind", "pattern", "note"]

    def clean(self):
        data = super().clean()
        if data.get("kind") and data.get("pattern") and not data.get("DELETE"):
            try:
                data["pattern"] = patterns.validate_rule(data["kind"], data["pattern"])
            except ValidationError as exc:
                self.add_error("pattern", exc)
        return data


class PatternRuleInline(admin.TabularInline):
    model = PatternRule
    form = PatternRuleForm
    extra = 1
    fields = ["kind", "pattern", "note"]


class PatternListForm(ScopedForm):
    class Meta:
        model = PatternList
        fields = ["name", "action", "is_active", "institution", "course", "channel"]


@admin.register(PatternList)
class PatternListAdmin(_ScopedAdmin):
    form = PatternListForm
    list_display = ["name", "action", "is_active", "scope_label", "updated_at"]
    list_filter = ["action", "is_active", "institution"]
    search_fields = ["name"]
    inlines = [PatternRuleInline]

    def save_model(self, request, obj, form, change):
        if change:
            policy_services.pattern_list_update(actor=request.user, list_id=obj.pk, name=obj.name, action=obj.action,
                                                is_active=obj.is_active)
            return
        created = policy_services.pattern_list_create(
            actor=request.user, scope=policy_services.scope_of(obj), name=obj.name, action=obj.action,
            is_active=obj.is_active)
        obj.pk, obj.created_by, obj.created_at, obj.updated_at = (created.pk, created.created_by, created.created_at,
                                                                   created.updated_at)
        obj._state.adding = False

    def delete_model(self, request, obj):
        policy_services.pattern_list_delete(actor=request.user, list_id=obj.pk)

    def save_formset(self, request, form, formset, change):
        if formset.model is not PatternRule:
            return super().save_formset(request, form, formset, change)
        changed = formset.save(commit=False)  # also sets deleted_objects; nothing is written here
        for rule in formset.deleted_objects:
            policy_services.pattern_rule_remove(actor=request.user, rule_id=rule.pk)
        for rule in changed:
            if rule.pk:  # an edited rule is the old one removed and the new one added (both audited)
                policy_services.pattern_rule_remove(actor=request.user, rule_id=rule.pk)
            policy_services.pattern_rule_add(actor=request.user, list_id=form.instance.pk, kind=rule.kind,
                                             pattern=rule.pattern, note=rule.note)


class ModerationPolicyForm(ScopedForm):
    class Meta:
        model = ModerationPolicy
        fields = ["thresholds", "fail_mode", "classifier_enabled", "institution", "course", "channel"]

    def clean(self):
        data = super().clean()
        scope = policy_services.scope_of(self.instance) if self.instance.pk else _scope_from(data)
        if isinstance(data.get("thresholds"), dict):
            try:
                data["thresholds"] = policy_services.thresholds_clean(
                    data["thresholds"], policy_services.inherited_policy(scope).thresholds)
            except ValidationError as exc:
                self.add_error("thresholds", exc)
        elif "thresholds" in data:
            self.add_error("thresholds", 'An object like {"harassment": {"flag": 0.5, "hold": 0.75}}.')
        return data


@admin.register(ModerationPolicy)
class ModerationPolicyAdmin(_ScopedAdmin):
    form = ModerationPolicyForm
    list_display = ["__str__", "fail_mode", "classifier_enabled", "updated_at", "updated_by"]
    list_filter = ["fail_mode", "classifier_enabled", "institution"]
    readonly_fields = ["updated_at", "updated_by"]

    def save_model(self, request, obj, form, change):
        saved = policy_services.policy_save(actor=request.user, scope=policy_services.scope_of(obj),
                                            thresholds=obj.thresholds, fail_mode=obj.fail_mode,
                                            classifier_enabled=obj.classifier_enabled)
        obj.pk, obj.updated_at, obj.updated_by = saved.pk, saved.updated_at, saved.updated_by
        obj._state.adding = False

    def delete_model(self, request, obj):
        policy_services.policy_reset(actor=request.user, scope=policy_services.scope_of(obj))


# --- the queue, sanctions, appeals (changes through services only) --------------------------------------------

def _with_reason(modeladmin, request, queryset, *, title: str, action: str, run, told: bool = False):
    """An admin action that needs a reason: first a page asking for it, then `run(obj, reason)` per row."""
    if request.POST.get("confirm") != "yes":
        return TemplateResponse(request, "moderation/manage/admin_reason.html", {
            **modeladmin.admin_site.each_context(request), "title": title, "objects": list(queryset),
            "action": action, "told": told, "opts": modeladmin.model._meta})
    reason = (request.POST.get("reason") or "").strip()
    if not reason:
        modeladmin.message_user(request, "Give a reason.", messages.ERROR)
        return None
    _run_each(modeladmin, request, queryset, lambda obj: run(obj, reason))
    return None


def _run_each(modeladmin, request, queryset, run) -> None:
    done, failed = 0, []
    for obj in queryset:  # one service call each: locked, audited, published; never a bulk .update()
        try:
            run(obj)
            done += 1
        except (PermissionDenied, ValidationError, services.Stale, LookupError) as exc:
            failed.append(f"{obj}: {'; '.join(getattr(exc, 'messages', None) or [str(exc)])}")
    if done:
        modeladmin.message_user(request, f"Done for {done}.", messages.SUCCESS)
    for line in failed:
        modeladmin.message_user(request, line, messages.ERROR)


class _ReadOnlyAdmin(TenantAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModerationItem)
class ModerationItemAdmin(_ReadOnlyAdmin):
    list_display = ["__str__", "status", "tier", "decision", "priority", "institution", "channel", "created_at"]
    list_filter = ["status", "tier", "decision", "source", "category", "institution"]
    search_fields = ["object_id"]
    actions = ["escalate_items", "release_items", "reverse_decisions"]

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        scope = selectors.reviewer_scope(request.user)
        return qs.none() if scope is None else qs.filter(scope)

    @admin.action(description="Escalate to the next tier")
    def escalate_items(self, request, queryset):
        _run_each(self, request, queryset,
                  lambda item: services.escalate(item_id=item.pk, actor=request.user, reason="escalated in the admin"))

    @admin.action(description="Release the claim")
    def release_items(self, request, queryset):
        _run_each(self, request, queryset, lambda item: services.item_release(item_id=item.pk, actor=request.user))

    @admin.action(description="Reverse the decision")
    def reverse_decisions(self, request, queryset):
        return _with_reason(self, request, queryset, title="Reverse the decision", action="reverse_decisions",
                            told=True, run=lambda item, reason: services.decision_reverse(
                                item_id=item.pk, actor=request.user, reason=reason))


@admin.register(Sanction)
class SanctionAdmin(_ReadOnlyAdmin):
    list_display = ["__str__", "kind", "scope", "created_at", "expires_at", "revoked_at"]
    list_filter = ["kind", "scope", "institution"]
    actions = ["lift_sanctions"]

    @admin.action(description="Lift the sanction")
    def lift_sanctions(self, request, queryset):
        return _with_reason(self, request, queryset, title="Lift the sanction", action="lift_sanctions",
                            run=lambda s, reason: services.sanction_revoke(sanction_id=s.pk, actor=request.user,
                                                                           reason=reason))


@admin.register(Appeal)
class AppealAdmin(_ReadOnlyAdmin):
    tenant_field = "item__institution"
    list_display = ["__str__", "item", "status", "created_at", "decided_at"]
    list_filter = ["status"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Append-only: no add, change or delete here (the database refuses UPDATE and DELETE as well)."""

    list_display = ["ledger", "index", "at", "stage", "action", "target_type", "target_id", "category"]
    list_filter = ["stage", "ledger"]
    search_fields = ["action", "target_id"]
    actions = None

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        ids = staff_scope(request)
        return qs if ids is None else qs.filter(ledger__in=[ledger_for(institution_id=i) for i in ids])

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


import moderation.dmca_admin  # noqa: E402,F401  (registers the DMCA admin)
