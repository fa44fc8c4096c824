"""All of one district's data, out and gone: the district data export (a zip of OneRoster CSVs and Aula JSON
lines, docs/api.md) and the disposition of a district's student data with a certificate.

Every row is chosen through the tenant scope of the district's schools (`classrooms.selectors.scoped_to`),
so neither job can read or delete another district's rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tempfile
import zipfile

from django.core.files import File
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from classrooms.models import (
    AttendanceInterval,
    AttendanceRecord,
    ChatMessage,
    Course,
    District,
    Enrollment,
    Guardianship,
    HandRaise,
    Institution,
    LiveSession,
    Membership,
    ParticipantState,
    Poll,
    PollAnswer,
    PollOption,
    Role,
    SessionControl,
    User,
)
from classrooms.selectors import scoped_to
from compliance import audit
from compliance.models import (
    AcademicSession,
    CatalogCourse,
    DispositionCertificate,
    DistrictAPIClient,
    DistrictExport,
    RosterLink,
)
from compliance.rostering import aula_sourced_id
from compliance.selectors import district_institution_ids, people_scoped_to, students_scoped_to
from config.exports import csv_writer
from config.realtime.models import RoomEvent
from exams.models import (
    Accommodation,
    Answer,
    Attempt,
    CloseExtension,
    Exam,
    GradeSync,
    IntegrityEvent,
    Notification,
    Question,
    QuestionBank,
    Section,
)

Kind = RosterLink.Kind

# --- export ----------------------------------------------------------------------------------------------------

USER_FIELDS = ["id", "username", "email", "first_name", "last_name", "display_name", "date_of_birth", "is_active",
               "date_joined", "updated_at"]  # never the password hash


def _tenant_tables(ids: frozenset[int]) -> list[tuple[str, object]]:
    """(file name, queryset) of every Aula table with the district's rows, children through their parent."""
    polls = scoped_to(Poll.objects.all(), ids)
    exams = scoped_to(Exam.objects.all(), ids)
    attempts = scoped_to(Attempt.objects.all(), ids)
    return [
        ("memberships", scoped_to(Membership.objects.all(), ids)),
        ("guardianships", scoped_to(Guardianship.objects.all(), ids)),
        ("courses", scoped_to(Course.objects.all(), ids)),
        ("enrollments", scoped_to(Enrollment.objects.all(), ids)),
        ("live_sessions", scoped_to(LiveSession.objects.all(), ids)),
        ("session_controls", scoped_to(SessionControl.objects.all(), ids)),
        ("participant_states", scoped_to(ParticipantState.objects.all(), ids)),
        ("chat_messages", scoped_to(ChatMessage.objects.all(), ids)),
        ("polls", polls),
        ("poll_options", PollOption.objects.filter(poll__in=polls)),
        ("poll_answers", scoped_to(PollAnswer.objects.all(), ids)),
        ("hand_raises", scoped_to(HandRaise.objects.all(), ids)),
        ("attendance_intervals", scoped_to(AttendanceInterval.objects.all(), ids)),
        ("attendance_records", scoped_to(AttendanceRecord.objects.all(), ids)),
        ("exams", exams),
        ("exam_sections", Section.objects.filter(exam__in=exams)),
        ("question_banks", scoped_to(QuestionBank.objects.all(), ids)),
        ("questions", scoped_to(Question.objects.all(), ids)),
        ("accommodations", scoped_to(Accommodation.objects.all(), ids)),
        ("close_extensions", CloseExtension.objects.filter(exam__in=exams)),
        ("exam_attempts", attempts),
        ("exam_answers", Answer.objects.filter(attempt__in=attempts)),
        ("exam_integrity_events", IntegrityEvent.objects.filter(attempt__in=attempts)),
        ("grade_syncs", scoped_to(GradeSync.objects.all(), ids)),
        ("exam_notifications", scoped_to(Notification.objects.all(), ids)),
    ]


def district_export_request(*, district: District, client: DistrictAPIClient | None) -> DistrictExport:
    """Record an export request and queue the job after commit (the worker must see the row)."""
    from compliance import tasks

    export = DistrictExport.objects.create(district=district, requested_by=client)
    transaction.on_commit(lambda: tasks.district_export_build.delay(export.pk))
    return export


def district_export_build(*, export_id: int) -> DistrictExport | None:
    """Build the export's zip (idempotent: a finished export is left as it is)."""
    export = DistrictExport.objects.filter(pk=export_id).select_related("district").first()
    if export is None or export.status == DistrictExport.Status.DONE:
        return export
    district = export.district
    ids = district_institution_ids(district.pk)
    counts: dict[str, int] = {}
    with tempfile.TemporaryFile() as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for name, header, rows in oneroster_csvs(district, ids):
                out = io.StringIO()
                writer = csv_writer(out)  # the one CSV path (config.exports): formula-safe cells
                writer.writerow(header)
                n = 0
                for row in rows:
                    writer.writerow(row)
                    n += 1
                bundle.writestr(name, out.getvalue())
                counts[name] = n
            users = people_scoped_to(ids).order_by("pk").values(*USER_FIELDS)
            for name, queryset in [("aula/users", users), *_tenant_tables(ids)]:
                rows = queryset if name == "aula/users" else queryset.order_by("pk").values()
                counts[f"{name.removeprefix('aula/')}.jsonl"] = _write_jsonl(
                    bundle, f"aula/{name.removeprefix('aula/')}.jsonl", rows)
            manifest = {"district": {"id": district.pk, "slug": district.slug, "name": district.name},
                        "created_at": timezone.now(), "format": "aula-district-export/1", "files": counts}
            bundle.writestr("manifest.json", json.dumps(manifest, cls=DjangoJSONEncoder, indent=2))
        tmp.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: tmp.read(1 << 20), b""):
            digest.update(chunk)
        tmp.seek(0)
        with transaction.atomic():
            export = DistrictExport.objects.select_for_update().get(pk=export_id)
            if export.status == DistrictExport.Status.DONE:
                return export
            export.file.save(f"{district.pk}-{export.pk}-{secrets.token_hex(8)}.zip", File(tmp), save=False)
            export.sha256, export.counts = digest.hexdigest(), counts
            export.status, export.finished_at = DistrictExport.Status.DONE, timezone.now()
            export.save()
            # The export is a read of every one of the district's students' records: its FERPA access
            # entries commit with the DONE state, so a finished export always has them, exactly once.
            audit.record_access(actor=None, objects=list(people_scoped_to(ids)), purpose="district.export",
                                via="export", role="district_client", scope=ids)
    return export


def _write_jsonl(bundle: zipfile.ZipFile, name: str, rows) -> int:
    n = 0
    with bundle.open(name, "w") as handle:
        for row in rows.iterator(chunk_size=2000):
            handle.write(json.dumps(row, cls=DjangoJSONEncoder).encode() + b"\n")
            n += 1
    return n


def oneroster_csvs(district: District, ids: frozenset[int]):
    """(file name, header, rows) of the district's roster in OneRoster 1.2 CSV form (the import's format)."""
    links: dict[tuple[str, int], RosterLink] = {
        (link.kind, link.object_id): link for link in RosterLink.objects.filter(district=district)}

    def sid(kind: str, pk: int) -> str:
        link = links.get((kind, pk))
        return link.sourced_id if link else aula_sourced_id(kind, pk)

    def data(kind: str, pk: int) -> dict:
        link = links.get((kind, pk))
        return link.data if link else {}

    district_sid = sid(Kind.DISTRICT, district.pk)
    schools = list(scoped_to(Institution.objects.all(), ids).order_by("pk"))
    yield "orgs.csv", ["sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId"], [
        [district_sid, "active", district.updated_at.isoformat(), district.name, "district", district.slug, ""],
        *[[sid(Kind.ORG, s.pk), "active", s.updated_at.isoformat(), s.name, "school",
           data(Kind.ORG, s.pk).get("identifier") or s.slug, district_sid] for s in schools]]
    sessions = scoped_to(AcademicSession.objects.select_related("parent"), ids).order_by("pk")
    yield "academicSessions.csv", ["sourcedId", "status", "dateLastModified", "title", "type", "startDate",
                                   "endDate", "parentSourcedId", "schoolYear"], [
        [a.sourced_id, a.status, a.updated_at.isoformat(), a.title, a.kind, a.start_date.isoformat(),
         a.end_date.isoformat(), a.parent.sourced_id if a.parent else "", a.school_year] for a in sessions]
    catalog = scoped_to(CatalogCourse.objects.select_related("school_year"), ids).order_by("pk")
    yield "courses.csv", ["sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title", "courseCode",
                          "grades", "orgSourcedId", "subjects"], [
        [c.sourced_id, c.status, c.updated_at.isoformat(), c.school_year.sourced_id if c.school_year else "",
         c.title, c.course_code, ",".join(c.grades), sid(Kind.ORG, c.org_id) if c.org_id else district_sid,
         ",".join(c.subjects)] for c in catalog]
    courses = scoped_to(Course.objects.all(), ids).order_by("pk")
    yield "classes.csv", ["sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId",
                          "classCode", "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects"], [
        [sid(Kind.CLASS, c.pk), "active" if c.is_active else "tobedeleted", c.updated_at.isoformat(), c.title,
         ",".join(data(Kind.CLASS, c.pk).get("grades", [])), data(Kind.CLASS, c.pk).get("course", ""), c.code,
         data(Kind.CLASS, c.pk).get("classType", "scheduled"), data(Kind.CLASS, c.pk).get("location", ""),
         sid(Kind.ORG, c.institution_id), ",".join(data(Kind.CLASS, c.pk).get("terms", [])),
         ",".join(data(Kind.CLASS, c.pk).get("subjects", []))] for c in courses]
    yield "users.csv", ["sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role",
                        "username", "givenName", "familyName", "middleName", "identifier", "email",
                        "agentSourcedIds", "grades"], _user_rows(ids, sid, data)
    enrollments = scoped_to(Enrollment.objects.all(), ids).order_by("pk")
    roles = {Role.STUDENT: "student", Role.TEACHER: "teacher", Role.TA: "aide"}
    yield "enrollments.csv", ["sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
                              "userSourcedId", "role", "primary", "beginDate", "endDate"], [
        [sid(Kind.ENROLLMENT, e.pk), "active" if e.is_active else "tobedeleted", e.updated_at.isoformat(),
         sid(Kind.CLASS, e.course_id), sid(Kind.ORG, e.institution_id), sid(Kind.USER, e.user_id), roles[e.role],
         "true" if data(Kind.ENROLLMENT, e.pk).get("primary") else "false",
         data(Kind.ENROLLMENT, e.pk).get("beginDate") or "", data(Kind.ENROLLMENT, e.pk).get("endDate") or ""]
        for e in enrollments]


def _user_rows(ids, sid, data):
    names = {Role.STUDENT: "student", Role.TEACHER: "teacher", Role.TA: "aide", Role.STAFF: "administrator"}
    memberships: dict[int, list[Membership]] = {}
    for m in scoped_to(Membership.objects.filter(is_active=True), ids).order_by("pk"):
        memberships.setdefault(m.user_id, []).append(m)
    wards: dict[int, list[Guardianship]] = {}
    for g in scoped_to(Guardianship.objects.all(), ids).order_by("pk"):
        wards.setdefault(g.guardian_id, []).append(g)
    for u in people_scoped_to(ids).order_by("pk"):
        own = memberships.get(u.pk, [])
        guarding = wards.get(u.pk, [])
        role = names[own[0].role] if own else ("guardian" if guarding else "student")
        orgs = [m.institution_id for m in own] or [g.institution_id for g in guarding]
        extra = data(Kind.USER, u.pk)
        yield [sid(Kind.USER, u.pk), "active" if u.is_active else "tobedeleted", u.updated_at.isoformat(),
               "true" if u.is_active else "false", ",".join(sid(Kind.ORG, o) for o in dict.fromkeys(orgs)), role,
               u.username, u.first_name, u.last_name, extra.get("middleName", ""), extra.get("identifier", ""),
               u.email, ",".join(sid(Kind.USER, g.student_id) for g in guarding), ",".join(extra.get("grades", []))]


# --- disposition ----------------------------------------------------------------------------------------------


def district_disposition_request(*, district: District, requested_by: str, performed_by: User | None = None,
                                 queue: bool = True) -> DispositionCertificate:
    """Record a district's request to delete its student data and (unless the caller runs it) queue the job."""
    from compliance import tasks

    certificate = DispositionCertificate.objects.create(district=district, requested_by=requested_by,
                                                        performed_by=performed_by)
    if queue:
        transaction.on_commit(lambda: tasks.district_dispose.delay(certificate.pk))
    return certificate


def district_dispose(*, certificate_id: int) -> DispositionCertificate | None:
    """Delete all student data of the certificate's district, in one transaction, and complete the certificate.

    Student data: the students' enrollments and memberships, guardianships, attendance, chat messages, poll
    answers, raised hands, session states, exam attempts (with answers and integrity logs), accommodations and
    extensions, the realtime logs of the district's rooms, the students' roster links, and the student accounts
    that no other district still has. Idempotent: a completed certificate is returned as it is."""
    with transaction.atomic():
        certificate = (DispositionCertificate.objects.select_for_update(of=("self",))
                       .select_related("district", "performed_by").filter(pk=certificate_id).first())
        if certificate is None or certificate.status == DispositionCertificate.Status.DONE:
            return certificate
        district = certificate.district
        ids = district_institution_ids(district.pk)
        students = set(students_scoped_to(ids).values_list("pk", flat=True))
        counts: dict[str, int] = {}

        def delete(label: str, queryset) -> None:
            _, per_model = queryset.delete()
            for model_label, n in per_model.items():
                if n:
                    counts[model_label] = counts.get(model_label, 0) + n

        exams = scoped_to(Exam.objects.all(), ids)
        delete("attempts", scoped_to(Attempt.objects.filter(student_id__in=students), ids))
        delete("accommodations", scoped_to(Accommodation.objects.filter(student_id__in=students), ids))
        delete("extensions", CloseExtension.objects.filter(exam__in=exams, student_id__in=students))
        delete("attendance", scoped_to(AttendanceRecord.objects.filter(user_id__in=students), ids))
        delete("intervals", scoped_to(AttendanceInterval.objects.filter(user_id__in=students), ids))
        delete("chat", scoped_to(ChatMessage.objects.filter(author_id__in=students), ids))
        # Anonymous answers carry no user, only a keyed hash: every answer in the district goes.
        delete("poll answers", scoped_to(PollAnswer.objects.all(), ids))
        delete("hands", scoped_to(HandRaise.objects.filter(user_id__in=students), ids))
        delete("states", scoped_to(ParticipantState.objects.filter(user_id__in=students), ids))
        delete("guardianships", scoped_to(Guardianship.objects.filter(Q(student_id__in=students)), ids))
        delete("enrollments", scoped_to(Enrollment.objects.filter(user_id__in=students, role=Role.STUDENT), ids))
        delete("memberships", scoped_to(Membership.objects.filter(user_id__in=students, role=Role.STUDENT), ids))
        rooms = Q()
        for institution_id in ids:
            rooms |= Q(room_key__startswith=f"i{institution_id}.")
        if ids:
            delete("room events", RoomEvent.objects.filter(rooms))
        delete("links", RosterLink.objects.filter(district=district, kind=Kind.USER, object_id__in=students))
        delete("enrollment links", RosterLink.objects.filter(district=district, kind=Kind.ENROLLMENT).exclude(
            object_id__in=Enrollment.objects.values("pk")))
        # An account another district (or school elsewhere) still has is kept; only its rows here are gone.
        still_elsewhere = set(
            User.objects.filter(pk__in=students).filter(
                Q(memberships__isnull=False) | Q(enrollments__isnull=False) | Q(guardians__isnull=False)
                | Q(wards__isnull=False)).values_list("pk", flat=True))
        delete("accounts", User.objects.filter(pk__in=students - still_elsewhere))
        completed = timezone.now()
        body = {
            "certificate": certificate.reference,
            "district": {"id": district.pk, "slug": district.slug, "name": district.name},
            "requested_by": certificate.requested_by,
            "requested_at": certificate.requested_at.isoformat(),
            "performed_by": certificate.performed_by.email if certificate.performed_by else "system",
            "completed_at": completed.isoformat(),
            "students": len(students),
            "accounts_kept_for_other_schools": len(still_elsewhere),
            "deleted": dict(sorted(counts.items())),
        }
        certificate.certificate = body
        certificate.sha256 = certificate_hash(body)
        certificate.counts = body["deleted"]
        certificate.status, certificate.completed_at = DispositionCertificate.Status.DONE, completed
        certificate.save()
    return certificate


def certificate_hash(body: dict) -> str:
    """SHA-256 of the certificate's canonical JSON (sorted keys, no spaces): anyone can recompute it."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
