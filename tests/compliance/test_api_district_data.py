"""District data export (API + Celery job + download) and disposition (command + certificate), each tested
with two districts: the export holds every row of its district and none of the other; the disposition deletes
one district's student data and leaves the other district untouched."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from classrooms import services as classroom_services
from classrooms.models import AttendanceRecord, Course, Enrollment, Guardianship, Membership, User
from compliance import district_data, tasks
from compliance.models import DispositionCertificate, DistrictExport
from exams.models import Attempt
from tests.compliance.test_api import assert_error, bearer, make_api_client, token_for
from tests.compliance.test_api_aula import submitted_attempt
from tests.compliance.test_oneroster import load_roster

pytestmark = pytest.mark.django_db


def activity(world, session, course, student):
    t0 = (timezone.now() - dt.timedelta(hours=1)).timestamp()
    classroom_services.attendance_interval_record(session_id=session.pk, user_id=student.pk, conn_id=f"c{session.pk}",
                                                  joined_at=t0, left_at=t0 + 600)
    classroom_services.attendance_compute(session=session)
    submitted_attempt(course, student)


@pytest.fixture
def two_districts(client, world):
    parent_c = classroom_services.user_upsert(email="parent_c@example.test", first_name="Parentc")
    classroom_services.guardianship_link(guardian=parent_c, student=world.student_c, institution=world.school_c)
    activity(world, world.session_a, world.course_a, world.student_a)
    activity(world, world.session_c, world.course_c, world.student_c)
    return world


def district_counts(district) -> dict:
    return {
        "students": Membership.objects.filter(institution__district=district, role="student").count(),
        "enrollments": Enrollment.objects.filter(institution__district=district).count(),
        "attempts": Attempt.objects.filter(institution__district=district).count(),
        "attendance": AttendanceRecord.objects.filter(institution__district=district).count(),
        "guardianships": Guardianship.objects.filter(institution__district=district).count(),
        "courses": Course.objects.filter(institution__district=district).count(),
    }


# --- export ---------------------------------------------------------------------------------------------------


def test_export_holds_all_of_the_district_and_nothing_of_the_other(client, world, two_districts,
                                                                   django_capture_on_commit_callbacks):
    app = make_api_client(world.district, "exporter", scopes="roster.read roster.write district.export")
    auth = bearer(token_for(client, app, scope="roster.read roster.write district.export"))
    load_roster(client, auth)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post("/api/v1/exports/", **auth)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending" and response.json()["download"] is None
    assert len(queued) == 1  # the job is queued after commit
    export_id = response.json()["id"]
    assert_error(client.get(f"/api/v1/exports/{export_id}/download/", **auth), 404, "not_found")

    tasks.district_export_build(export_id)  # what the worker runs; running it twice changes nothing
    first = DistrictExport.objects.get(pk=export_id)
    tasks.district_export_build(export_id)
    assert DistrictExport.objects.get(pk=export_id).file.name == first.file.name

    detail = client.get(f"/api/v1/exports/{export_id}/", **auth).json()
    assert detail["status"] == "done" and detail["download"] == f"/api/v1/exports/{export_id}/download/"
    download = client.get(detail["download"], **auth)
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == detail["sha256"]
    bundle = zipfile.ZipFile(io.BytesIO(data))
    names = set(bundle.namelist())
    assert {"orgs.csv", "academicSessions.csv", "courses.csv", "classes.csv", "users.csv", "enrollments.csv",
            "manifest.json", "aula/users.jsonl", "aula/enrollments.jsonl", "aula/exam_attempts.jsonl",
            "aula/attendance_records.jsonl", "aula/exam_answers.jsonl"} <= names
    text = "\n".join(bundle.read(n).decode() for n in names)
    for foreign in (world.student_c.email, world.school_c.slug, "parent_c@example.test", "SCI-C"):
        assert foreign not in text, foreign
    own_schools = {world.school_a.pk, world.school_b.pk, *world.district.institutions.values_list("pk", flat=True)}
    for name in names:
        if name.endswith(".jsonl"):
            for line in bundle.read(name).decode().splitlines():
                row = json.loads(line)
                if "institution_id" in row:
                    assert row["institution_id"] in own_schools, (name, row)
                assert "password" not in row
    assert detail["counts"]["exam_attempts.jsonl"] == 1
    assert detail["counts"]["enrollments.csv"] == Enrollment.objects.filter(institution__district=world.district
                                                                            ).count()
    users = bundle.read("users.csv").decode()
    assert "arnold@north.test" in users and world.student_a.email in users
    assert bundle.read("users.csv").decode().count("\n") == detail["counts"]["users.csv"] + 1


def test_export_needs_the_export_scope_and_stays_with_its_district(client, world):
    reader = bearer(token_for(client, make_api_client(world.district, "reader")))
    assert_error(client.post("/api/v1/exports/", **reader), 403, "permission_denied")
    other = make_api_client(world.other_district, "other", scopes="district.export")
    other_auth = bearer(token_for(client, other, scope="district.export"))
    export = district_data.district_export_request(district=world.district, client=None)
    district_data.district_export_build(export_id=export.pk)
    assert_error(client.get(f"/api/v1/exports/{export.pk}/", **other_auth), 404, "not_found")
    assert_error(client.get(f"/api/v1/exports/{export.pk}/download/", **other_auth), 404, "not_found")


def test_export_cells_cannot_run_as_formulas(world):
    classroom_services.user_upsert(email=world.student_a.email, first_name="=HYPERLINK(\"http://x\")",
                                   date_of_birth=world.student_a.date_of_birth)
    export = district_data.district_export_request(district=world.district, client=None)
    export = district_data.district_export_build(export_id=export.pk)
    users = zipfile.ZipFile(export.file.open("rb")).read("users.csv").decode()
    assert "'=HYPERLINK" in users and ",=HYPERLINK" not in users


# --- disposition ---------------------------------------------------------------------------------------------------


def test_disposition_deletes_one_districts_student_data_and_leaves_the_other(world, two_districts, capsys):
    other_before = district_counts(world.other_district)
    own_before = district_counts(world.district)
    assert own_before["attempts"] == 1 and own_before["attendance"] >= 1
    operator = User.objects.get(pk=world.staff_a.pk)
    call_command("district_dispose", world.district.slug, "--requested-by", "Superintendent R. Chalmers",
                 "--performed-by", operator.email, "--confirm", world.district.slug)
    printed = json.loads(capsys.readouterr().out)

    after = district_counts(world.district)
    assert after["students"] == 0 and after["attempts"] == 0 and after["attendance"] == 0
    assert not Enrollment.objects.filter(institution__district=world.district, role="student").exists()
    assert after["courses"] == own_before["courses"]  # courses and teachers stay
    assert Enrollment.objects.filter(user=world.teacher_a, course=world.course_a).exists()
    assert not User.objects.filter(pk__in=[world.student_a.pk, world.student_b.pk]).exists()
    assert district_counts(world.other_district) == other_before
    assert User.objects.filter(pk=world.student_c.pk).exists()

    certificate = DispositionCertificate.objects.get(district=world.district)
    body = certificate.certificate
    assert certificate.status == "done" and printed["sha256"] == certificate.sha256
    assert certificate.sha256 == hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
                                                ).hexdigest()
    assert body["requested_by"] == "Superintendent R. Chalmers" and body["performed_by"] == operator.email
    assert body["students"] == 2 and body["district"]["slug"] == world.district.slug
    assert body["deleted"]["exams.Attempt"] == 1 and body["deleted"]["classrooms.User"] == 2
    assert body["deleted"]["classrooms.Enrollment"] == 2
    # Running the job again changes nothing, and the certificate stays as it was.
    again = district_data.district_dispose(certificate_id=certificate.pk)
    assert again.sha256 == certificate.sha256 and again.completed_at == certificate.completed_at


def test_disposition_keeps_an_account_another_district_still_has(world):
    classroom_services.membership_grant(user=world.student_a, institution=world.school_c, role="student")
    certificate = district_data.district_disposition_request(district=world.district, requested_by="DPO",
                                                             queue=False)
    certificate = district_data.district_dispose(certificate_id=certificate.pk)
    assert User.objects.filter(pk=world.student_a.pk).exists()
    assert Membership.objects.filter(user=world.student_a, institution=world.school_c).exists()
    assert not Membership.objects.filter(user=world.student_a, institution__district=world.district).exists()
    assert certificate.certificate["accounts_kept_for_other_schools"] == 1


def test_disposition_command_needs_confirmation(world):
    with pytest.raises(CommandError, match="confirm"):
        call_command("district_dispose", world.district.slug, "--requested-by", "x", "--confirm", "wrong")
    assert not DispositionCertificate.objects.exists()
    assert Membership.objects.filter(user=world.student_a).exists()
