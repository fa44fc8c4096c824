"""Admin for compliance: district API clients, and FERPA's audit trail for school staff.

"Who accessed this student's records between two dates": Student record accesses, filtered by student and
date range, exported as CSV. The record of disclosures: per student, with manual entry for emergencies.
Both are read-only, scoped to the staff's own institutions through classrooms.selectors.scoped_to.
"""

from __future__ import annotations

import datetime as dt

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django import forms
from django.contrib import admin
from django.db.models import BigIntegerField, OuterRef, Q, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpResponse
from django.utils import timezone

from classrooms.admin import SuperuserOnlyAdmin, TenantAdmin, staff_scope, users_for_scope
from classrooms.models import User
from classrooms.selectors import scoped_to
from compliance import audit, disclosures
from compliance.models import (
    AccessEntry,
    Disclosure,
    DistrictAPIClient,
    RosterCsvImport,
    SisConnection,
    SisRun,
    SisRunIssue,
)
from config import exports

audit.install_admin_autocomplete(admin.site)


@admin.register(DistrictAPIClient)
class DistrictAPIClientAdmin(TenantAdmin):
    tenant_field = "district__institutions__id"
    list_display = ["name", "district", "reference", "scopes", "is_active"]
    readonly_fields = ["reference"]

    def get_queryset(self, request):
        return super().get_queryset(request).distinct()

    def has_module_permission(self, request):
        return request.user.is_superuser


# --- rostering from the district's SIS (docs/rostering.md): platform operators only ------------------------


class SisConnectionForm(forms.ModelForm):
    """The client secret is write-only: never rendered back; left empty on a change, the stored one stays."""

    base_url = forms.URLField(max_length=500, assume_scheme="https",
                              help_text="The rostering service's base, e.g. https://sis.example/ims/oneroster/"
                              "rostering/v1p2")
    token_url = forms.URLField(max_length=500, assume_scheme="https", help_text="The OAuth2 token endpoint.")
    client_secret = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted; never displayed. Leave empty to keep the current secret.")

    class Meta:
        model = SisConnection
        fields = ["district", "base_url", "token_url", "client_id", "client_secret", "scope", "sync_interval",
                  "page_size", "enabled"]

    def clean_client_secret(self):
        value = self.cleaned_data.get("client_secret")
        if value:
            return value
        if self.instance.pk is None:
            raise forms.ValidationError("A new connection needs the client secret.")
        return self.instance.client_secret  # unchanged (a Secret: stored encrypted again, never shown)


SisOperatorAdmin = SuperuserOnlyAdmin  # SIS connections, runs and imports: platform operators only


@admin.register(SisConnection)
class SisConnectionAdmin(SisOperatorAdmin):
    form = SisConnectionForm
    list_display = ["district", "base_url", "enabled", "sync_interval", "last_run"]
    list_select_related = ["district"]
    actions = ["sync_now", "full_reconciliation"]

    @admin.display(description="last run")
    def last_run(self, obj):
        run = obj.runs.order_by("-id").first()
        return str(run) if run else "never"

    def get_readonly_fields(self, request, obj=None):
        # A connection belongs to its district: its SIS records, runs and digests are that district's.
        return ["district"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        from compliance import sis_sync

        sis_sync.sis_connection_save(connection=obj, actor=request.user)

    def _request(self, request, queryset, mode):
        from compliance import sis_sync

        for connection in queryset:
            run = sis_sync.sis_sync_request(connection=connection, mode=mode, requested_by=request.user.email)
            self.message_user(request, f"{connection}: {run} queued.")

    @admin.action(description="Sync now (changes since the last successful sync)")
    def sync_now(self, request, queryset):
        self._request(request, queryset, SisRun.Mode.DELTA)

    @admin.action(description="Full reconciliation (deletes what the SIS no longer lists)")
    def full_reconciliation(self, request, queryset):
        self._request(request, queryset, SisRun.Mode.FULL)


class SisRunIssueInline(admin.TabularInline):
    model = SisRunIssue
    fields = ["kind", "resource", "sourced_id", "message"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False


@admin.register(SisRun)
class SisRunAdmin(SisOperatorAdmin):
    """A run's report: counts per resource and the records it could not apply (read-only)."""

    list_display = ["id", "connection", "mode", "status", "created_at", "finished_at", "totals", "issue_count"]
    list_filter = ["status", "mode"]
    list_select_related = ["connection__district"]
    inlines = [SisRunIssueInline]
    fields = ["connection", "mode", "status", "requested_by", "created_at", "started_at", "finished_at",
              "heartbeat_at", "server_started_at", "watermark", "checkpoint", "report", "issue_count", "attempts",
              "error"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="created / updated / deleted / unchanged / errors")
    def totals(self, obj):
        counts = obj.counts or {}
        return " / ".join(str(sum(c.get(k, 0) for c in counts.values()))
                          for k in ("created", "updated", "deleted", "unchanged", "errors"))

    @admin.display(description="counts per resource")
    def report(self, obj):
        from django.utils.html import format_html, format_html_join

        rows = format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                ((name, c.get("created", 0), c.get("updated", 0), c.get("deleted", 0),
                                  c.get("unchanged", 0), c.get("errors", 0)) for name, c in (obj.counts or {}).items()))
        return format_html("<table><tr><th></th><th>created</th><th>updated</th><th>deleted</th><th>unchanged</th>"
                           "<th>errors</th></tr>{}</table>", rows)


class RosterCsvImportForm(forms.ModelForm):
    archive = forms.FileField(help_text="A OneRoster 1.2 CSV zip (orgs.csv, users.csv, enrollments.csv ...). "
                              "All or nothing: any failing row leaves the roster unchanged.")

    class Meta:
        model = RosterCsvImport
        fields = ["district"]


@admin.register(RosterCsvImport)
class RosterCsvImportAdmin(SisOperatorAdmin):
    """Upload a CSV bundle for a district; the import runs at once and its report is kept (read-only)."""

    list_display = ["id", "district", "filename", "applied", "uploaded_by", "created_at"]
    list_select_related = ["district", "uploaded_by"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = RosterCsvImportForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["district", "archive"]
        return ["district", "filename", "sha256", "applied", "uploaded_by", "created_at", "summary", "errors"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="created / updated per file")
    def summary(self, obj):
        report = obj.report or {}
        return ", ".join(f"{name}: +{n} ~{report.get('updated', {}).get(name, 0)}"
                         for name, n in report.get("created", {}).items()) or "-"

    @admin.display(description="failing rows")
    def errors(self, obj):
        from django.utils.html import format_html_join

        return format_html_join("", "<div>{} line {} ({}): {}</div>",
                                ((e.get("file"), e.get("line"), e.get("sourcedId"), e.get("errors"))
                                 for e in (obj.report or {}).get("errors", [])[:500])) or "-"

    def save_model(self, request, obj, form, change):
        from compliance.rostering import roster_csv_upload

        upload = form.cleaned_data["archive"]
        saved = roster_csv_upload(district=obj.district, archive=upload.read(), filename=upload.name,
                                  actor=request.user)
        obj.pk = saved.pk
        obj.applied = saved.applied
        if saved.applied:
            self.message_user(request, "Imported.")
        else:
            self.message_user(request, "Nothing imported: see the failing rows.", level="warning")


# --- the raw audit log: platform operators only, never editable --------------------------------------------

admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class AuditLogAdmin(LogEntryAdmin):
    """auditlog's own view of every entry (all schools): for platform superusers, read-only."""

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        return {}


# --- filters with free input: a student, a date range --------------------------------------------------------

class InputFilter(admin.ListFilter):
    """A sidebar form with text inputs (the admin's own filters only offer lists of links)."""

    template = "admin/compliance/input_filter.html"
    inputs: list[tuple[str, str, str]] = []  # (parameter, label, input type)

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name, _, _ in self.inputs:
            if name in params:
                value = params.pop(name)
                value = value[-1] if isinstance(value, list) else value
                if value:
                    self.used_parameters[name] = value.strip()

    def has_output(self):
        return True

    def expected_parameters(self):
        return [name for name, _, _ in self.inputs]

    def choices(self, changelist):
        mine = set(self.expected_parameters()) | {"p"}
        preserved = [(k, v) for k, values in changelist.params.items() if k not in mine
                     for v in (values if isinstance(values, list) else [values])]
        yield {"preserved": preserved,
               "fields": [{"name": n, "label": label, "type": t, "value": self.used_parameters.get(n, "")}
                          for n, label, t in self.inputs]}


def student_ids_for(value: str) -> list[int]:
    if value.isdigit():
        return [int(value)]
    return list(User.objects.filter(Q(email__iexact=value) | Q(username__iexact=value)).values_list("pk", flat=True))


class StudentFilter(InputFilter):
    title = "student"
    inputs = [("student", "Student (id, e-mail or username)", "text")]
    lookup = "additional_data__student__in"

    def queryset(self, request, queryset):
        value = self.used_parameters.get("student")
        return queryset if not value else queryset.filter(**{self.lookup: student_ids_for(value)})


class DateRangeFilter(InputFilter):
    title = "date range"
    inputs = [("from", "From (YYYY-MM-DD)", "date"), ("to", "To, inclusive", "date")]
    field = "timestamp"

    def queryset(self, request, queryset):
        tz = timezone.get_current_timezone()
        try:
            start = dt.date.fromisoformat(self.used_parameters["from"]) if "from" in self.used_parameters else None
            end = dt.date.fromisoformat(self.used_parameters["to"]) if "to" in self.used_parameters else None
        except ValueError:
            from django.contrib.admin.options import IncorrectLookupParameters

            raise IncorrectLookupParameters("dates are YYYY-MM-DD") from None
        if start:
            queryset = queryset.filter(**{f"{self.field}__gte": dt.datetime.combine(start, dt.time(), tz)})
        if end:
            queryset = queryset.filter(**{f"{self.field}__lt": dt.datetime.combine(end + dt.timedelta(days=1),
                                                                                   dt.time(), tz)})
        return queryset


class DisclosureStudentFilter(StudentFilter):
    lookup = "student_id__in"


class DisclosureDateFilter(DateRangeFilter):
    field = "disclosed_at"


def csv_response(filename: str, header: list[str], rows) -> HttpResponse:
    response, writer = exports.csv_response(filename, header)  # the one CSV path: formula-safe cells
    writer.writerows(rows)
    return response


class ReadOnlyTrailAdmin(admin.ModelAdmin):
    """The audit trail in the admin: nothing to change, nothing to delete; staff see their schools only."""

    def get_queryset(self, request):
        return scoped_to(super().get_queryset(request), staff_scope(request))

    def has_module_permission(self, request):
        return super().has_module_permission(request) and staff_scope(request) != frozenset()

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _record_export(self, request, student_ids, purpose: str) -> None:
        # Handing out a student's access or disclosure record is itself recorded, as a read of the student.
        audit.record_request_access(request, [User(pk=pk) for pk in set(student_ids) if pk], purpose=purpose,
                                    via="export", scope=staff_scope(request))


@admin.register(AccessEntry)
class AccessEntryAdmin(ReadOnlyTrailAdmin):
    list_display = ["timestamp", "student", "record", "purpose", "role", "actor", "via", "path", "institution"]
    list_filter = [StudentFilter, DateRangeFilter]
    search_fields = ["actor_email"]
    list_select_related = ["actor", "content_type"]
    actions = ["export_csv"]
    fields = ["timestamp", "student", "record", "purpose", "role", "actor", "via", "path", "institution",
              "remote_addr", "cid"]
    readonly_fields = fields

    def get_queryset(self, request):
        student = Cast(KeyTextTransform("student", "additional_data"), BigIntegerField())
        name = User.objects.filter(pk=OuterRef("student_pk"))
        return (super().get_queryset(request).annotate(student_pk=student)
                .annotate(student_name=Subquery(name.values("display_name")[:1]),
                          student_username=Subquery(name.values("username")[:1])))

    @staticmethod
    def _data(obj, key):
        return (obj.additional_data or {}).get(key, "")

    @admin.display(description="student")
    def student(self, obj):
        name = getattr(obj, "student_name", "") or getattr(obj, "student_username", "") or ""
        return f"{name} (#{self._data(obj, 'student')})"

    @admin.display(description="record")
    def record(self, obj):
        return obj.object_repr

    @admin.display(description="purpose")
    def purpose(self, obj):
        return self._data(obj, "purpose")

    @admin.display(description="role")
    def role(self, obj):
        return self._data(obj, "role")

    @admin.display(description="accessed by")
    def actor(self, obj):
        if obj.actor_email:
            return obj.actor_email
        if self._data(obj, "client"):
            return f"district API client {self._data(obj, 'client')}"
        return "system"

    @admin.display(description="via")
    def via(self, obj):
        return self._data(obj, "via")

    @admin.display(description="path")
    def path(self, obj):
        return self._data(obj, "path")

    @admin.display(description="institution")
    def institution(self, obj):
        return self._data(obj, "institution")

    @admin.action(description="Export the selected accesses as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        rows = list(queryset.order_by("timestamp", "pk"))
        self._record_export(request, [self._data(r, "student") for r in rows], "ferpa.access_log_export")
        return csv_response("student-record-accesses.csv", [
            "time", "student_id", "student", "record", "purpose", "role", "accessed_by", "via", "path",
            "institution_id", "remote_addr"], (
            [r.timestamp.isoformat(), self._data(r, "student"), getattr(r, "student_name", "") or
             getattr(r, "student_username", ""), r.object_repr, self.purpose(r), self.role(r), self.actor(r),
             self.via(r), self.path(r), self.institution(r), r.remote_addr or ""] for r in rows))


class ManualDisclosureForm(forms.ModelForm):
    data_categories = forms.MultipleChoiceField(choices=[
        ("directory", "Directory information"), ("roster", "Enrollment and roster"), ("attendance", "Attendance"),
        ("grades", "Grades and exam results"), ("health", "Health and safety"), ("discipline", "Discipline"),
        ("other", "Other education records")], widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = Disclosure
        fields = ["student", "institution", "receiving_party", "basis", "legitimate_interest", "data_categories",
                  "disclosed_at"]

    def clean(self):
        data = super().clean()
        student, institution = data.get("student"), data.get("institution")
        if student and institution and institution.pk not in {a.institution_id for a in audit.resolve([student])}:
            raise forms.ValidationError("This person is not a student of that school.")
        return data


@admin.register(Disclosure)
class DisclosureAdmin(ReadOnlyTrailAdmin, TenantAdmin):
    """The record of disclosures: automatic for the API and vendor exports; staff add emergency disclosures
    and export a student's record when a guardian or the eligible student asks for it (99.32(c))."""

    form = ManualDisclosureForm
    list_display = ["disclosed_at", "student", "receiving_party", "basis", "categories", "via",
                    "disclosed_by_name", "institution"]
    list_filter = [DisclosureStudentFilter, DisclosureDateFilter, "basis", "via"]
    search_fields = ["receiving_party"]
    list_select_related = ["student", "institution"]
    autocomplete_fields = ["student"]
    actions = ["export_csv"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Disclosure._meta.fields] if obj is not None else []

    @admin.display(description="data categories")
    def categories(self, obj):
        return ", ".join(obj.data_categories or [])

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "student":
            kwargs["queryset"] = users_for_scope(staff_scope(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        saved = disclosures.record_manual_disclosure(
            student=obj.student, institution_id=obj.institution_id, party=obj.receiving_party, basis=obj.basis,
            interest=obj.legitimate_interest, categories=form.cleaned_data["data_categories"],
            disclosed_at=obj.disclosed_at, actor=request.user)
        obj.pk = saved.pk

    @admin.action(description="Export the selected disclosures as CSV (a student's record of disclosures)",
                  permissions=["view"])
    def export_csv(self, request, queryset):
        rows = list(queryset.order_by("disclosed_at", "pk"))
        self._record_export(request, [r.student_id for r in rows], "ferpa.disclosure_record_export")
        return csv_response("record-of-disclosures.csv", [
            "disclosed_at", "student_id", "student", "receiving_party", "basis", "legitimate_interest",
            "data_categories", "via", "disclosed_by", "institution"], (
            [r.disclosed_at.isoformat(), r.student_id or "", r.student.public_name if r.student else "",
             r.receiving_party, r.get_basis_display(), r.legitimate_interest, ", ".join(r.data_categories or []),
             r.get_via_display(), r.disclosed_by_name, r.institution.name] for r in rows))


from compliance.coppa import admin as coppa_admin  # noqa: E402, F401  (registers the COPPA records' admin)
