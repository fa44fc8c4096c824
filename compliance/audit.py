"""FERPA access records: every read of a student record writes an ACCESS entry to django-auditlog's LogEntry.

One service, `record_access`, resolves which students (and which of their schools) a batch of records
belongs to and writes one entry per record in ONE bulk insert, with actor, role, institution, purpose, path
and channel (`via`) in `additional_data`. The adapters below call it from each kind of read path:

- `AuditedAdminMixin` (change view with its inlines, changelist, search) and `AuditedAutocompleteJsonView`;
- `AuditedAPIMixin` for DRF list/retrieve (a district client's read is also a disclosure, compliance.disclosures);
- `reads(...)` marks a page view, which calls `record_request_access` with what it shows;
- `record_socket_access` for consumers (inside their existing database thread, one insert per access);
- `job(...)` for Celery tasks and management commands (actor "system"/"operator", path = the job's name).

A path declares what it reads with a `ferpa_reads` attribute (a tuple of model labels); tests/compliance/
test_ferpa.py enumerates URLs, admin registrations, WebSocket routes, tasks and commands against it.

Bulk writes (`QuerySet.update`, `bulk_create`, `bulk_update`) on the auditlog-tracked models bypass the
signals auditlog relies on: `install_bulk_write_policy` either refuses them or logs each row (BULK_POLICY).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import models, transaction
from django.utils import timezone

# --- which rows are student records ------------------------------------------------------------------


@dataclass(frozen=True)
class RecordKind:
    """How to find the student and the school of one record: paths from the record (attnames when direct)."""

    student: str
    institution: str
    only: dict = field(default_factory=dict)  # equality conditions: which rows are a student's (role=student)

    @property
    def direct(self) -> bool:
        return "__" not in self.student and "__" not in self.institution


STUDENT = "student"
# Education records of a student held by Aula (FERPA 34 CFR 99.3). The user row itself is handled apart: a
# person is a student where they hold a student membership or enrollment (one record per such school).
STUDENT_RECORDS: dict[str, RecordKind] = {
    "classrooms.Membership": RecordKind("user_id", "institution_id", {"role": STUDENT}),
    "classrooms.Enrollment": RecordKind("user_id", "institution_id", {"role": STUDENT}),
    "classrooms.Guardianship": RecordKind("student_id", "institution_id"),
    "classrooms.ParticipantState": RecordKind("user_id", "institution_id"),
    "classrooms.AttendanceRecord": RecordKind("user_id", "institution_id"),
    "classrooms.AttendanceInterval": RecordKind("user_id", "institution_id"),
    "classrooms.PollAnswer": RecordKind("user_id", "institution_id"),
    "classrooms.HandRaise": RecordKind("user_id", "institution_id"),
    "classrooms.ChatMessage": RecordKind("author_id", "institution_id"),
    # A student's share of a session's whiteboard and notes (exports, history and the summary read it).
    "classrooms.CollabContribution": RecordKind("user_id", "institution_id"),
    "exams.Accommodation": RecordKind("student_id", "institution_id"),
    "exams.CloseExtension": RecordKind("student_id", "exam__institution_id"),
    "exams.Attempt": RecordKind("student_id", "institution_id"),
    "exams.Answer": RecordKind("attempt__student_id", "attempt__institution_id"),
    "exams.IntegrityEvent": RecordKind("attempt__student_id", "attempt__institution_id"),
    "exams.GradeSync": RecordKind("attempt__student_id", "institution_id"),
    "exams.Notification": RecordKind("attempt__student_id", "institution_id"),
    # Moderation of class content: the queue item keeps the text as written; sanctions and appeals are about
    # the person (stream items have no school and are not education records: resolve() skips them).
    "moderation.ModerationItem": RecordKind("author_id", "institution_id"),
    "moderation.Sanction": RecordKind("user_id", "institution_id"),
    "moderation.Appeal": RecordKind("appellant_id", "item__institution_id"),
}
USER_MODEL = "classrooms.User"


def is_student_record_model(model) -> bool:
    return model._meta.label in STUDENT_RECORDS or model._meta.label == USER_MODEL


@dataclass(frozen=True)
class Access:
    """One record read: which model row, whose, at which school."""

    model: type
    pk: int
    student_id: int
    institution_id: int


def _loaded(obj, names: Iterable[str]) -> bool:
    return all(obj.__dict__.get(n) is not None for n in names)


def resolve(objects: Iterable[models.Model]) -> list[Access]:
    """The student records among `objects` (other models are ignored), at most one query per model."""
    by_model: dict[type, list[models.Model]] = defaultdict(list)
    for obj in objects:
        if obj is not None and obj.pk is not None and is_student_record_model(type(obj)):
            by_model[type(obj)._meta.concrete_model].append(obj)
    found: list[Access] = []
    for model, objs in by_model.items():
        label = model._meta.label
        if label == USER_MODEL:
            found += _resolve_users(model, {o.pk for o in objs})
            continue
        kind = STUDENT_RECORDS[label]
        if kind.direct and all(_loaded(o, [kind.student, kind.institution, *kind.only]) for o in objs):
            rows = [(o.pk, getattr(o, kind.student), getattr(o, kind.institution)) for o in objs
                    if all(getattr(o, k) == v for k, v in kind.only.items())]
        else:
            rows = list(model._base_manager.filter(pk__in=[o.pk for o in objs], **kind.only)
                        .values_list("pk", kind.student, kind.institution))
        found += [Access(model, pk, sid, iid) for pk, sid, iid in rows if sid is not None and iid is not None]
    return found


def _resolve_users(model, pks: set[int]) -> list[Access]:
    from classrooms.models import Enrollment, Membership

    pairs = set(Membership.objects.filter(user_id__in=pks, role=STUDENT).values_list("user_id", "institution_id"))
    pairs |= set(Enrollment.objects.filter(user_id__in=pks, role=STUDENT).values_list("user_id", "institution_id"))
    return [Access(model, uid, uid, iid) for uid, iid in sorted(pairs)]


# --- the one write ---------------------------------------------------------------------------------------

_job: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("aula_audit_job", default=None)


def _context_value(key: str):
    """The actor / remote address of auditlog's current context (the middleware's, or `set_actor`'s). auditlog
    never clears its context variable; it is current while its pre_save receiver is still connected."""
    from auditlog.context import auditlog_value
    from django.db.models.signals import pre_save

    try:
        context = auditlog_value.get()
    except LookupError:
        return None
    duid = context.get("signal_duid")
    if duid is None or not any(receiver[0][0] == duid for receiver in list(pre_save.receivers)):
        return None
    value = context.get(key)
    return value() if callable(value) else value


def _repr(model, pk) -> str:
    # No names or content in the entry itself: the record is named by type and id (the student by id).
    return f"{model._meta.verbose_name} #{pk}"


def record_access(*, actor, objects: Iterable[models.Model], purpose: str, path: str = "", via: str = "",
                  role: str | None = None, remote_addr: str | None = None, client=None,
                  scope: frozenset[int] | None = None) -> list[Access]:
    """Write one ACCESS entry per student record in `objects`, in one bulk insert; returns what was read.

    `actor` is the person (None for a job or a district API client, named by `client`); `role` their role
    for this read (teacher, ta, school_staff, platform_admin, student, district_client, system); `path` the
    URL, socket path or job name; `via` the channel (admin, page, export, api, websocket, task, command);
    `scope` the institutions the actor reached the records through (a student's user row belongs to each of
    their schools: only those in the actor's scope are entered, so no school learns of another's staff)."""
    from auditlog.cid import get_cid
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    accesses = [a for a in resolve(objects) if scope is None or a.institution_id in scope]
    if not accesses:
        return []
    job = _job.get()
    if job is not None:
        via, path = via or job[0], path or job[1]
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if role is None:
        role = ("district_client" if client is not None else "system" if actor is None
                else "platform_admin" if actor.is_superuser else "school_staff")
    remote_addr = remote_addr or _context_value("remote_addr")
    now, cid = timezone.now(), get_cid()
    base = {"role": role, "purpose": purpose, "path": path[:500], "via": via}
    if client is not None:
        base["client"] = client.reference
    entries = [
        LogEntry(content_type=ContentType.objects.get_for_model(a.model), object_pk=str(a.pk), object_id=a.pk,
                 object_repr=_repr(a.model, a.pk), action=LogEntry.Action.ACCESS, changes_text="",
                 actor=actor, actor_email=getattr(actor, "email", None), cid=cid, remote_addr=remote_addr,
                 timestamp=now, additional_data={"student": a.student_id, "institution": a.institution_id, **base})
        for a in accesses
    ]
    LogEntry.objects.bulk_create(entries)
    return accesses


# --- adapters: pages, admin, API, sockets, jobs -------------------------------------------------------------

def reads(*labels: str):
    """Declare which student-record models a page view reads (the view calls `record_request_access`)."""
    unknown = [label for label in labels if label not in STUDENT_RECORDS and label != USER_MODEL]
    if unknown or not labels:
        raise ValueError(f"not student-record models: {unknown or 'none given'}")

    def mark(view):
        view.ferpa_reads = labels
        return view

    return mark


def request_role(request, default: str = "school_staff") -> str:
    user = getattr(request, "user", None)
    return "platform_admin" if user is not None and user.is_superuser else default


def record_request_access(request, objects, *, purpose: str, via: str = "page", role: str | None = None,
                          client=None, scope: frozenset[int] | None = None) -> list[Access]:
    user = getattr(request, "user", None)
    actor = user if user is not None and user.is_authenticated else None
    return record_access(actor=actor, objects=objects, purpose=purpose, path=request.path, via=via,
                         role=role or (None if client is not None else request_role(request)),
                         remote_addr=_context_value("remote_addr") or request.META.get("REMOTE_ADDR"),
                         client=client, scope=scope)


def _admin_scope(request) -> frozenset[int] | None:
    from classrooms.admin import staff_scope

    return staff_scope(request)


def record_socket_access(consumer, objects, *, purpose: str, role: str) -> list[Access]:
    """From a consumer's database thread (never on the event loop): one insert for this socket's read."""
    scope = consumer.scope
    client = scope.get("client") or (None,)
    return record_access(actor=consumer.user, objects=objects, purpose=purpose, path=scope.get("path", ""),
                         via="websocket", role=role, remote_addr=client[0])


@contextlib.contextmanager
def job(name: str, *, via: str = "task"):
    """Within a Celery task or management command: entries name the job as their path (actor: none)."""
    token = _job.set((via, name))
    try:
        yield
    finally:
        _job.reset(token)


class AuditedAdminMixin:
    """Admin reads of student records: the changelist page shown (search included), the change view with its
    inline rows, the delete confirmation and history pages of one record."""

    ferpa_audited = True

    def get_changelist_instance(self, request):
        cl = super().get_changelist_instance(request)
        if request.method == "GET":
            purpose = "admin.search" if cl.query else "admin.changelist"
            record_request_access(request, list(cl.result_list), purpose=purpose, via="admin",
                                  scope=_admin_scope(request))
        return cl

    def delete_view(self, request, object_id, extra_context=None):
        response = super().delete_view(request, object_id, extra_context)
        self._record_object_page(request, response, "admin.delete_view")  # the row and what it takes along
        return response

    def history_view(self, request, object_id, extra_context=None):
        response = super().history_view(request, object_id, extra_context)
        self._record_object_page(request, response, "admin.history")  # past values of the record's fields
        return response

    def _record_object_page(self, request, response, purpose: str) -> None:
        obj = (getattr(response, "context_data", None) or {}).get("object")
        if request.method == "GET" and response.status_code == 200 and obj is not None:
            record_request_access(request, [obj], purpose=purpose, via="admin", scope=_admin_scope(request))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            shown = [obj]
            for inline in context.get("inline_admin_formsets", []):
                shown += [form.instance for form in inline.formset.initial_forms]
            record_request_access(request, shown, purpose="admin.change_view", via="admin",
                                  scope=_admin_scope(request))
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)


def _admin_autocomplete_view():
    from django.contrib.admin.views.autocomplete import AutocompleteJsonView

    class AuditedAutocompleteJsonView(AutocompleteJsonView):
        """The admin's autocomplete (select2) answers with the records it found: audited like a search."""

        def get_context_data(self, **kwargs):
            context = super().get_context_data(**kwargs)
            self._shown = list(context["object_list"])
            return context

        def get(self, request, *args, **kwargs):
            response = super().get(request, *args, **kwargs)
            if getattr(self, "_shown", None):
                record_request_access(request, self._shown, purpose="admin.autocomplete", via="admin",
                                      scope=_admin_scope(request))
            return response

    return AuditedAutocompleteJsonView


def install_admin_autocomplete(site) -> None:
    """Route the site's autocomplete through the audited view (before the site's URLs are built)."""
    view_class = _admin_autocomplete_view()

    def autocomplete_view(request):
        return view_class.as_view(admin_site=site)(request)

    site.autocomplete_view = autocomplete_view


class AuditedAPIMixin:
    """DRF list and retrieve: the objects handed to the output serializer are audited; when the caller is a
    district API client the read is also a disclosure to an outside party, recorded per student."""

    ferpa_audited = True
    disclosure_categories: tuple[str, ...] = ("roster",)
    # False for views that hand every record they return to `audit_records` themselves (the district API's
    # base class, whose OneRoster views render without a serializer).
    audit_in_serializer = True

    def get_serializer(self, *args, **kwargs):
        serializer = super().get_serializer(*args, **kwargs)
        if self.audit_in_serializer and args and "data" not in kwargs and self.request.method in ("GET", "HEAD"):
            self.audit_records(list(args[0]) if kwargs.get("many") else [args[0]], many=bool(kwargs.get("many")))
        return serializer

    def audit_records(self, records: list, *, many: bool) -> None:
        record_api_read(self.request, records, categories=self.disclosure_categories,
                        purpose="api.list" if many else "api.retrieve")


def record_api_read(request, objects, *, categories, purpose: str) -> list[Access]:
    from compliance import disclosures
    from compliance.selectors import api_client_for_token, institution_ids_for_request

    token = getattr(request, "auth", None)
    client = api_client_for_token(token) if token is not None and hasattr(token, "application_id") else None
    with transaction.atomic():
        accesses = record_request_access(request, objects, purpose=purpose, via="api", client=client,
                                         scope=institution_ids_for_request(request))
        if client is not None and accesses:
            disclosures.record_api_client_disclosure(client=client, accesses=accesses, categories=categories)
    return accesses


# --- the audit trail is append-only ------------------------------------------------------------------------

PURGE_SETTING = "aula.audit_purge"


@contextlib.contextmanager
def retention_purge():
    """The one way past the database trigger that keeps the audit trail append-only: inside it (and only
    in its transaction) access entries and disclosure records may be deleted or redacted, for the retention
    policy, a district's disposition request or a child's COPPA deletion. Use `audit_trail_purge`, which
    records that it happened."""
    from django.db import connection

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT set_config(%s, 'on', true)", [PURGE_SETTING])
        token = _purging.set(True)
        try:
            yield
        except BaseException:
            # The transaction (or savepoint) rolls back, and the setting with it: no statement here, the
            # transaction is aborted and one would hide the error.
            _purging.reset(token)
            raise
        _purging.reset(token)
        with connection.cursor() as cur:  # an outer transaction goes on: the bypass ends here
            cur.execute("SELECT set_config(%s, 'off', true)", [PURGE_SETTING])


def audit_trail_purge(*, student_ids: Iterable[int], reason: str, actor=None) -> int:
    """Delete the access entries and disclosure records of these students (their records are being deleted:
    the trail is kept as long as the student's records). Leaves one entry saying how many went, and why."""
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    from compliance.models import Disclosure

    ids = sorted(set(student_ids))
    with retention_purge():
        entries, _ = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, additional_data__student__in=ids).delete()
        disclosed, _ = Disclosure.objects.filter(student_id__in=ids).delete()
        LogEntry.objects.create(
            content_type=ContentType.objects.get_for_model(Disclosure), object_pk="purge", object_repr="audit trail",
            action=LogEntry.Action.DELETE, actor=actor if getattr(actor, "is_authenticated", False) else None,
            changes_text="", additional_data={"purge": {"students": len(ids), "access_entries": entries,
                                                        "disclosures": disclosed, "reason": reason[:200]}})
    return entries + disclosed


# --- bulk writes on audited models ---------------------------------------------------------------------------

class BulkWriteRefused(Exception):
    """A bulk write on a model whose changes must go through its services, one audited row at a time."""


class AuditTrailReadOnly(BulkWriteRefused):
    """The audit trail (access entries, disclosure records) is append-only."""


# The audit trail itself: rows are only ever added (the database trigger of compliance migration 0002 says
# the same to any SQL); deletion only inside `retention_purge`.
APPEND_ONLY = {"auditlog.LogEntry", "compliance.Disclosure"}
_purging = contextvars.ContextVar("aula_audit_purging", default=False)
# The one change the trail allows: a person's link set to NULL when their account is deleted (on_delete=
# SET_NULL); the row keeps the e-mail / name copied at write time, so it still says who.
PERSON_LINKS = {"actor", "student", "disclosed_by", "api_client"}


def _append_only(model) -> bool:
    return model._meta.concrete_model._meta.label in APPEND_ONLY


def refuse_trail_change(sender, instance, **kwargs) -> None:
    """pre_save / pre_delete receiver on the audit trail's models: no edits, no deletes (outside a purge)."""
    if kwargs.get("raw"):
        return
    deleting = "origin" in kwargs  # pre_delete passes the deletion's origin; pre_save never does
    if deleting and _purging.get():
        return
    if deleting or not instance._state.adding:
        raise AuditTrailReadOnly(f"{sender._meta.label} rows are append-only")


REFUSE, AUDIT = "refuse", "audit"
# Per auditlog-tracked model (settings.AUDITLOG_INCLUDE_TRACKING_MODELS).
# Refused: rows whose one write path does more than the write. Accounts and tenancy (User, District,
# Institution, DistrictRole, Guardianship): the services check the actor's reach and keep is_staff and
# consent links right; a bulk write could grant admin or reach another school. Live and exam state
# (SessionControl, ParticipantState, Poll, Exam, Accommodation, CloseExtension, streaming): the services
# publish the change to the sockets and recompute deadlines; a bulk write would leave rooms and timers wrong.
# Audited: rows that imports and operators legitimately change many at a time (roster sync, staff offboarding,
# rescheduling, deactivating an API client, re-queuing grade deliveries, attendance derived in batches).
BULK_POLICY: dict[str, str] = {
    "classrooms.User": REFUSE,
    "classrooms.District": REFUSE,
    "classrooms.Institution": REFUSE,
    "classrooms.DistrictRole": REFUSE,
    "classrooms.Guardianship": REFUSE,
    "classrooms.SessionControl": REFUSE,
    "classrooms.ParticipantState": REFUSE,
    "classrooms.Poll": REFUSE,
    "exams.Exam": REFUSE,
    "exams.Accommodation": REFUSE,
    "exams.CloseExtension": REFUSE,
    "streaming.Channel": REFUSE,
    "streaming.Stream": REFUSE,
    "streaming.StreamChatBan": REFUSE,
    # COPPA consent and school authorization change only through compliance.coppa.services, row by row
    # (evidence, revocation time, the consent gate's cached answer).
    "compliance.ParentalConsent": REFUSE,
    "compliance.SchoolAuthorization": REFUSE,
    "classrooms.Course": AUDIT,
    "classrooms.Enrollment": AUDIT,
    "classrooms.Membership": AUDIT,
    "classrooms.LiveSession": AUDIT,
    "classrooms.AttendanceRecord": AUDIT,
    "compliance.DistrictAPIClient": AUDIT,
    "exams.GradeSync": AUDIT,
    # LTI: registrations, keys, linked courses, placements and the launch log change through lti_services only
    "classrooms.LtiPlatform": REFUSE,
    "classrooms.LtiToolKey": REFUSE,
    "classrooms.LtiContext": REFUSE,
    "classrooms.LtiResourceLink": REFUSE,
    "classrooms.LtiLaunch": REFUSE,
    "classrooms.LtiRegistrationInvite": REFUSE,
    "classrooms.IdentityProvider": REFUSE,
    # A SIS connection changes through sis_sync.sis_connection_save only (stays with its district; re-pointed,
    # it forgets the old SIS's digests).
    "compliance.SisConnection": REFUSE,
    "classrooms.ExternalIdentity": AUDIT,
}
_in_bulk = contextvars.ContextVar("aula_audit_in_bulk", default=False)
# Inside a deletion (django's Collector): on_delete=SET_NULL updates of dependent rows are its consequence,
# logged per row like an audited bulk update, never refused (deleting a person must stay possible).
_cascade = contextvars.ContextVar("aula_audit_cascade", default=False)


def _policy(model) -> str | None:
    return BULK_POLICY.get(model._meta.concrete_model._meta.label)


def _refuse(model, op: str) -> None:
    raise BulkWriteRefused(f"{op} on {model._meta.label} is refused: change these rows through their "
                           f"services, one audited row at a time (compliance.audit.BULK_POLICY)")


def _log_bulk(model, action: int, rows: list[tuple[object, dict]], op: str) -> None:
    """One LogEntry per row (pk, {field: [old, new]}), masked like auditlog's own, in one insert."""
    from auditlog.cid import get_cid
    from auditlog.diff import get_mask_function
    from auditlog.models import LogEntry
    from auditlog.registry import auditlog
    from django.contrib.contenttypes.models import ContentType

    fields = auditlog.get_model_fields(model)
    mask, masked = get_mask_function(fields.get("mask_callable")), set(fields["mask_fields"])
    excluded = set(fields["exclude_fields"])
    actor = _context_value("actor")
    actor = actor if getattr(actor, "is_authenticated", False) else None
    ct, now, cid = ContentType.objects.get_for_model(model), timezone.now(), get_cid()
    entries = []
    for pk, changes in rows:
        shown = {k: [mask(v) if k in masked and isinstance(v, str) else v for v in pair]
                 for k, pair in changes.items() if k not in excluded}
        if action == 1 and not shown:
            continue  # only untracked fields changed: auditlog's own save path logs nothing either
        entries.append(LogEntry(content_type=ct, object_pk="" if pk is None else str(pk),
                                object_id=pk if isinstance(pk, int) else None, object_repr=_repr(model, pk),
                                action=action, changes=shown, changes_text="", actor=actor,
                                actor_email=getattr(actor, "email", None), cid=cid, timestamp=now,
                                remote_addr=_context_value("remote_addr"), additional_data={"bulk": op}))
    if entries:
        LogEntry.objects.bulk_create(entries)


def _text(value) -> str:
    return "None" if value is None else str(value)


def _audited_update(self, **kwargs):
    model = self.model
    if _append_only(model) and not _purging.get() \
            and not (set(kwargs) <= PERSON_LINKS and all(v is None for v in kwargs.values())):
        raise AuditTrailReadOnly(f"{model._meta.label} rows are append-only")
    if _in_bulk.get() or not _policy(model):
        return _original["update"](self, **kwargs)
    if _policy(model) == REFUSE and not _cascade.get():
        _refuse(model, "QuerySet.update")
    names = [model._meta.get_field(k).attname for k in kwargs]
    with transaction.atomic():
        before = {r["pk"]: r for r in self.values("pk", *names)}
        token = _in_bulk.set(True)
        try:
            count = _original["update"](model._base_manager.filter(pk__in=list(before)), **kwargs)
        finally:
            _in_bulk.reset(token)
        after = model._base_manager.filter(pk__in=list(before)).values("pk", *names)
        _log_bulk(model, 1, [(r["pk"], {n: [_text(before[r["pk"]][n]), _text(r[n])] for n in names
                                         if before[r["pk"]][n] != r[n]}) for r in after], "update")
    return count


def _audited_bulk_update(self, objs, fields, batch_size=None):
    model = self.model
    if _append_only(model):
        raise AuditTrailReadOnly(f"{model._meta.label} rows are append-only")
    if _in_bulk.get() or not _policy(model):
        return _original["bulk_update"](self, objs, fields, batch_size=batch_size)
    if _policy(model) == REFUSE:
        _refuse(model, "QuerySet.bulk_update")
    objs = list(objs)
    names = [model._meta.get_field(f).attname for f in fields]
    with transaction.atomic():
        before = {r["pk"]: r for r in model._base_manager.filter(pk__in=[o.pk for o in objs]).values("pk", *names)}
        token = _in_bulk.set(True)
        try:
            count = _original["bulk_update"](self, objs, fields, batch_size=batch_size)
        finally:
            _in_bulk.reset(token)
        _log_bulk(model, 1, [(o.pk, {n: [_text(before.get(o.pk, {}).get(n)), _text(getattr(o, n))] for n in names})
                             for o in objs], "bulk_update")
    return count


def _audited_bulk_create(self, objs, *args, **kwargs):
    model = self.model
    if _in_bulk.get() or not _policy(model):
        return _original["bulk_create"](self, objs, *args, **kwargs)
    if _policy(model) == REFUSE:
        _refuse(model, "QuerySet.bulk_create")
    objs = list(objs)
    with transaction.atomic():
        token = _in_bulk.set(True)
        try:
            created = _original["bulk_create"](self, objs, *args, **kwargs)
        finally:
            _in_bulk.reset(token)
        concrete = [f for f in model._meta.concrete_fields if not f.primary_key]
        _log_bulk(model, 0, [(o.pk, {f.attname: ["None", _text(getattr(o, f.attname))] for f in concrete})
                             for o in created], "bulk_create")
    return created


def _collector_delete(self, *args, **kwargs):
    token = _cascade.set(True)
    try:
        return _original["collector_delete"](self, *args, **kwargs)
    finally:
        _cascade.reset(token)


def _guarded_delete(self):
    if _append_only(self.model) and not _purging.get():
        raise AuditTrailReadOnly(f"{self.model._meta.label} rows are append-only")
    return _original["delete"](self)


_original: dict = {}


def install_bulk_write_policy() -> None:
    """Put BULK_POLICY in front of every QuerySet's bulk writes (managers and related managers included).
    `QuerySet.delete()` needs nothing: a model with delete receivers (auditlog's) is never fast-deleted, so
    each row's deletion is logged by auditlog itself."""
    if _original:
        return
    qs = models.QuerySet
    _original.update(update=qs.update, bulk_update=qs.bulk_update, bulk_create=qs.bulk_create, delete=qs.delete)
    qs.update, qs.bulk_update, qs.bulk_create = _audited_update, _audited_bulk_update, _audited_bulk_create
    qs.delete = _guarded_delete
    from django.db.models.deletion import Collector

    _original["collector_delete"] = Collector.delete
    Collector.delete = _collector_delete
    qs.update.alters_data = qs.bulk_update.alters_data = qs.bulk_create.alters_data = qs.delete.alters_data = True
    qs.delete.queryset_only = True
    from auditlog.models import LogEntry
    from django.db.models.signals import pre_delete, pre_save

    from compliance.models import AccessEntry, Disclosure

    for model in (LogEntry, AccessEntry, Disclosure):
        pre_save.connect(refuse_trail_change, sender=model, dispatch_uid=f"ferpa-append-only-save-{model.__name__}")
        pre_delete.connect(refuse_trail_change, sender=model, dispatch_uid=f"ferpa-append-only-del-{model.__name__}")
