"""The isolation matrix of the district API, generated from the URL router and the OpenAPI schema.

Two districts hold the same kinds of rows (and the same SIS sourcedIds). For every API operation, the caller
of one district tries the other district's ids: in the path (detail and nested routes), in every id filter,
with every sort order, and in write relations. Expected: 404, 400 or refusal, and no row, name or count of
the other district in any response. A route the matrix does not know how to exercise fails the test.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pytest
from auditlog.models import LogEntry
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from classrooms import services as classroom_services
from compliance import district_data
from compliance.api.base import DistrictAPIView
from compliance.models import DistrictExport, RosterLink
from exams import services as exam_services
from exams.models import Exam, Question
from tests.compliance.test_api import bearer, make_api_client, token_for
from tests.compliance.test_oneroster import csv_zip, put, roster_records

pytestmark = pytest.mark.django_db

MARK = "zqx"  # in every name, title and email of the other district: must never appear in a response
OR = "/api/v1/ims/oneroster/rostering/v1p2"

# Session-authenticated student endpoints of the exam player (not district API views): their isolation is
# tested in tests/exams (another student's or school's attempt is 404).
NOT_DISTRICT_API = {"api-attempt", "api-attempt-answer", "api-attempt-submit", "api-attempt-event",
                    # Aggregates, not records: scoped by analytics.selectors.stream_for / session_for (the
                    # class side accepts district clients through the same scoping); isolation is tested in
                    # tests/analytics/test_api.py.
                    "api-analytics-stream", "api-analytics-session", "api-analytics-pipeline"}


def district_rows(world, course, student, writer_auth, client, *, mark: str, conly: bool):
    """One district's rows of every resource the API serves."""
    rows = {}
    for collection, sid, singular, record in roster_records():
        record = json.loads(json.dumps(record).replace("@", f"{mark}@").replace('"North', f'"{mark} North'))
        if singular == "user":
            record["username"] = f"{mark}{record['username']}"
            record["givenName"] = f"{mark}{record['givenName']}"
        response = put(client, writer_auth, collection, sid, singular, record)
        assert response.status_code == 201, response.content
    if conly:  # rows whose sourcedIds only the other district has
        for collection, sid, singular, record in roster_records("conly-"):
            record = json.loads(json.dumps(record).replace("@", f"{MARK}@").replace('"conly-North',
                                                                                    f'"{MARK} North'))
            if singular == "user":
                record["username"], record["givenName"] = f"{MARK}{record['username']}", f"{MARK}x"
            assert put(client, writer_auth, collection, sid, singular, record).status_code == 201
    now = timezone.now()
    exam = exam_services.exam_upsert(course=course, title=f"{mark} exam", opens_at=now - dt.timedelta(hours=1),
                                     closes_at=now + dt.timedelta(hours=2), status=Exam.Status.PUBLISHED)
    bank = exam_services.bank_create(course=course, title=f"{mark} bank")
    question = exam_services.question_create(bank=bank, kind=Question.Kind.SINGLE, prompt="1+1", options=["1", "2"],
                                             correct=[1])
    exam_services.section_add(exam=exam, questions=[question])
    attempt = exam_services.attempt_start(exam=exam, student=student)
    attempt = exam_services.attempt_submit(attempt_id=attempt.pk, student=student)
    session = classroom_services.live_session_upsert(course=course, title=f"{mark} live")
    t0 = (now - dt.timedelta(hours=1)).timestamp()
    classroom_services.attendance_interval_record(session_id=session.pk, user_id=student.pk, conn_id=f"{mark}-c1",
                                                  joined_at=t0, left_at=t0 + 1800)
    classroom_services.attendance_compute(session=session)
    LogEntry.objects.log_create(student, force_log=True, action=LogEntry.Action.ACCESS, changes={},
                                additional_data={"purpose": f"{mark} purpose"})
    rows.update(course=course, student=student, exam=exam, attempt=attempt, session=session)
    return rows


@pytest.fixture
def matrix(client, world):
    own_app = make_api_client(world.district, "own", scopes="roster.read roster.write results.read audit.read "
                                                            "district.export")
    other_app = make_api_client(world.other_district, "other", scopes="roster.read roster.write results.read "
                                                                      "audit.read district.export")
    scopes = "roster.read roster.write results.read audit.read district.export"
    own = bearer(token_for(client, own_app, scope=scopes))
    other = bearer(token_for(client, other_app, scope=scopes))
    mine = district_rows(world, world.course_a, world.student_a, own, client, mark="own", conly=False)
    theirs = district_rows(world, world.course_c, world.student_c, other, client, mark=MARK, conly=True)
    for auth, district in ((own, world.district), (other, world.other_district)):
        response = client.post("/api/v1/exports/", **auth)
        assert response.status_code == 202
        district_data.district_export_build(export_id=response.json()["id"])
    theirs["export"] = DistrictExport.objects.get(district=world.other_district)
    mine["export"] = DistrictExport.objects.get(district=world.district)
    # Rename the other district's Aula-made rows so every one of them carries the mark.
    world.school_c.name = f"{MARK} school"
    classroom_services.institution_save(institution=world.school_c)
    world.course_c.title = f"{MARK} course"
    classroom_services.course_save(course=world.course_c)
    classroom_services.user_upsert(email=world.student_c.email, first_name=f"{MARK}student",
                                   date_of_birth=world.student_c.date_of_birth)
    return {"own": own, "theirs": theirs, "mine": mine}


def clean(response) -> None:
    """Nothing of the other district in the body or the headers."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = (body.decode("utf-8", "replace") + " " + " ".join(f"{k}: {v}" for k, v in response.items())).lower()
    assert MARK not in text, text[:2000]


def refused(response) -> bool:
    return response.status_code in {400, 403, 404}


def foreign_sourced_ids(world, theirs) -> dict[str, list[str]]:
    """SourcedIds that name the other district's rows: its Aula-made ids and ids only its SIS sent."""
    links = RosterLink.objects.filter(district=world.other_district)
    by_kind = {k: [link.sourced_id for link in links.filter(kind=k, sourced_id__startswith="conly-")]
               for k in ("org", "class", "user", "enrollment")}
    return {
        "orgs": [f"aula-org-{world.school_c.pk}", f"aula-district-{world.other_district.pk}", *by_kind["org"]],
        "academicSessions": ["conly-sy-2026", "conly-t-1"],
        "courses": ["conly-crs-bio"],
        "classes": [f"aula-class-{world.course_c.pk}", *by_kind["class"]],
        "users": [f"aula-user-{world.student_c.pk}", *by_kind["user"]],
        "enrollments": [f"aula-enrollment-{e}" for e in
                        world.course_c.enrollments.values_list("pk", flat=True)] + by_kind["enrollment"],
    }


def api_routes() -> dict[str, str]:
    """Every /api/v1/ route of the URL router: {route name: pattern}."""
    found = {}

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and (prefix + str(p.pattern)).startswith("api/v1/") and p.name:
                found[p.name] = prefix + str(p.pattern)
    walk(get_resolver().url_patterns)
    return found


def operations() -> list[tuple[str, str, dict]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]


def test_every_api_route_is_a_district_api_view_in_the_matrix():
    routes = api_routes()
    assert routes, "no API routes found"
    for name in sorted(routes):
        if name in NOT_DISTRICT_API or name in {"api-schema", "api-docs"}:
            continue
        view = get_resolver().resolve("/" + re.sub(r"<[^>]+>", "1", routes[name])).func.view_class
        assert issubclass(view, DistrictAPIView), f"{name}: not on the district API base (scope, audit hook)"


def test_path_ids_of_another_district_are_not_found(client, world, matrix):
    theirs, own = matrix["theirs"], matrix["own"]
    foreign_pk = {"/api/v1/schools/{id}/": world.school_c.pk, "/api/v1/courses/{id}/": world.course_c.pk,
                  "/api/v1/sessions/{id}/": theirs["session"].pk,
                  "/api/v1/sessions/{id}/attendance/": theirs["session"].pk,
                  "/api/v1/exports/{id}/": theirs["export"].pk, "/api/v1/exports/{id}/download/": theirs["export"].pk,
                  "/api/v1/analytics/sessions/{object_id}/": theirs["session"].pk}
    sourced = foreign_sourced_ids(world, theirs)
    tried = 0
    for path, method, op in operations():
        if method != "get" or "{" not in path or op["operationId"].startswith(("attempts", "analytics_streams")):
            continue  # a student's own attempt; a creator's stream (not district data)
        if "{sourced_id}" in path:
            collection = path.split("/")[-2]
            assert sourced[collection], path
            for sid in sourced[collection]:
                response = client.get(path.replace("{sourced_id}", sid), **own)
                assert response.status_code == 404, (path, sid, response.content)
                clean(response)
                tried += 1
            continue
        assert path in foreign_pk, f"{path}: add the other district's id for this route to the matrix"
        response = client.get(re.sub(r"\{(id|object_id)\}", str(foreign_pk[path]), path), **own)
        assert response.status_code == 404, (path, response.content)
        clean(response)
        tried += 1
    assert tried >= 20


def test_shared_sourced_ids_resolve_to_the_callers_own_rows(client, world, matrix):
    for collection, sid, singular, _ in roster_records():
        response = client.get(f"{OR}/{collection}/{sid}", **matrix["own"])
        assert response.status_code == 200, (collection, sid)
        clean(response)


def test_lists_filters_and_sorting_never_show_another_district(client, world, matrix):
    theirs, own = matrix["theirs"], matrix["own"]
    foreign_filter = {"course": world.course_c.pk, "school": world.school_c.pk, "exam": theirs["exam"].pk,
                      "student": world.student_c.pk}
    tried = 0
    for path, method, op in operations():
        if method != "get" or "{" in path or op["operationId"].startswith(("attempts", "analytics")) or \
                "schema" in path:
            continue  # analytics/pipeline is for platform operators; slices are tested with path ids
        params = op.get("parameters", [])
        baseline = client.get(path, **own)
        assert baseline.status_code == 200, (path, baseline.content)
        clean(baseline)
        for param in params:
            name, schema = param["name"], param.get("schema", {})
            if name in {"cursor", "limit", "offset"}:
                continue
            if schema.get("type") == "integer":
                assert name in foreign_filter, f"{path}?{name}: add the other district's id to the matrix"
                response = client.get(path, {name: foreign_filter[name]}, **own)
                assert response.status_code == 200 or refused(response), (path, name)
                clean(response)
                if response.status_code == 200:
                    body = response.json()
                    rows = body.get("results", next((v for v in body.values() if isinstance(v, list)), []))
                    assert rows == [], (path, name, rows)
                    assert response.get("X-Total-Count", "0") == "0"
            elif "enum" in schema:
                for value in schema["enum"]:
                    response = client.get(path, {name: value}, **own)
                    assert response.status_code == 200, (path, name, value)
                    clean(response)
            elif name == "filter":
                response = client.get(path, {name: "dateLastModified>'2000-01-01'"}, **own)
                assert response.status_code == 200
                clean(response)
                assert response["X-Total-Count"] == baseline["X-Total-Count"]  # the count is the caller's own
            elif schema.get("format") == "date-time" or name in {"updated_since"}:
                response = client.get(path, {name: "2000-01-01T00:00:00Z"}, **own)
                assert response.status_code == 200, (path, name)
                clean(response)
            else:
                pytest.fail(f"{path}?{name}: the matrix does not know how to try this parameter")
            tried += 1
    assert tried >= 15


def test_write_relations_to_another_district_are_refused(client, world, matrix):
    own = matrix["own"]
    before = {link.pk: (link.sourced_id, link.object_id, link.updated_at)
              for link in RosterLink.objects.filter(district=world.other_district)}
    sourced = foreign_sourced_ids(world, matrix["theirs"])
    tried = 0
    for path, method, _ in operations():
        if method != "put":
            continue
        collection = path.split("/")[-2]
        singular = next(s for c, _, s, _ in roster_records() if c == collection)
        # Every relation points at rows only the other district has: unknown here.
        records = [r for c, _, _, r in roster_records("conly-") if c == collection and "conly-" in json.dumps(r)]
        if collection == "orgs":
            records = [dict(r, parent={"sourcedId": f"aula-district-{world.other_district.pk}"})
                       for c, _, _, r in roster_records() if c == collection]
        assert records, collection
        for record in records:
            response = put(client, own, collection, f"new-{collection}", singular, record)
            assert response.status_code == 400, (path, response.content)
            clean(response)
            tried += 1
        # Another district's Aula-made rows cannot be addressed (or adopted) by their sourcedId.
        for sid in sourced[collection]:
            if sid.startswith("aula-"):
                own_record = next(r for c, _, s, r in roster_records() if c == collection)
                response = put(client, own, collection, sid, singular, own_record)
                assert response.status_code == 400, (path, sid, response.content)
                clean(response)
                tried += 1
    archive = csv_zip({"enrollments.csv": [
        ["sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId", "userSourcedId", "role"],
        ["x-1", "active", "", "conly-cls-bio-1", "conly-sch-1", "conly-u-stu", "student"]]})
    response = client.post(f"{OR}/import", {"file": io.BytesIO(archive)}, **own)
    assert response.status_code == 400
    clean(response)
    after = {link.pk: (link.sourced_id, link.object_id, link.updated_at)
             for link in RosterLink.objects.filter(district=world.other_district)}
    assert after == before
    world.school_c.refresh_from_db()
    world.course_c.refresh_from_db()
    assert world.school_c.name == f"{MARK} school" and world.course_c.title == f"{MARK} course"
    assert tried >= 8


def test_signed_in_staff_see_only_their_school_on_every_list(client, world, matrix):
    client.force_login(world.staff_a)
    for path, method, op in operations():
        if method != "get" or "{" in path or op["operationId"].startswith(("attempts", "analytics")) or \
                "schema" in path:
            continue  # analytics/pipeline is for platform operators; slices are tested with path ids
        response = client.get(path)
        assert response.status_code in {200, 403}, (path, response.content)
        clean(response)
        assert world.school_b.name not in response.content.decode()


def test_every_list_and_retrieve_passes_the_one_read_hook(client, world, matrix, monkeypatch):
    """Each record a GET returns goes through DistrictAPIView.records_read exactly once (where the FERPA
    access audit hooks in): checked on every GET operation of the schema."""
    seen: list = []
    monkeypatch.setattr(DistrictAPIView, "records_read", lambda self, records, **kw: seen.append(list(records)))
    mine = matrix["mine"]
    tried = 0
    for path, method, op in operations():
        if method != "get" or op["operationId"].startswith(("attempts", "analytics")) or "schema" in path:
            continue  # analytics are aggregates, not records: no FERPA read to audit
        url = path
        if "{sourced_id}" in path:
            collection = path.split("/")[-2]
            url = path.replace("{sourced_id}", next(sid for c, sid, _, _ in roster_records() if c == collection))
        elif "{id}" in path:
            target = {"schools": world.school_a, "courses": world.course_a, "sessions": mine["session"],
                      "exports": mine["export"]}[path.split("/")[3]]
            url = path.replace("{id}", str(target.pk))
        seen.clear()
        response = client.get(url, **matrix["own"])
        assert response.status_code == 200, (url, response.content)
        if response.streaming:
            b"".join(response.streaming_content)
        assert len(seen) == 1, (url, seen)
        body = {} if response.streaming else response.json()
        listed = body.get("results", next((v for v in body.values() if isinstance(v, list)), None))
        if listed is not None and len(body) <= 3:
            assert len(seen[0]) == len(listed), url
        else:
            assert len(seen[0]) == 1, url
        tried += 1
    assert tried >= 20
