"""OneRoster 1.2 rostering through the district API with real client-credentials tokens: upsert by sourcedId
(idempotent, per-district sourcedIds), retrieve, list with paging and dateLastModified filters, and the CSV
bulk import (endpoint and management command, all or nothing, per-row error report)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from classrooms.models import Course, Enrollment, Guardianship, Institution, Membership, User
from compliance.models import AcademicSession, CatalogCourse, RosterLink
from tests.compliance.test_api import assert_error, bearer, make_api_client, token_for

pytestmark = pytest.mark.django_db

OR = "/api/v1/ims/oneroster/rostering/v1p2"


@pytest.fixture
def writer(client, world):
    app = make_api_client(world.district, "sis-writer", scopes="roster.read roster.write")
    return bearer(token_for(client, app, scope="roster.read roster.write"))


@pytest.fixture
def other_writer(client, world):
    app = make_api_client(world.other_district, "other-writer", scopes="roster.read roster.write")
    return bearer(token_for(client, app, scope="roster.read roster.write"))


def put(client, auth, collection: str, sourced_id: str, singular: str, record: dict):
    return client.put(f"{OR}/{collection}/{sourced_id}", {singular: record}, content_type="application/json", **auth)


def roster_records(prefix: str = "") -> list[tuple[str, str, str, dict]]:
    """A small district roster, each record as (collection, sourcedId, singular, record)."""
    p = prefix
    return [
        ("orgs", f"{p}sch-1", "org", {"name": f"{p}North High", "type": "school", "identifier": f"{p}NH"}),
        ("academicSessions", f"{p}sy-2026", "academicSession", {
            "title": "2026-27", "type": "schoolYear", "startDate": "2026-08-15", "endDate": "2027-06-15",
            "schoolYear": 2027}),
        ("academicSessions", f"{p}t-1", "academicSession", {
            "title": "Fall 2026", "type": "term", "startDate": "2026-08-15", "endDate": "2026-12-20",
            "schoolYear": 2027, "parent": {"sourcedId": f"{p}sy-2026"}}),
        ("courses", f"{p}crs-bio", "course", {"title": "Biology", "courseCode": "BIO", "grades": ["09"],
                                              "schoolYear": {"sourcedId": f"{p}sy-2026"},
                                              "org": {"sourcedId": f"{p}sch-1"}}),
        ("classes", f"{p}cls-bio-1", "class", {"title": "Biology P1", "classCode": "BIO-1",
                                               "course": {"sourcedId": f"{p}crs-bio"},
                                               "school": {"sourcedId": f"{p}sch-1"},
                                               "terms": [{"sourcedId": f"{p}t-1"}], "location": "Lab 2"}),
        ("users", f"{p}u-teach", "user", {"username": f"{p}mfrizzle", "givenName": "Valerie", "familyName": "Frizzle",
                                          "email": f"{p}frizzle@north.test",
                                          "roles": [{"role": "teacher", "org": {"sourcedId": f"{p}sch-1"}}]}),
        ("users", f"{p}u-stu", "user", {"username": f"{p}arnold", "givenName": "Arnold", "familyName": "Perlstein",
                                        "email": f"{p}arnold@north.test", "identifier": "S-1001", "grades": ["09"],
                                        "roles": [{"role": "student", "org": {"sourcedId": f"{p}sch-1"}}]}),
        ("users", f"{p}u-par", "user", {"username": f"{p}mrsp", "givenName": "Pat", "familyName": "Perlstein",
                                        "email": f"{p}pat@home.test", "agents": [{"sourcedId": f"{p}u-stu"}],
                                        "roles": [{"role": "parent", "org": {"sourcedId": f"{p}sch-1"}}]}),
        ("enrollments", f"{p}e-1", "enrollment", {"role": "teacher", "primary": True,
                                                  "class": {"sourcedId": f"{p}cls-bio-1"},
                                                  "user": {"sourcedId": f"{p}u-teach"},
                                                  "school": {"sourcedId": f"{p}sch-1"}}),
        ("enrollments", f"{p}e-2", "enrollment", {"role": "student", "beginDate": "2026-08-20",
                                                  "class": {"sourcedId": f"{p}cls-bio-1"},
                                                  "user": {"sourcedId": f"{p}u-stu"},
                                                  "school": {"sourcedId": f"{p}sch-1"}}),
    ]


def load_roster(client, auth, prefix: str = "") -> None:
    for collection, sid, singular, record in roster_records(prefix):
        response = put(client, auth, collection, sid, singular, record)
        assert response.status_code == 201, (collection, sid, response.content)


def counts() -> dict:
    return {m.__name__: m.objects.count() for m in (Institution, AcademicSession, CatalogCourse, Course, User,
                                                    Membership, Guardianship, Enrollment, RosterLink)}


# --- upsert by sourcedId -----------------------------------------------------------------------------------------


def test_rest_upsert_builds_the_roster_and_reads_back_in_oneroster_shape(client, world, writer):
    load_roster(client, writer)
    school = Institution.objects.get(name="North High")
    assert school.district == world.district
    user = client.get(f"{OR}/users/u-stu", **writer).json()["user"]
    assert user["sourcedId"] == "u-stu"
    assert (user["givenName"], user["familyName"], user["email"]) == ("Arnold", "Perlstein", "arnold@north.test")
    assert user["identifier"] == "S-1001" and user["grades"] == ["09"]
    assert user["roles"] == [{"roleType": "primary", "role": "student",
                              "org": {"href": f"{OR}/orgs/sch-1", "sourcedId": "sch-1", "type": "org"}}]
    assert [a["sourcedId"] for a in user["agents"]] == ["u-par"]
    parent = client.get(f"{OR}/users/u-par", **writer).json()["user"]
    assert parent["roles"][0]["role"] == "parent"
    assert [a["sourcedId"] for a in parent["agents"]] == ["u-stu"]
    klass = client.get(f"{OR}/classes/cls-bio-1", **writer).json()["class"]
    assert klass["classCode"] == "BIO-1" and klass["location"] == "Lab 2"
    assert klass["course"]["sourcedId"] == "crs-bio" and klass["school"]["sourcedId"] == "sch-1"
    assert [t["sourcedId"] for t in klass["terms"]] == ["t-1"]
    course = Course.objects.get(code="BIO-1")
    assert course.institution == school and course.term == "Fall 2026"
    enrollment = client.get(f"{OR}/enrollments/e-2", **writer).json()["enrollment"]
    assert enrollment["class"]["sourcedId"] == "cls-bio-1" and enrollment["user"]["sourcedId"] == "u-stu"
    assert enrollment["role"] == "student" and enrollment["beginDate"] == "2026-08-20"
    term = client.get(f"{OR}/academicSessions/t-1", **writer).json()["academicSession"]
    assert term["parent"]["sourcedId"] == "sy-2026" and term["schoolYear"] == "2027"
    catalog = client.get(f"{OR}/courses/crs-bio", **writer).json()["course"]
    assert catalog["org"]["sourcedId"] == "sch-1" and catalog["courseCode"] == "BIO"
    district = client.get(f"{OR}/orgs", **writer).json()["orgs"][0]
    assert district["type"] == "district" and "sch-1" in [c["sourcedId"] for c in district["children"]]
    alone = client.get(f"{OR}/orgs/aula-district-{world.district.pk}", **writer).json()["org"]
    assert alone["children"] == district["children"]


def test_upsert_is_idempotent(client, world, writer):
    load_roster(client, writer)
    before = counts()
    stamps = {u.pk: u.updated_at for u in User.objects.all()}
    for collection, sid, singular, record in roster_records():
        response = put(client, writer, collection, sid, singular, record)
        assert response.status_code == 200, (sid, response.content)
    assert counts() == before
    assert {u.pk: u.updated_at for u in User.objects.all()} == stamps  # nothing was even re-saved


def test_upsert_updates_and_deletes(client, world, writer):
    load_roster(client, writer)
    record = dict(roster_records()[5][3], givenName="Val")
    assert put(client, writer, "users", "u-teach", "user", record).status_code == 200
    assert User.objects.get(email="frizzle@north.test").first_name == "Val"
    drop = dict(roster_records()[9][3], status="tobedeleted")
    assert put(client, writer, "enrollments", "e-2", "enrollment", drop).status_code == 200
    assert client.get(f"{OR}/enrollments/e-2", **writer).json()["enrollment"]["status"] == "tobedeleted"
    assert not Enrollment.objects.get(user__email="arnold@north.test").is_active


def test_same_sourced_id_in_two_districts_are_two_rows(client, world, writer, other_writer):
    load_roster(client, writer)
    # The other district's SIS uses the same sourcedIds for its own people and school.
    for collection, sid, singular, record in roster_records():
        record = {**record}
        if singular == "user":
            record["email"] = "b-" + record["email"]
            record["username"] = "b-" + record["username"]
        if singular == "org":
            record["name"] = "South High"
        response = put(client, other_writer, collection, sid, singular, record)
        assert response.status_code == 201, (sid, response.content)
    mine = client.get(f"{OR}/users/u-stu", **writer).json()["user"]
    theirs = client.get(f"{OR}/users/u-stu", **other_writer).json()["user"]
    assert mine["email"] == "arnold@north.test" and theirs["email"] == "b-arnold@north.test"
    south = Institution.objects.get(name="South High")
    assert south.district == world.other_district
    assert Institution.objects.get(name="North High").district == world.district


def test_email_of_another_districts_person_is_refused_and_left_alone(client, world, writer):
    load_roster(client, writer, prefix="")
    record = dict(roster_records()[6][3], email=world.student_c.email, givenName="Hijacked")
    response = put(client, writer, "users", "u-new", "user", record)
    error = assert_error(response, 400, "invalid")
    assert "email" in error["details"]
    world.student_c.refresh_from_db()
    assert world.student_c.first_name != "Hijacked"
    assert not RosterLink.objects.filter(sourced_id="u-new").exists()


def test_references_to_another_districts_rows_are_unknown(client, world, writer, other_writer):
    load_roster(client, writer)
    # The other district refers to this district's school and class by their sourcedIds: unknown there.
    record = dict(roster_records()[4][3])
    response = put(client, other_writer, "classes", "cls-x", "class", record)
    assert_error(response, 400, "invalid")
    school_c_ref = {"sourcedId": f"aula-org-{world.school_a.pk}"}
    record = {"title": "X", "course": {"sourcedId": "crs-bio"}, "school": school_c_ref}
    assert_error(put(client, other_writer, "classes", "cls-y", "class", record), 400, "invalid")
    assert not Course.objects.filter(title="X").exists()


def test_write_needs_roster_write(client, world):
    app = make_api_client(world.district, "reader", scopes="roster.read")
    auth = bearer(token_for(client, app))
    _, sid, singular, record = roster_records()[0]
    assert_error(put(client, auth, "orgs", sid, singular, record), 403, "permission_denied")
    assert not Institution.objects.filter(name="North High").exists()


@pytest.mark.parametrize(("collection", "singular", "record", "field"), [
    ("orgs", "org", {"name": "X", "type": "state"}, "type"),
    ("academicSessions", "academicSession", {"title": "T", "type": "term", "startDate": "2026-09-01",
                                             "endDate": "2026-08-01", "schoolYear": 2027}, "endDate"),
    ("users", "user", {"username": "x", "givenName": "X", "familyName": "Y", "email": "not-an-email",
                       "roles": []}, "email"),
    ("enrollments", "enrollment", {"role": "student", "class": {"sourcedId": "nope"},
                                   "user": {"sourcedId": "nope"}, "school": {"sourcedId": "nope"}}, "class"),
])
def test_invalid_records_are_a_400_with_field_details(client, writer, collection, singular, record, field):
    error = assert_error(put(client, writer, collection, "x-1", singular, record), 400, "invalid")
    assert field in error["details"]


def test_aula_prefix_is_reserved(client, writer):
    _, _, singular, record = roster_records()[0]
    assert_error(put(client, writer, "orgs", "aula-org-999999", singular, record), 400, "invalid")


def test_body_must_be_wrapped(client, writer):
    response = client.put(f"{OR}/orgs/s-1", {"name": "X", "type": "school"}, content_type="application/json",
                          **writer)
    assert "org" in assert_error(response, 400, "invalid")["details"]


# --- read: retrieve, list, paging, filters -------------------------------------------------------------------------


def test_aula_rows_without_a_sourced_id_get_an_aula_one(client, world, writer):
    response = client.get(f"{OR}/classes", **writer)
    assert response.status_code == 200
    codes = {c["classCode"]: c["sourcedId"] for c in response.json()["classes"]}
    assert codes == {"SCI-A": f"aula-class-{world.course_a.pk}", "SCI-B": f"aula-class-{world.course_b.pk}"}
    one = client.get(f"{OR}/classes/aula-class-{world.course_a.pk}", **writer).json()["class"]
    assert one["title"] == world.course_a.title


def test_another_districts_rows_are_not_found_by_sourced_id(client, world, writer):
    for collection, pk in (("classes", world.course_c.pk), ("orgs", world.school_c.pk),
                           ("users", world.student_c.pk)):
        kind = {"classes": "class", "orgs": "org", "users": "user"}[collection]
        assert_error(client.get(f"{OR}/{collection}/aula-{kind}-{pk}", **writer), 404, "not_found")


def test_list_paging_with_total_count(client, world, writer):
    load_roster(client, writer)
    first = client.get(f"{OR}/users", {"limit": 2}, **writer)
    total = int(first["X-Total-Count"])
    assert total == len(client.get(f"{OR}/users", {"limit": 1000}, **writer).json()["users"])
    assert 'rel="next"' in first["Link"]
    seen = []
    for offset in range(0, total, 2):
        seen += [u["sourcedId"] for u in client.get(f"{OR}/users", {"limit": 2, "offset": offset},
                                                     **writer).json()["users"]]
    assert len(seen) == len(set(seen)) == total
    assert world.student_c.email not in str(seen)


def test_date_last_modified_filter(client, world, writer):
    load_roster(client, writer)
    old = timezone.now() - dt.timedelta(days=30)
    with connection.cursor() as cur:  # test setup: age the rows (bulk ORM writes on users are refused)
        cur.execute("UPDATE classrooms_user SET updated_at = %s WHERE email <> 'arnold@north.test'", [old])
    RosterLink.objects.update(updated_at=old)
    since = (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = client.get(f"{OR}/users", {"filter": f"dateLastModified>'{since}'"}, **writer)
    assert [u["sourcedId"] for u in response.json()["users"]] == ["u-stu"]
    # A change to a OneRoster-only field (held in the roster link) moves dateLastModified too.
    assert put(client, writer, "users", "u-par", "user", dict(roster_records()[7][3], identifier="P-9")
               ).status_code == 200
    response = client.get(f"{OR}/users", {"filter": f"dateLastModified>'{since}'", "sort": "dateLastModified"},
                          **writer)
    assert [u["sourcedId"] for u in response.json()["users"]] == ["u-stu", "u-par"]
    day = (timezone.now() - dt.timedelta(days=1)).date().isoformat()
    both = f"dateLastModified>='{day}' AND dateLastModified<'2999-01-01'"
    assert len(client.get(f"{OR}/users", {"filter": both}, **writer).json()["users"]) == 2


@pytest.mark.parametrize("expression", ["status='active'", "dateLastModified>yesterday",
                                        "dateLastModified~'2026-01-01'", "dateLastModified>'tomorrow'"])
def test_bad_filters_are_a_400(client, writer, expression):
    error = assert_error(client.get(f"{OR}/users", {"filter": expression}, **writer), 400, "invalid")
    assert "filter" in error["details"]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "abc"}, {"offset": "-1"}, {"sort": "email"},
                                    {"orderBy": "up"}])
def test_bad_paging_and_sorting_are_a_400(client, writer, params):
    assert_error(client.get(f"{OR}/enrollments", params, **writer), 400, "invalid")


def test_signed_in_staff_cannot_use_oneroster(client, world):
    client.force_login(world.staff_a)
    assert_error(client.get(f"{OR}/users"), 403, "permission_denied")


# --- CSV bulk import ------------------------------------------------------------------------------------------------

CSV = {
    "orgs.csv": [["sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId"],
                 ["sch-9", "active", "", "Lakeside", "school", "LS", ""]],
    "academicSessions.csv": [["sourcedId", "status", "dateLastModified", "title", "type", "startDate", "endDate",
                              "parentSourcedId", "schoolYear"],
                             ["t-9", "active", "", "Spring", "term", "2027-01-05", "2027-06-01", "", "2027"]],
    "courses.csv": [["sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title", "courseCode",
                     "grades", "orgSourcedId", "subjects"],
                    ["c-9", "active", "", "", "Chemistry", "CHEM", "10,11", "sch-9", "science"]],
    "classes.csv": [["sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId", "classCode",
                     "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects"],
                    ["k-9", "active", "", "Chem P3", "10", "c-9", "CHEM-3", "scheduled", "", "sch-9", "t-9", ""]],
    "users.csv": [["sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role", "username",
                   "givenName", "familyName", "middleName", "identifier", "email", "agentSourcedIds", "grades"],
                  ["p-1", "active", "", "true", "sch-9", "student", "lisa", "Lisa", "Simpson", "", "S-9",
                   "lisa@lake.test", "", "10"],
                  ["p-2", "active", "", "true", "sch-9", "teacher", "hoover", "Elizabeth", "Hoover", "", "",
                   "hoover@lake.test", "", ""]],
    "enrollments.csv": [["sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
                         "userSourcedId", "role", "primary", "beginDate", "endDate"],
                        ["n-1", "active", "", "k-9", "sch-9", "p-1", "student", "false", "", ""],
                        ["n-2", "active", "", "k-9", "sch-9", "p-2", "teacher", "true", "", ""]],
}


def csv_zip(files: dict[str, list[list[str]]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, rows in files.items():
            text = io.StringIO()
            csv.writer(text).writerows(rows)
            bundle.writestr(name, text.getvalue())
    return out.getvalue()


def upload(client, auth, archive: bytes):
    return client.post(f"{OR}/import", {"file": io.BytesIO(archive)}, **auth)


def test_csv_import_applies_every_file_and_is_idempotent(client, world, writer):
    response = upload(client, writer, csv_zip(CSV))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["applied"] is True and body["errors"] == []
    assert body["created"] == {"orgs.csv": 1, "academicSessions.csv": 1, "courses.csv": 1, "classes.csv": 1,
                               "users.csv": 2, "enrollments.csv": 2}
    lisa = client.get(f"{OR}/users/p-1", **writer).json()["user"]
    assert lisa["roles"][0]["org"]["sourcedId"] == "sch-9" and lisa["identifier"] == "S-9"
    assert Enrollment.objects.filter(course__code="CHEM-3", is_active=True).count() == 2
    before = counts()
    again = upload(client, writer, csv_zip(CSV)).json()
    assert again["applied"] and sum(again["created"].values()) == 0 and sum(again["updated"].values()) == 8
    assert counts() == before


def test_csv_import_is_all_or_nothing_with_a_per_row_report(client, world, writer):
    files = {k: [list(r) for r in v] for k, v in CSV.items()}
    files["users.csv"].append(["p-3", "active", "", "true", "sch-9", "student", "bart", "Bart", "Simpson", "", "",
                               "not-an-email", "", ""])
    files["enrollments.csv"].append(["n-3", "active", "", "k-404", "sch-9", "p-1", "student", "false", "", ""])
    before = counts()
    response = upload(client, writer, csv_zip(files))
    error = assert_error(response, 400, "invalid")
    assert error["details"]["applied"] is False
    rows = {(e["file"], e["line"], e["sourcedId"]): e["errors"] for e in error["details"]["errors"]}
    assert set(rows) == {("users.csv", 4, "p-3"), ("enrollments.csv", 4, "n-3")}
    assert "email" in rows[("users.csv", 4, "p-3")]
    assert "class" in rows[("enrollments.csv", 4, "n-3")]
    assert counts() == before  # the valid rows were rolled back too


def test_csv_import_refuses_what_is_not_a_oneroster_zip(client, writer):
    assert_error(upload(client, writer, b"not a zip"), 400, "invalid")
    assert_error(upload(client, writer, csv_zip({"grades.csv": [["a"], ["b"]]})), 400, "invalid")
    no_header = csv_zip({"orgs.csv": [["name"], ["x"]]})
    error = assert_error(upload(client, writer, no_header), 400, "invalid")
    assert error["details"]["errors"][0]["file"] == "orgs.csv"


def test_csv_import_needs_roster_write(client, world):
    auth = bearer(token_for(client, make_api_client(world.district, "reader", scopes="roster.read")))
    assert_error(upload(client, auth, csv_zip(CSV)), 403, "permission_denied")


def test_roster_import_command(world, tmp_path, capsys):
    archive = tmp_path / "roster.zip"
    archive.write_bytes(csv_zip(CSV))
    call_command("roster_import", world.district.slug, str(archive))
    assert Course.objects.filter(code="CHEM-3", institution__district=world.district).exists()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(csv_zip({"orgs.csv": [CSV["orgs.csv"][0], ["sch-x", "active", "", "", "moon", "", ""]]}))
    with pytest.raises(CommandError, match="1 error"):
        call_command("roster_import", world.district.slug, str(broken))
    assert '"line": 2' in capsys.readouterr().out


def test_csv_import_takes_guardians_before_their_children_in_the_file(client, world, writer):
    files = {k: [list(r) for r in v] for k, v in CSV.items() if k in {"orgs.csv", "users.csv"}}
    header, *people = files["users.csv"]
    guardian = ["p-9", "active", "", "true", "sch-9", "parent", "marge", "Marge", "Simpson", "", "",
                "marge@lake.test", "p-1", ""]
    files["users.csv"] = [header, guardian, *people]
    response = upload(client, writer, csv_zip(files))
    assert response.status_code == 200, response.content
    marge = client.get(f"{OR}/users/p-9", **writer).json()["user"]
    assert [a["sourcedId"] for a in marge["agents"]] == ["p-1"] and marge["roles"][0]["role"] == "parent"
    assert Guardianship.objects.filter(guardian__email="marge@lake.test", student__email="lisa@lake.test").exists()
