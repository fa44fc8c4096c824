"""FERPA: reads of student records leave access entries (admin, API, pages, sockets, tasks, commands); bulk
writes are audited or refused; disclosures are recorded; the audit trail is append-only, scoped to the
staff's schools, filterable by student and dates and exported as formula-safe CSV.

Real HTTP through django.test.Client, real sockets through WebsocketCommunicator, real PostgreSQL triggers.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from auditlog.context import set_actor
from auditlog.models import LogEntry
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.urls import path, reverse
from django.utils import timezone
from rest_framework import serializers

from classrooms import services
from classrooms.models import (
    AttendanceRecord,
    Course,
    Enrollment,
    Guardianship,
    LiveSession,
)
from compliance import audit, disclosures
from compliance.api.base import DistrictDetailView, DistrictListView
from compliance.models import AccessEntry, Disclosure
from tests import factories
from tests.compliance.test_api import bearer, make_api_client, token_for

pytestmark = pytest.mark.django_db


def accesses(**filters):
    return list(AccessEntry.objects.filter(**filters).order_by("pk"))


def data(entry) -> dict:
    return entry.additional_data


def of_student(student, **filters):
    return accesses(additional_data__student=student.pk, **filters)


@pytest.fixture
def as_staff_a(client, world):
    client.force_login(world.staff_a)
    return client


# --- admin ----------------------------------------------------------------------------------------------------

def test_admin_changelist_records_each_student_row_shown(as_staff_a, world):
    response = as_staff_a.get(reverse("admin:classrooms_enrollment_changelist"))
    assert response.status_code == 200
    entries = accesses(additional_data__purpose="admin.changelist")
    mine = Enrollment.objects.get(user=world.student_a, course=world.course_a)
    teacher = Enrollment.objects.get(user=world.teacher_a, course=world.course_a)
    assert [(e.object_id, data(e)["student"]) for e in entries] == [(mine.pk, world.student_a.pk)]
    assert teacher.pk not in {e.object_id for e in entries}  # a teacher's enrollment is not a student record
    entry = entries[0]
    assert entry.actor == world.staff_a
    assert data(entry) | {} == {"student": world.student_a.pk, "institution": world.school_a.pk,
                                "role": "school_staff", "purpose": "admin.changelist",
                                "path": "/admin/classrooms/enrollment/", "via": "admin"}
    assert entry.content_type == ContentType.objects.get_for_model(Enrollment)
    assert entry.action == LogEntry.Action.ACCESS and entry.timestamp is not None


def test_admin_search_is_recorded_as_search(as_staff_a, world):
    response = as_staff_a.get(reverse("admin:classrooms_user_changelist"), {"q": "student_a"})
    assert response.status_code == 200
    entries = of_student(world.student_a, additional_data__purpose="admin.search")
    assert [(e.object_id, data(e)["institution"]) for e in entries] == [(world.student_a.pk, world.school_a.pk)]
    assert "student_a" not in entries[0].object_repr  # no names in the entry itself


def test_a_student_of_two_schools_is_entered_only_at_the_school_the_staff_reached_them_through(as_staff_a, world):
    factories.enroll(world.course_c, world.student_a)  # also a student of another district's school
    as_staff_a.get(reverse("admin:classrooms_user_changelist"), {"q": "student_a"})
    entries = of_student(world.student_a, additional_data__purpose="admin.search")
    assert [data(e)["institution"] for e in entries] == [world.school_a.pk]  # school C learns nothing


def test_admin_autocomplete_is_recorded(as_staff_a, world):
    response = as_staff_a.get(reverse("admin:autocomplete"), {
        "app_label": "classrooms", "model_name": "enrollment", "field_name": "user", "term": "student"})
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [str(world.student_a.pk)]
    entries = of_student(world.student_a, additional_data__purpose="admin.autocomplete")
    assert len(entries) == 1 and entries[0].actor == world.staff_a


def test_admin_change_view_records_object_and_inline_rows(as_staff_a, world):
    assert as_staff_a.get(reverse("admin:classrooms_user_change", args=[world.student_a.pk])).status_code == 200
    assert as_staff_a.get(reverse("admin:classrooms_course_change", args=[world.course_a.pk])).status_code == 200
    entries = of_student(world.student_a, additional_data__purpose="admin.change_view")
    kinds = sorted(e.content_type.model for e in entries)
    # the user page (user + their student membership inline) and the course page (its student enrollment)
    assert kinds == ["enrollment", "membership", "user"]


def test_admin_delete_confirmation_and_history_pages_are_recorded(as_staff_a, world):
    mine = Enrollment.objects.get(user=world.student_a)
    assert as_staff_a.get(reverse("admin:classrooms_enrollment_history", args=[mine.pk])).status_code == 200
    assert as_staff_a.get(reverse("admin:classrooms_user_history", args=[world.student_a.pk])).status_code == 200
    entries = of_student(world.student_a, additional_data__purpose="admin.history")
    assert sorted(e.content_type.model for e in entries) == ["enrollment", "user"]
    link = services.guardianship_link(guardian=world.outsider, student=world.student_a, institution=world.school_a)
    delete_page = reverse("admin:classrooms_guardianship_delete", args=[link.pk])
    assert as_staff_a.get(delete_page).status_code == 403  # school staff may not delete: nothing was shown
    assert not of_student(world.student_a, additional_data__purpose="admin.delete_view")
    as_staff_a.force_login(factories.user("root", superuser=True))
    assert as_staff_a.get(delete_page).status_code == 200
    entry = of_student(world.student_a, additional_data__purpose="admin.delete_view")[0]
    assert (entry.content_type.model, data(entry)["role"]) == ("guardianship", "platform_admin")


def test_admin_export_of_access_log_is_csv_formula_safe_and_recorded(as_staff_a, world):
    world.student_a.display_name = "=HYPERLINK(\"http://evil\")"
    world.student_a.save()
    audit.record_access(actor=world.teacher_a, objects=[Enrollment.objects.get(user=world.student_a)],
                        purpose="test.read", path="/x", via="page", role="teacher")
    ids = [e.pk for e in of_student(world.student_a)]
    response = as_staff_a.post(reverse("admin:compliance_accessentry_changelist"), {
        "action": "export_csv", "_selected_action": ids, "index": "0"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["time", "student_id", "student"]
    assert rows[1][2] == "'=HYPERLINK(\"http://evil\")"  # a quote in front: the spreadsheet shows, not runs
    assert rows[1][6] == "teacher_a@example.test"
    assert of_student(world.student_a, additional_data__purpose="ferpa.access_log_export")


# --- "who accessed this student's records between two dates", scoped to the staff's schools -------------------

def test_access_log_filters_by_student_and_date_range(as_staff_a, world):
    enrollment = Enrollment.objects.get(user=world.student_a)
    audit.record_access(actor=world.teacher_a, objects=[enrollment], purpose="recent", path="/p", via="page")
    LogEntry.objects.create(  # an old entry (inserts are allowed; the timestamp is the access's)
        content_type=ContentType.objects.get_for_model(Enrollment), object_pk=str(enrollment.pk),
        object_id=enrollment.pk, object_repr="x", action=LogEntry.Action.ACCESS, actor=world.teacher_a,
        timestamp=timezone.now() - dt.timedelta(days=40),
        additional_data={"student": world.student_a.pk, "institution": world.school_a.pk, "purpose": "old"})
    other = factories.user("student_a2", age=14)
    factories.enroll(world.course_a, other)
    audit.record_access(actor=world.teacher_a, objects=[Enrollment.objects.get(user=other)], purpose="recent",
                        path="/p", via="page")
    today = timezone.localdate()
    response = as_staff_a.get(reverse("admin:compliance_accessentry_changelist"), {
        "student": world.student_a.email, "from": str(today - dt.timedelta(days=7)), "to": str(today)})
    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert {e.additional_data["purpose"] for e in shown} == {"recent"}
    assert {e.additional_data["student"] for e in shown} == {world.student_a.pk}
    everything = as_staff_a.get(reverse("admin:compliance_accessentry_changelist"),
                                {"student": str(world.student_a.pk)})
    assert {e.additional_data["purpose"] for e in everything.context["cl"].result_list} == {"recent", "old"}


def test_access_log_is_scoped_to_the_staffs_institutions(client, world):
    audit.record_access(actor=world.teacher_a, objects=[Enrollment.objects.get(user=world.student_a)],
                        purpose="a", path="/p", via="page")
    audit.record_access(actor=None, objects=[Enrollment.objects.get(user=world.student_b)], purpose="b",
                        path="/p", via="task")
    client.force_login(world.staff_b)
    response = client.get(reverse("admin:compliance_accessentry_changelist"))
    assert response.status_code == 200
    assert {e.additional_data["institution"] for e in response.context["cl"].result_list} == {world.school_b.pk}
    theirs = of_student(world.student_a)[0]
    detail = client.get(reverse("admin:compliance_accessentry_change", args=[theirs.pk]))
    assert detail.status_code == 302  # another school's entry is "not found"
    # Searching for another school's student finds nothing either.
    response = client.get(reverse("admin:compliance_accessentry_changelist"), {"student": str(world.student_a.pk)})
    assert list(response.context["cl"].result_list) == []
    # The raw auditlog view (every school) is for platform operators only.
    assert client.get(reverse("admin:auditlog_logentry_changelist")).status_code == 403


# --- the API: reads and disclosures to a district client ------------------------------------------------------

class EnrollmentOut(serializers.ModelSerializer):
    class Meta:
        model = Enrollment
        fields = ["id", "user", "course", "role"]


class EnrollmentList(DistrictListView):
    """A roster endpoint built like every API view: the base class brings the FERPA hooks."""

    serializer_class = EnrollmentOut
    disclosure_categories = ("roster",)

    def get_queryset(self):
        from compliance.api.permissions import caller_scoped

        return caller_scoped(Enrollment.objects.all(), self.request).order_by("pk")


class EnrollmentDetail(DistrictDetailView):
    serializer_class = EnrollmentOut
    get_queryset = EnrollmentList.get_queryset


def _urls():
    from config.urls import urlpatterns

    return [path("api/v1/test-enrollments/", EnrollmentList.as_view()),
            path("api/v1/test-enrollments/<int:pk>/", EnrollmentDetail.as_view()), *urlpatterns]


urlpatterns = _urls()


@pytest.mark.urls("tests.compliance.test_ferpa")
def test_api_list_and_retrieve_by_district_client_record_access_and_disclosure(client, world):
    app = make_api_client(world.district)
    token = token_for(client, app)
    response = client.get("/api/v1/test-enrollments/", **bearer(token))
    assert response.status_code == 200
    students = {world.student_a.pk, world.student_b.pk}  # the district's two schools; C is another district
    listed = accesses(additional_data__purpose="api.list")
    assert {data(e)["student"] for e in listed} == students
    assert {data(e)["role"] for e in listed} == {"district_client"}
    assert {data(e)["client"] for e in listed} == {app.district_client.reference}
    assert all(e.actor is None and data(e)["via"] == "api" for e in listed)
    rows = Disclosure.objects.filter(via=Disclosure.Via.API)
    assert {d.student_id for d in rows} == students
    one = rows.get(student=world.student_a)
    assert (one.basis, one.data_categories, one.institution_id) == ("school_official", ["roster"], world.school_a.pk)
    assert app.district_client.reference in one.receiving_party

    mine = Enrollment.objects.get(user=world.student_a)
    assert client.get(f"/api/v1/test-enrollments/{mine.pk}/", **bearer(token)).status_code == 200
    assert [e.object_id for e in accesses(additional_data__purpose="api.retrieve")] == [mine.pk]
    assert Disclosure.objects.filter(student=world.student_a).count() == 2


@pytest.mark.urls("tests.compliance.test_ferpa")
def test_api_read_by_school_staff_is_an_access_not_a_disclosure(as_staff_a, world):
    assert as_staff_a.get("/api/v1/test-enrollments/").status_code == 200
    assert {data(e)["student"] for e in accesses(additional_data__purpose="api.list")} == {world.student_a.pk}
    assert not Disclosure.objects.exists()


def test_district_api_today_discloses_no_student_records(client, world):
    """Schools and courses (teacher names, a student count) carry no student records: nothing is written."""
    token = token_for(client, make_api_client(world.district))
    for url in ("/api/v1/schools/", "/api/v1/courses/", f"/api/v1/courses/{world.course_a.pk}/"):
        assert client.get(url, **bearer(token)).status_code == 200
    assert not accesses() and not Disclosure.objects.exists()


# --- pages ------------------------------------------------------------------------------------------------------

def ended_session(world) -> LiveSession:
    services.session_start(session=world.session_a, actor=world.teacher_a)
    services.session_end(session=LiveSession.objects.get(pk=world.session_a.pk), actor=world.teacher_a)
    return LiveSession.objects.get(pk=world.session_a.pk)


def test_attendance_page_and_export_record_access(client, world):
    session = ended_session(world)
    services.attendance_compute(session=session)
    record = AttendanceRecord.objects.get(session=session, user=world.student_a)
    client.force_login(world.teacher_a)
    assert client.get(reverse("session-attendance", args=[session.pk])).status_code == 200
    assert client.get(reverse("session-attendance-csv", args=[session.pk])).status_code == 200
    entries = of_student(world.student_a)
    assert [(data(e)["purpose"], data(e)["via"], data(e)["role"], e.object_id) for e in entries] == [
        ("attendance.view", "page", "teacher", record.pk), ("attendance.export", "export", "teacher", record.pk)]
    assert data(entries[0])["path"] == f"/sessions/{session.pk}/attendance/"


def test_page_path_never_carries_the_query_string(client, world):
    services.attendance_compute(session=ended_session(world))
    client.force_login(world.teacher_a)
    client.get(reverse("session-attendance", args=[world.session_a.pk]), {"access_token": "secret-token-value"})
    entry = of_student(world.student_a)[0]
    assert "secret" not in str(entry.additional_data) and "?" not in data(entry)["path"]


def test_proctor_page_records_the_roster(client, world):
    from exams.services import exam_upsert

    exam = exam_upsert(course=world.course_a, title="Quiz")
    client.force_login(world.teacher_a)
    assert client.get(reverse("exam-proctor", args=[exam.pk])).status_code == 200
    entries = accesses(additional_data__purpose="exam.proctor_roster")
    assert [data(e)["student"] for e in entries] == [world.student_a.pk]


# --- sockets ----------------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
async def test_teacher_socket_roster_is_recorded_in_one_insert_students_presence_is_not(world):
    from tests.classrooms.test_consumers import connect

    count = await database_sync_to_async(LogEntry.objects.count)()
    student, _ = await connect(world.student_a, world.session_a)
    assert await database_sync_to_async(LogEntry.objects.count)() == count  # directory information only
    teacher, snap = await connect(world.teacher_a, world.session_a)
    assert world.student_a.pk in {r["id"] for r in snap["data"]["roster"]}
    entries = await database_sync_to_async(of_student)(world.student_a)
    assert [(data(e)["purpose"], data(e)["via"], data(e)["role"]) for e in entries] == [
        ("live.roster", "websocket", "teacher")]
    assert data(entries[0])["path"] == f"/ws/v1/sessions/{world.session_a.pk}/"
    assert entries[0].actor_id == world.teacher_a.pk
    assert len({e.timestamp for e in await database_sync_to_async(accesses)()}) == 1  # one statement
    await teacher.close()
    await student.close()


@pytest.mark.django_db(transaction=True)
async def test_proctor_board_socket_records_each_attempt(world):
    from channels.testing import WebsocketCommunicator
    from django.conf import settings

    from config.asgi import application
    from exams.models import Attempt, Exam
    from exams.services import attempts_precreate, exam_upsert
    from tests.conftest import login_cookie

    def setup():
        now = timezone.now()
        exam = exam_upsert(course=world.course_a, title="Board", opens_at=now - dt.timedelta(hours=1),
                           closes_at=now + dt.timedelta(hours=1), status=Exam.Status.PUBLISHED)
        attempts_precreate(exam=exam)
        return exam, Attempt.objects.get(exam=exam, student=world.student_a), login_cookie(world.teacher_a)

    exam, attempt, cookie = await database_sync_to_async(setup)()
    comm = WebsocketCommunicator(application, f"/ws/v1/exams/{exam.pk}/proctor/", headers=[
        (b"origin", b"http://localhost:8000"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.receive_from(timeout=5)
    entries = await database_sync_to_async(accesses)(additional_data__purpose="exam.proctor_board")
    assert [(e.object_id, data(e)["student"], data(e)["role"]) for e in entries] == [
        (attempt.pk, world.student_a.pk, "teacher")]
    await comm.disconnect()


# --- tasks and commands -----------------------------------------------------------------------------------------

def test_transcript_task_records_a_system_read(world, settings, tmp_path):
    from exams import services as exam_services
    from exams.models import Attempt, Exam, Question
    from exams.tasks import transcript_generate

    settings.MEDIA_ROOT = tmp_path
    now = timezone.now()
    exam = exam_services.exam_upsert(course=world.course_a, title="T", opens_at=now - dt.timedelta(hours=1),
                                     closes_at=now + dt.timedelta(hours=1), status=Exam.Status.PUBLISHED)
    bank = exam_services.bank_create(course=world.course_a, title="B")
    question = exam_services.question_create(bank=bank, kind=Question.Kind.SINGLE, prompt="2+2",
                                             options=["3", "4"], correct=[1])
    exam_services.section_add(exam=exam, questions=[question])
    attempt = exam_services.attempt_start(exam=exam, student=world.student_a)
    exam_services.answer_save(attempt_id=attempt.pk, student=world.student_a, question_id=question.pk, value=[1],
                              version=1)
    exam_services.attempt_submit(attempt_id=attempt.pk, student=world.student_a)
    exam_services.attempts_after_close(attempt_ids=[attempt.pk])
    assert Attempt.objects.get(pk=attempt.pk).graded_at is not None
    transcript_generate(attempt.pk)
    entries = of_student(world.student_a, additional_data__purpose="transcript.generate")
    assert [(e.object_id, e.actor, data(e)["via"], data(e)["role"], data(e)["path"]) for e in entries] == [
        (attempt.pk, None, "task", "system", "exams.tasks.transcript_generate")]


def test_ferpa_record_command_prints_the_record_and_is_recorded(world):
    Disclosure.objects.create(student=world.student_a, institution=world.school_a, receiving_party="+SUM(A1)",
                              basis="emergency", legitimate_interest="ambulance", data_categories=["health"],
                              disclosed_at=timezone.now(), via="manual")
    audit.record_access(actor=world.teacher_a, objects=[Enrollment.objects.get(user=world.student_a)],
                        purpose="roster", path="/p", via="page", role="teacher")
    out = io.StringIO()
    call_command("ferpa_record", world.student_a.email, stdout=out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert [r[0] for r in rows[1:]] == ["access", "disclosure"]
    assert rows[1][2] == "teacher_a@example.test" and rows[2][2] == "'+SUM(A1)"
    entry = of_student(world.student_a, additional_data__purpose="ferpa.record_export")[0]
    assert (data(entry)["via"], data(entry)["path"], data(entry)["role"]) == (
        "command", "manage.py ferpa_record", "operator")


# --- bulk writes ---------------------------------------------------------------------------------------------------

REFUSED = sorted(label for label, policy in audit.BULK_POLICY.items() if policy == audit.REFUSE)


@pytest.mark.parametrize("label", REFUSED)
def test_bulk_writes_are_refused_on(label, world):
    from django.apps import apps

    model = apps.get_model(label)
    field = next(f for f in model._meta.concrete_fields if not f.primary_key)
    existing = list(model.objects.all()[:1])
    with pytest.raises(audit.BulkWriteRefused):
        model.objects.filter(pk__in=[o.pk for o in existing]).update(**{field.attname: F(field.attname)})
    with pytest.raises(audit.BulkWriteRefused):
        model.objects.bulk_update(existing, [field.name])
    with pytest.raises(audit.BulkWriteRefused):
        model.objects.bulk_create([])


AUDITED_UPDATES = {
    "classrooms.Course": {"title": "Renamed"},
    "classrooms.Enrollment": {"is_active": False},
    "classrooms.Membership": {"grade_level": "9"},
    "classrooms.LiveSession": {"title": "Moved"},
    "classrooms.AttendanceRecord": {"reconnects": 7},
    "compliance.DistrictAPIClient": {"name": "Renamed SIS"},
    "exams.GradeSync": {"last_error": "requeued"},
    "classrooms.ExternalIdentity": {"subject": "relinked"},
}


@pytest.mark.parametrize("label", sorted(AUDITED_UPDATES))
def test_bulk_update_is_audited_per_row_on(label, world):
    from django.apps import apps

    from exams.models import Attempt, GradeSync
    from exams.services import exam_upsert

    make_api_client(world.district)
    services.attendance_compute(session=ended_session(world))
    attempt = Attempt.objects.create(institution=world.school_a, exam=exam_upsert(course=world.course_a, title="E"),
                                     student=world.student_a, seed=1)
    GradeSync.objects.create(institution=world.school_a, attempt=attempt, student=attempt.student, idempotency_key="k",
                             payload={})
    from classrooms.models import ExternalIdentity

    ExternalIdentity.objects.create(district=world.district, user=world.student_a, kind="lti",
                                    issuer="https://lms.example", subject="s-1")
    model = apps.get_model(label)
    rows = set(model.objects.values_list("pk", flat=True))
    assert rows
    with set_actor(world.staff_a):
        assert model.objects.all().update(**AUDITED_UPDATES[label]) == len(rows)
    entries = LogEntry.objects.filter(additional_data__bulk="update",
                                      content_type=ContentType.objects.get_for_model(model))
    assert {e.object_id for e in entries} == rows
    field, value = next(iter(AUDITED_UPDATES[label].items()))
    assert {e.actor_id for e in entries} == {world.staff_a.pk}
    assert all(e.changes.get(field, [None, str(value)])[1] == str(value) for e in entries)


def test_bulk_update_on_enrollments_is_audited_per_row(world):
    rows = list(Enrollment.objects.filter(course=world.course_a))
    with set_actor(world.staff_a):
        assert world.course_a.enrollments.update(is_active=False) == len(rows)  # a related manager, too
    entries = LogEntry.objects.filter(action=LogEntry.Action.UPDATE, additional_data__bulk="update",
                                      content_type=ContentType.objects.get_for_model(Enrollment))
    assert {e.object_id for e in entries} == {r.pk for r in rows}
    assert all(e.changes["is_active"] == ["True", "False"] and e.actor == world.staff_a for e in entries)


def test_bulk_create_of_courses_and_bulk_update_of_attendance_are_audited(world):
    made = Course.objects.bulk_create([Course(institution=world.school_a, code=f"IMP-{n}", title="Imported")
                                       for n in range(3)])
    created = LogEntry.objects.filter(action=LogEntry.Action.CREATE, additional_data__bulk="bulk_create")
    assert {e.object_id for e in created} == {c.pk for c in made}
    assert next(iter(created)).changes["code"][0] == "None"

    record = services.attendance_compute(session=ended_session(world))[0]
    record.status = AttendanceRecord.Status.PRESENT
    AttendanceRecord.objects.bulk_update([record], ["status"])
    entry = LogEntry.objects.get(additional_data__bulk="bulk_update", object_id=record.pk)
    assert entry.changes["status"] == ["absent", "present"]


@pytest.mark.parametrize("model", [Enrollment, Guardianship])
def test_queryset_delete_is_audited_per_row_by_auditlog(model, world):
    if model is Guardianship:
        services.guardianship_link(guardian=world.outsider, student=world.student_a, institution=world.school_a)
    pks = set(model.objects.values_list("pk", flat=True))
    model.objects.all().delete()
    deleted = LogEntry.objects.filter(action=LogEntry.Action.DELETE,
                                      content_type=ContentType.objects.get_for_model(model))
    assert pks and {e.object_id for e in deleted} == pks


# --- tamper resistance ----------------------------------------------------------------------------------------------

def _an_entry(world):
    return audit.record_access(actor=world.staff_a, objects=[Enrollment.objects.get(user=world.student_a)],
                               purpose="p", path="/p", via="admin") and of_student(world.student_a)[0]


def _repr_of(entry) -> str:
    return f"enrollment #{entry.object_id}"


def test_the_orm_refuses_to_change_or_delete_the_trail(world):
    entry = _an_entry(world)
    entry.object_repr = "forged"
    with pytest.raises(audit.AuditTrailReadOnly):
        entry.save()
    with pytest.raises(audit.AuditTrailReadOnly), transaction.atomic():
        entry.delete()
    with pytest.raises(audit.AuditTrailReadOnly):
        LogEntry.objects.filter(pk=entry.pk).update(object_repr="forged")
    with pytest.raises(audit.AuditTrailReadOnly):
        LogEntry.objects.all().delete()
    disclosure = Disclosure.objects.create(student=world.student_a, institution=world.school_a, receiving_party="x",
                                           basis="consent", legitimate_interest="y", disclosed_at=timezone.now(),
                                           via="manual")
    with pytest.raises(audit.AuditTrailReadOnly):
        Disclosure.objects.filter(pk=disclosure.pk).update(receiving_party="z")
    with pytest.raises(audit.AuditTrailReadOnly), transaction.atomic():
        disclosure.delete()
    assert LogEntry.objects.filter(pk=entry.pk, object_repr=_repr_of(entry)).exists()


@pytest.mark.parametrize("sql", [
    "UPDATE auditlog_logentry SET object_repr = 'forged'",
    "UPDATE auditlog_logentry SET actor_id = NULL, actor_email = NULL",
    "DELETE FROM auditlog_logentry",
    "UPDATE compliance_disclosure SET receiving_party = 'forged'",
    "DELETE FROM compliance_disclosure",
])
def test_the_database_refuses_any_sql_that_changes_the_trail(sql, world):
    _an_entry(world)
    Disclosure.objects.create(student=world.student_a, institution=world.school_a, receiving_party="x",
                              basis="consent", legitimate_interest="y", disclosed_at=timezone.now(), via="manual")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql)


def test_deleting_a_person_clears_only_their_link(world):
    entry = _an_entry(world)
    disclosure = disclosures.record_manual_disclosure(
        student=world.student_a, institution_id=world.school_a.pk, party="Hospital", basis="emergency",
        interest="allergy", categories=["health"], disclosed_at=timezone.now(), actor=world.staff_a)
    world.staff_a.delete()
    entry.refresh_from_db()
    disclosure.refresh_from_db()
    assert (entry.actor_id, entry.actor_email) == (None, "staff_a@example.test")
    assert (disclosure.disclosed_by_id, disclosure.disclosed_by_name) == (None, "staff_a@example.test")
    world.student_a.delete()  # e.g. a COPPA deletion: the fact of the disclosure stays, anonymous
    disclosure.refresh_from_db()
    assert disclosure.student_id is None and disclosure.receiving_party == "Hospital"


def test_retention_purge_is_the_one_way_to_delete_and_says_so(world):
    _an_entry(world)
    disclosures.record_manual_disclosure(
        student=world.student_a, institution_id=world.school_a.pk, party="Hospital", basis="emergency",
        interest="allergy", categories=["health"], disclosed_at=timezone.now(), actor=world.staff_a)
    assert audit.audit_trail_purge(student_ids=[world.student_a.pk], reason="records disposed") == 2
    assert not of_student(world.student_a) and not Disclosure.objects.exists()
    summary = LogEntry.objects.get(additional_data__purge__reason="records disposed")
    assert summary.additional_data["purge"]["access_entries"] == 1
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM auditlog_logentry")  # the purge's permission ended with its transaction


def test_the_admin_offers_no_edit_or_delete_of_the_trail(client, world):
    root = factories.user("root", superuser=True)
    entry = _an_entry(world)
    client.force_login(root)
    for name in ("auditlog_logentry", "compliance_accessentry"):
        page = client.get(reverse(f"admin:{name}_change", args=[entry.pk]))
        assert page.status_code == 200 and b'name="_save"' not in page.content
        assert client.post(reverse(f"admin:{name}_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert LogEntry.objects.filter(pk=entry.pk).exists()


def test_sensitive_fields_are_masked_in_the_change_log(world):
    world.student_a.date_of_birth = dt.date(2013, 4, 5)
    world.student_a.save()
    entry = LogEntry.objects.get_for_object(world.student_a).filter(action=LogEntry.Action.UPDATE).latest("pk")
    assert "2013-04-05" not in str(entry.changes) and "2013-04-05" not in str(entry.serialized_data)


@pytest.mark.django_db(transaction=True)
async def test_chat_message_bodies_stay_out_of_the_audit_log(world):
    from tests.classrooms.test_consumers import connect

    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    ack = await student.request("chat.send", body="my phone number is 555-0100")
    await teacher.request("chat.delete", message_id=ack["data"]["id"], reason="personal data")
    texts = await database_sync_to_async(lambda: [str(e.changes) + str(e.serialized_data) + str(e.additional_data)
                                                   for e in LogEntry.objects.all()])()
    assert not any("555-0100" in t for t in texts)
    await teacher.close()
    await student.close()


# --- disclosures ------------------------------------------------------------------------------------------------------

def test_staff_enter_an_emergency_disclosure_and_export_a_students_record(as_staff_a, world):
    response = as_staff_a.post(reverse("admin:compliance_disclosure_add"), {
        "student": world.student_a.pk, "institution": world.school_a.pk, "receiving_party": "County EMS",
        "basis": "emergency", "legitimate_interest": "Seizure in class; EMS needed medication history",
        "data_categories": ["health"], "disclosed_at_0": str(timezone.localdate()), "disclosed_at_1": "10:00:00"})
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    disclosure = Disclosure.objects.get()
    assert (disclosure.via, disclosure.disclosed_by, disclosure.data_categories) == (
        "manual", world.staff_a, ["health"])
    export = as_staff_a.post(reverse("admin:compliance_disclosure_changelist"), {
        "action": "export_csv", "_selected_action": [disclosure.pk], "index": "0"})
    rows = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    assert rows[1][3] == "County EMS" and rows[1][8] == "staff_a@example.test"
    assert of_student(world.student_a, additional_data__purpose="ferpa.disclosure_record_export")


def test_staff_cannot_record_or_see_another_schools_disclosures(client, world):
    theirs = disclosures.record_manual_disclosure(
        student=world.student_b, institution_id=world.school_b.pk, party="Police", basis="subpoena",
        interest="court order 12", categories=["attendance"], disclosed_at=timezone.now(),
        actor=world.staff_b)
    client.force_login(world.staff_a)
    listing = client.get(reverse("admin:compliance_disclosure_changelist"))
    assert list(listing.context["cl"].result_list) == []
    response = client.post(reverse("admin:compliance_disclosure_add"), {
        "student": world.student_b.pk, "institution": world.school_b.pk, "receiving_party": "x",
        "basis": "emergency", "legitimate_interest": "y", "data_categories": ["health"],
        "disclosed_at_0": str(timezone.localdate()), "disclosed_at_1": "10:00:00"})
    assert response.status_code == 200  # the form refuses another school and its students
    district_admin = factories.user("district_admin", staff=True)
    services.district_admin_grant(user=district_admin, district=world.district)
    district_admin.groups.add(Group.objects.get(name="School staff"))
    client.force_login(district_admin)
    response = client.post(reverse("admin:compliance_disclosure_add"), {
        "student": world.student_b.pk, "institution": world.school_a.pk, "receiving_party": "x",
        "basis": "emergency", "legitimate_interest": "y", "data_categories": ["health"],
        "disclosed_at_0": str(timezone.localdate()), "disclosed_at_1": "10:00:00"})
    assert b"not a student of that school" in response.content  # both in reach, but not each other's
    assert Disclosure.objects.get() == theirs


def test_vendor_export_of_a_grade_is_recorded_once(world, settings):
    from exams.models import Attempt, GradeSync
    from exams.services import exam_upsert

    settings.AULA_LMS_GRADE_WEBHOOK = "https://lms.example.test/grades"
    exam = exam_upsert(course=world.course_a, title="E")
    attempt = Attempt.objects.create(institution=world.school_a, exam=exam, student=world.student_a, seed=1,
                                     state=Attempt.State.SUBMITTED)
    sync = GradeSync.objects.create(institution=world.school_a, attempt=attempt, student=attempt.student,
                                    idempotency_key="k1", payload={},
                                    status=GradeSync.Status.DELIVERED)
    assert disclosures.record_grade_sync(sync_id=sync.pk) == 1
    assert disclosures.record_grade_sync(sync_id=sync.pk) == 0  # a retried task records nothing new
    d = Disclosure.objects.get()
    assert (d.student, d.via, d.data_categories, d.receiving_party) == (
        world.student_a, "vendor_export", ["grades"], "LMS grade webhook (lms.example.test)")


def test_grade_delivery_task_records_the_vendor_disclosure_and_the_read_once(world, settings):
    import http.server
    import socketserver
    import threading

    from exams.models import Attempt, GradeSync
    from exams.services import exam_upsert
    from exams.tasks import grade_sync_deliver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    attempt = Attempt.objects.create(institution=world.school_a, exam=exam_upsert(course=world.course_a, title="E"),
                                     student=world.student_a, seed=1, state=Attempt.State.SUBMITTED)
    sync = GradeSync.objects.create(institution=world.school_a, attempt=attempt, student=attempt.student,
                                    idempotency_key="k2",
                                    payload={"score": "1"})
    with socketserver.TCPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        settings.AULA_LMS_GRADE_WEBHOOK = f"http://127.0.0.1:{server.server_address[1]}/grades"
        settings.AULA_LMS_GRADE_SECRET = "s" * 40
        assert grade_sync_deliver(sync.pk) == GradeSync.Status.DELIVERED
        assert grade_sync_deliver(sync.pk) == GradeSync.Status.DELIVERED  # a redelivered task
        server.shutdown()
    assert [(d.student_id, d.via, d.reference) for d in Disclosure.objects.all()] == [
        (world.student_a.pk, "vendor_export", "gradesync:k2")]
    entries = of_student(world.student_a, additional_data__purpose="lms.grade_sync")
    assert [(e.object_id, data(e)["via"], data(e)["path"]) for e in entries] == [
        (sync.pk, "task", "exams.tasks.grade_sync_deliver")]


def test_policy_tables_name_real_models():
    """A typo in a label would make its rule silently not apply."""
    from auditlog.registry import auditlog
    from django.apps import apps

    for label in [*audit.BULK_POLICY, *audit.STUDENT_RECORDS]:
        apps.get_model(label)  # raises LookupError for an unknown label
    tracked = {m._meta.label for m in auditlog.get_models()}
    assert tracked == set(audit.BULK_POLICY)  # every audited model has a chosen bulk-write policy
    assert {label for label, p in audit.BULK_POLICY.items() if p == audit.AUDIT} == set(AUDITED_UPDATES)
