"""OneRoster 1.2 sync from a district's SIS against a real HTTP SIS (tests/compliance/oneroster_sis.py): first
sync, deltas, tombstones, full reconciliation, malformed records and conflicts, idempotence, resume after a
crash (a killed Celery worker, and a SIS failing mid-run), token refresh, the credential at rest and in logs,
and another district left alone."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from classrooms.models import Course, Enrollment, Membership, Role, User
from compliance import sis_sync
from compliance.models import (
    AcademicSession,
    CatalogCourse,
    RosterCsvImport,
    RosterLink,
    SisConnection,
    SisRecord,
    SisRun,
    SisRunIssue,
)
from compliance.sis_client import OneRosterClient, SisError
from tests import factories
from tests.compliance.oneroster_sis import OneRosterSIS, district_roster, ref

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sis():
    server = OneRosterSIS().start()
    yield server
    server.stop()


def connect(district, sis: OneRosterSIS, **extra) -> SisConnection:
    return sis_sync.sis_connection_save(connection=SisConnection(
        district=district, base_url=sis.base_url, token_url=sis.token_url, client_id=sis.client_id,
        client_secret=sis.client_secret, **{"page_size": 50, **extra}))


@pytest.fixture
def conn(world, sis):
    return connect(world.district, sis)


def sync(conn: SisConnection, mode: str = SisRun.Mode.DELTA, **client_options) -> SisRun:
    run = sis_sync.sis_sync_request(connection=conn, mode=mode, requested_by="test")
    client = sis_sync.client_for(conn, backoff=0, **client_options)
    try:
        sis_sync.sis_run_execute(run_id=run.pk, client=client)
    finally:
        client.close()
    run.refresh_from_db()
    return run


def linked(district, kind: str, sourced_id: str):
    link = RosterLink.objects.get(district=district, kind=kind, sourced_id=sourced_id)
    model = {"org": None, "class": Course, "user": User, "enrollment": Enrollment}[kind]
    return model.objects.get(pk=link.object_id)


def total(run: SisRun, counter: str) -> int:
    return sum(c[counter] for c in run.counts.values())


def issues(run: SisRun) -> list[tuple[str, str, str]]:
    return [(i.kind, i.resource, i.sourced_id) for i in run.issues.all()]


def active_enrollments(district) -> set[tuple[str, str]]:
    """(user sourcedId, class sourcedId) of the district's active rostered enrollments."""
    users = {link.object_id: link.sourced_id for link in RosterLink.objects.filter(district=district, kind="user")}
    classes = {link.object_id: link.sourced_id for link in RosterLink.objects.filter(district=district, kind="class")}
    return {(users[e.user_id], classes[e.course_id])
            for e in Enrollment.objects.filter(course_id__in=classes, is_active=True)}


def expected_enrollments(roster) -> set[tuple[str, str]]:
    return {(e["user"]["sourcedId"], e["class"]["sourcedId"]) for e in roster["enrollments"]
            if e.get("status", "active") == "active"}


# --- the first sync and a large roster ---------------------------------------------------------------------


def test_first_sync_builds_the_roster(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster)
    run = sync(conn)
    assert run.status == SisRun.Status.DONE, run.error
    assert run.counts["users"]["created"] == 60 and run.counts["users"]["errors"] == 0
    assert run.counts["enrollments"]["created"] == len(roster["enrollments"])
    assert run.counts["classes"]["created"] == len(roster["classes"])
    assert active_enrollments(world.district) == expected_enrollments(roster)
    teacher = linked(world.district, "user", "t-0")
    assert Enrollment.objects.get(user=teacher, course=linked(world.district, "class", "cls-0")).role == Role.TEACHER
    assert AcademicSession.objects.filter(district=world.district).count() == 2
    assert CatalogCourse.objects.filter(district=world.district).count() == 2
    assert run.server_started_at is not None and run.checkpoint["resource"] == "reconcile"
    # Pages of 50: every collection read in full, page after page.
    offsets = [int(r["params"]["offset"]) for r in sis.collection_requests("users")]
    assert offsets == [0, 50]


@pytest.mark.timeout(1800)  # 20,000 records created through the one write path, on a shared 2-core machine
@pytest.mark.django_db(transaction=True)  # each page commits, as in production (one huge test transaction crawls)
def test_a_ten_thousand_user_roster(world, sis):
    conn = connect(world.district, sis, page_size=1000)
    roster = district_roster(users=10_000, schools=4, class_size=30)
    sis.load(roster)
    run = sync(conn)
    assert run.status == SisRun.Status.DONE, run.error
    assert run.counts["users"] == {"created": 10_000, "updated": 0, "deleted": 0, "unchanged": 0, "errors": 0}
    assert run.counts["enrollments"]["created"] == len(roster["enrollments"])
    assert RosterLink.objects.filter(district=world.district, kind="user").count() == 10_000
    assert active_enrollments(world.district) == expected_enrollments(roster)
    rostered = RosterLink.objects.filter(district=world.district, kind="user").values("object_id")
    students = Membership.objects.filter(institution__district=world.district, role=Role.STUDENT, is_active=True,
                                         user__in=rostered)  # (the world's own students are not the SIS's)
    assert students.count() == 10_000 - len(roster["classes"])


# --- deltas, tombstones, reconciliation ------------------------------------------------------------------------


def test_delta_picks_up_changes_and_nothing_else(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster, modified=sis.now() - dt.timedelta(days=2))
    first = sync(conn)
    assert first.status == SisRun.Status.DONE
    # The SIS changes: a new class with a new student, a drop, a role change, and a student moved class.
    sis.set("classes", {**roster["classes"][0], "sourcedId": "cls-new", "title": "New class", "classCode": "NEW"})
    sis.set("users", {**roster["users"][5], "sourcedId": "u-new", "username": "u-new", "email": "u-new@sis.test"})
    sis.set("enrollments", {"sourcedId": "e-new", "role": "student", "class": ref("cls-new", "class"),
                            "user": ref("u-new", "user"), "school": ref("sch-0", "org")})
    sis.tombstone("enrollments", "e-0-0")
    sis.update("enrollments", "e-1-0", role="aide")
    run = sync(conn)
    assert run.status == SisRun.Status.DONE, run.error
    assert run.watermark == first.server_started_at - sis_sync.delta_overlap()
    filters = {r["params"].get("filter") for r in sis.requests[-6:]}
    assert len(filters) == 1 and filters.pop().startswith("dateLastModified>'")
    assert run.counts["classes"] == {"created": 1, "updated": 0, "deleted": 0, "unchanged": 0, "errors": 0}
    assert run.counts["users"] == {"created": 1, "updated": 0, "deleted": 0, "unchanged": 0, "errors": 0}
    assert run.counts["enrollments"] == {"created": 1, "updated": 1, "deleted": 1, "unchanged": 0, "errors": 0}
    assert run.counts["orgs"]["created"] + run.counts["orgs"]["updated"] + run.counts["orgs"]["unchanged"] == 0
    roster_now = {**roster, "enrollments": [e for e in roster["enrollments"] if e["sourcedId"] != "e-0-0"] + [
        {"user": ref("u-new", "user"), "class": ref("cls-new", "class")}]}
    assert active_enrollments(world.district) == expected_enrollments(roster_now)
    aide = linked(world.district, "enrollment", "e-1-0")
    assert aide.role == Role.TA and aide.is_active
    assert not linked(world.district, "enrollment", "e-0-0").is_active


def test_tombstones_deactivate_users_and_classes(world, sis, conn):
    sis.load(district_roster(users=60))
    sync(conn)
    student = linked(world.district, "user", "u-3")
    sis.set("users", {"sourcedId": "u-3", "status": "tobedeleted"})  # a bare tombstone: no other field
    sis.tombstone("classes", "cls-1")
    sis.set("enrollments", {"sourcedId": "e-never", "status": "tobedeleted"})  # unknown here: nothing to do
    run = sync(conn)
    assert run.status == SisRun.Status.DONE
    assert run.counts["users"]["deleted"] == 1 and run.counts["classes"]["deleted"] == 1
    assert run.counts["enrollments"]["errors"] == 0
    assert not Membership.objects.filter(user=student, institution__district=world.district, is_active=True).exists()
    assert User.objects.get(pk=student.pk).is_active  # the account stays: another district may roster them
    assert not linked(world.district, "class", "cls-1").is_active
    again = sync(conn)
    assert total(again, "deleted") == 0


def test_full_reconciliation_deletes_what_the_sis_no_longer_lists(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster)
    sync(conn)
    sis.remove("enrollments", "e-2-0")
    sis.remove("users", "u-4")
    sis.remove("classes", "cls-1")
    sis.remove("orgs", "sch-1")
    delta = sync(conn)
    assert total(delta, "deleted") == 0  # a delta cannot see what vanished
    run = sync(conn, SisRun.Mode.FULL)
    assert run.status == SisRun.Status.DONE, run.error
    assert run.counts["enrollments"]["deleted"] == 1 and run.counts["users"]["deleted"] == 1
    assert run.counts["classes"]["deleted"] == 1
    assert not linked(world.district, "enrollment", "e-2-0").is_active
    assert not linked(world.district, "class", "cls-1").is_active
    assert not Membership.objects.filter(user=linked(world.district, "user", "u-4"), is_active=True).exists()
    reported = issues(run)
    assert {("deleted", "enrollments", "e-2-0"), ("deleted", "users", "u-4"), ("deleted", "classes", "cls-1"),
            ("conflict", "orgs", "sch-1")} <= set(reported)
    # Still listed: untouched.
    assert linked(world.district, "enrollment", "e-3-0").is_active
    # Aula's own rows (no sourcedId from the SIS) are not the SIS's to delete.
    assert Course.objects.get(pk=world.course_a.pk).is_active
    assert total(sync(conn, SisRun.Mode.FULL), "deleted") == 0


def test_a_sis_that_caps_limit_and_sends_no_total_is_read_to_the_end(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster)
    assert sync(conn).status == SisRun.Status.DONE
    # Aula asks for 50 a page; this SIS serves 20 at most, with neither X-Total-Count nor a next link.
    sis.max_limit, sis.totals, sis.links = 20, False, False
    sis.requests.clear()
    run = sync(conn, SisRun.Mode.FULL)
    assert run.status == SisRun.Status.DONE, run.error
    assert [int(r["params"]["offset"]) for r in sis.collection_requests("users")] == [0, 20, 40, 60]
    assert run.counts["users"]["unchanged"] == 60 and run.counts["enrollments"]["unchanged"] == len(
        roster["enrollments"])
    assert total(run, "deleted") == 0
    assert active_enrollments(world.district) == expected_enrollments(roster)


def test_a_sis_that_ignores_offset_fails_the_run_instead_of_paging_forever(world, sis, conn):
    sis.load(district_roster(users=60))
    sis.max_limit, sis.totals, sis.links, sis.ignore_offset = 20, False, False, True
    run = sync(conn, SisRun.Mode.FULL)
    assert run.status == SisRun.Status.FAILED and "same page of orgs" in run.error
    assert total(run, "deleted") == 0


def test_a_full_reconciliation_never_deletes_a_large_part_of_a_collection(world, sis, conn, settings):
    roster = district_roster(users=60)
    sis.load(roster)
    sync(conn)
    for person in roster["users"][10:40]:  # half the people: a listing that ended early looks like this
        sis.remove("users", person["sourcedId"])
    run = sync(conn, SisRun.Mode.FULL)
    assert run.status == SisRun.Status.DONE, run.error
    assert run.counts["users"]["deleted"] == 0
    refusal = run.issues.get(kind=SisRunIssue.Kind.RUN, resource="users").message
    assert "30 of the 60 users" in refusal and "AULA_SIS_MAX_DELETE_FRACTION" in refusal
    gone = linked(world.district, "user", roster["users"][10]["sourcedId"])
    assert Membership.objects.filter(user=gone, institution__district=world.district, is_active=True).exists()
    # A few are deleted as usual (within the allowance); the guard is per collection.
    sis.remove("enrollments", "e-2-0")
    assert sync(conn, SisRun.Mode.FULL).counts["enrollments"]["deleted"] == 1
    # An operator who has checked the SIS raises the limit: the next full reconciliation deletes them.
    settings.AULA_SIS_MAX_DELETE_FRACTION = 1
    run = sync(conn, SisRun.Mode.FULL)
    assert run.counts["users"]["deleted"] == 30
    assert not Membership.objects.filter(user=gone, institution__district=world.district, is_active=True).exists()
    # Those already deleted are not counted again: a later reconciliation runs with the default guard.
    settings.AULA_SIS_MAX_DELETE_FRACTION = 0.2
    again = sync(conn, SisRun.Mode.FULL)
    assert not again.issues.filter(kind=SisRunIssue.Kind.RUN).exists() and total(again, "deleted") == 0


def test_an_empty_listing_never_deletes(world, sis, conn, settings):
    settings.AULA_SIS_MAX_DELETE_FRACTION = 1  # even with no fraction limit
    roster = district_roster(users=60)
    sis.load(roster)
    sync(conn)
    sis.empty = {"enrollments", "academicSessions"}  # a 200 with an empty list
    run = sync(conn, SisRun.Mode.FULL)
    assert run.status == SisRun.Status.DONE, run.error
    assert run.counts["enrollments"]["deleted"] == run.counts["academicSessions"]["deleted"] == 0
    refusals = {i.resource: i.message for i in run.issues.filter(kind=SisRunIssue.Kind.RUN)}
    assert "listed no enrollments" in refusals["enrollments"] and "academicSessions" in refusals
    assert active_enrollments(world.district) == expected_enrollments(roster)
    assert not AcademicSession.objects.filter(district=world.district, status="tobedeleted").exists()


def test_a_record_that_comes_back_is_restored(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster)
    sync(conn)
    sis.tombstone("enrollments", "e-5-0")
    sync(conn)
    assert not linked(world.district, "enrollment", "e-5-0").is_active
    sis.update("enrollments", "e-5-0", status="active")
    run = sync(conn)
    assert run.counts["enrollments"]["updated"] == 1
    assert linked(world.district, "enrollment", "e-5-0").is_active


# --- malformed records, conflicts ---------------------------------------------------------------------------------


def test_malformed_records_are_reported_and_do_not_stop_the_run(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster)
    sis.inject("users", {"sourcedId": "u-bad", "username": "bad", "givenName": "B", "familyName": "C",
                         "email": "not-an-email", "roles": []})
    sis.inject("users", "not even an object")
    sis.inject("users", {"username": "no-sourced-id"})
    sis.inject("enrollments", {"sourcedId": "e-ghost", "role": "student", "class": ref("cls-0", "class"),
                               "user": ref("nobody", "user"), "school": ref("sch-0", "org")})
    sis.inject("classes", {"sourcedId": "cls-weird", "title": "X" * 500, "course": ref("crs-0", "course"),
                           "school": ref("sch-0", "org")})
    run = sync(conn)
    assert run.status == SisRun.Status.DONE
    assert run.counts["users"]["created"] == 60 and run.counts["users"]["errors"] == 3
    assert run.counts["enrollments"]["created"] == len(roster["enrollments"])
    assert run.counts["enrollments"]["errors"] == 1 and run.counts["classes"]["errors"] == 1
    by_id = {i.sourced_id: i for i in run.issues.all()}
    assert by_id["u-bad"].kind == "invalid" and "email" in by_id["u-bad"].message and "roles" in by_id["u-bad"].message
    assert by_id["e-ghost"].kind == "conflict" and "nobody" in by_id["e-ghost"].message
    assert by_id["cls-weird"].kind == "invalid" and "title" in by_id["cls-weird"].message
    assert run.issue_count == 5
    assert active_enrollments(world.district) == expected_enrollments(roster)


def test_issues_are_capped_per_run_with_a_count_of_the_rest(world, sis, conn, settings):
    settings.AULA_SIS_ISSUES_PER_RUN = 3
    for n in range(7):
        sis.inject("users", {"sourcedId": f"bad-{n}"})
    run = sync(conn)
    assert run.issue_count == 7 and run.issues.count() == 3 and run.counts["users"]["errors"] == 7


def test_conflicts_are_reported(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster)
    sync(conn)
    outsider = world.student_c  # a person of another district only
    sis.set("users", {**roster["users"][3], "sourcedId": "u-taken", "username": "u-taken",
                      "email": outsider.email})
    sis.update("classes", "cls-0", school=ref("sch-1", "org"))  # a class moving school
    run = sync(conn)
    assert run.status == SisRun.Status.DONE
    found = {(i.kind, i.resource, i.sourced_id): i.message for i in run.issues.all()}
    assert "email" in found[("conflict", "users", "u-taken")]
    assert "school" in found[("conflict", "classes", "cls-0")]
    assert User.objects.get(pk=outsider.pk).email == outsider.email
    assert linked(world.district, "class", "cls-0").institution == linked_school(world.district, "sch-0")


def linked_school(district, sourced_id):
    from classrooms.models import Institution

    return Institution.objects.get(pk=RosterLink.objects.get(district=district, kind="org",
                                                             sourced_id=sourced_id).object_id)


# --- idempotence, one run at a time ---------------------------------------------------------------------------------


def row_state(district):
    return (sorted(Enrollment.objects.filter(institution__district=district).values_list("pk", "updated_at")),
            sorted(User.objects.values_list("pk", "updated_at")),
            sorted(RosterLink.objects.filter(district=district).values_list("pk", "updated_at")),
            sorted(Course.objects.values_list("pk", "updated_at")))


def test_a_rerun_changes_nothing(world, sis, conn):
    sis.load(district_roster(users=40))
    sync(conn, SisRun.Mode.FULL)
    before = row_state(world.district)
    run = sync(conn, SisRun.Mode.FULL)
    assert run.status == SisRun.Status.DONE
    assert total(run, "created") == total(run, "updated") == total(run, "deleted") == total(run, "errors") == 0
    assert run.counts["users"]["unchanged"] == 40
    assert row_state(world.district) == before


def test_one_run_per_district_at_a_time(world, sis, conn):
    first = sis_sync.sis_sync_request(connection=conn, mode=SisRun.Mode.DELTA)
    assert sis_sync.sis_sync_request(connection=conn, mode=SisRun.Mode.FULL).pk == first.pk
    # A second worker on the same run while the first holds the district's lock does nothing.
    with sis_sync._runner_lock(conn.pk) as got:
        assert got
        from django.db import connections

        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [sis_sync.LOCK_NAMESPACE, conn.pk])
                assert cursor.fetchone()[0] is False
        finally:
            other.close()


# --- resume after a failure or a crash -----------------------------------------------------------------------------


def test_a_sis_failing_mid_run_is_resumed_from_the_checkpoint(world, sis, conn):
    roster = district_roster(users=120)
    sis.load(roster)
    sis.fail(500, times=100, collection="users", offset=50)  # the SIS keeps failing on the second users page
    run = sync(conn, retries=2)
    assert run.status == SisRun.Status.RUNNING and "HTTP 500" in run.error
    assert run.checkpoint == {"resource": "users", "offset": 50, "total": 120, "unstable": []}
    assert run.counts["users"]["created"] == 50
    assert [r["status"] for r in sis.collection_requests("users")] == [200, 500, 500, 500]
    sis.faults.clear()
    # The sweep picks the run up once it is stale, and it continues where it stopped.
    queued = sis_sync.sis_sync_sweep(now=timezone.now() + dt.timedelta(hours=1))
    assert queued == [run.pk]
    sis_sync.sis_run_execute(run_id=run.pk, client=sis_sync.client_for(conn, backoff=0))
    run.refresh_from_db()
    assert run.status == SisRun.Status.DONE and run.attempts == 2
    assert run.counts["users"]["created"] == 120 and run.counts["enrollments"]["created"] == len(roster["enrollments"])
    assert [int(r["params"]["offset"]) for r in sis.collection_requests("users")] == [0, 50, 50, 50, 50, 100]
    assert active_enrollments(world.district) == expected_enrollments(roster)


def test_429_and_500_are_retried(world, sis, conn):
    sis.load(district_roster(users=20))
    sis.fail(429, times=2, collection="orgs", retry_after=0)
    sis.fail(503, times=1, collection="classes")
    run = sync(conn)
    assert run.status == SisRun.Status.DONE and run.counts["users"]["created"] == 20
    assert [r["status"] for r in sis.collection_requests("orgs")] == [429, 429, 200]


def test_token_refresh_on_401(world, sis, conn):
    sis.load(district_roster(users=120))
    client = sis_sync.client_for(conn, backoff=0)
    page = client.page("users", "users", offset=0, limit=50)
    assert len(page.records) == 50 and sis.token_requests == 1
    sis.revoke_tokens()  # the SIS forgets Aula's token before it expires
    page = client.page("users", "users", offset=50, limit=50)
    assert len(page.records) == 50 and sis.token_requests == 2
    assert [r["status"] for r in sis.collection_requests("users")] == [200, 401, 200]
    client.close()


def test_an_expired_token_is_fetched_again(world, sis):
    sis.load(district_roster(users=10))
    conn = connect(world.district, sis)
    client = sis_sync.client_for(conn, backoff=0)
    client.page("users", "users", offset=0, limit=5)
    assert sis.token_requests == 1
    client.http.token["expires_at"] = int(time.time()) - 120  # as if an hour passed
    client.page("users", "users", offset=5, limit=5)
    assert sis.token_requests == 2
    assert all(r["status"] == 200 for r in sis.collection_requests("users"))
    client.close()


@pytest.mark.parametrize("status, error, after, outcome, reason", [
    # Aula's own refresh before a request fails (a gateway's 503 page), then Authlib's inside the request.
    (503, None, 2, SisRun.Status.RUNNING, "token endpoint answered HTTP 503"),
    (401, "invalid_client", 3, SisRun.Status.FAILED, "(invalid_client)"),
])
def test_a_token_refresh_that_fails_mid_run_stops_it_with_the_reason(world, sis, conn, status, error, after,
                                                                     outcome, reason):
    sis.load(district_roster(users=60))
    # Tokens live 1 s, less than the 60 s Authlib and Aula allow for: each request is preceded by a fetch in
    # Aula's client, then another inside Authlib's request. The first request (orgs) takes tokens 1 and 2.
    sis.token_ttl = 1
    sis.fail_token(status, times=100, after=after, error=error)
    run = sync(conn, retries=1)
    assert run.status == outcome and reason in run.error, run.error
    assert sis.client_secret not in run.error
    assert run.checkpoint["resource"] == "academicSessions"  # the page read before the failure is kept
    if outcome == SisRun.Status.RUNNING:
        sis.token_faults.clear()
        sis_sync.sis_run_execute(run_id=run.pk, client=sis_sync.client_for(conn, backoff=0))
        run.refresh_from_db()
        assert run.status == SisRun.Status.DONE and run.counts["users"]["created"] == 60


def test_an_unexpected_error_stops_the_run_with_a_reason_and_no_personal_data(world, sis, conn, monkeypatch,
                                                                              caplog):
    roster = district_roster(users=60)
    sis.load(roster)
    apply_page = sis_sync._apply_page

    def broken(run, roster_, resource, kind, records):
        if resource == "users":
            raise KeyError(records[3]["email"])
        return apply_page(run, roster_, resource, kind, records)

    monkeypatch.setattr(sis_sync, "_apply_page", broken)
    caplog.set_level(logging.INFO)
    run = sync(conn)
    assert run.status == SisRun.Status.RUNNING
    assert run.error == "Unexpected KeyError; resumed by the sweep."
    assert run.checkpoint["resource"] == "users" and run.counts.get("users", {}).get("created", 0) == 0
    assert "KeyError" in caplog.text and "@sis.test" not in caplog.text
    monkeypatch.setattr(sis_sync, "_apply_page", apply_page)
    sis_sync.sis_run_execute(run_id=run.pk, client=sis_sync.client_for(conn, backoff=0))
    run.refresh_from_db()
    assert run.status == SisRun.Status.DONE and run.error == "" and run.counts["users"]["created"] == 60


def test_a_run_stopped_after_its_attempts_keeps_the_last_reason(world, sis, conn, settings):
    settings.AULA_SIS_MAX_ATTEMPTS = 2
    sis.load(district_roster(users=20))
    sis.fail(500, times=1000, collection="users")
    run = sync(conn, retries=0)
    for _ in range(2):
        assert run.status == SisRun.Status.RUNNING and "HTTP 500" in run.error
        sis_sync.sis_run_execute(run_id=run.pk, client=sis_sync.client_for(conn, backoff=0, retries=0))
        run.refresh_from_db()
    assert run.status == SisRun.Status.FAILED and run.attempts == 2
    assert run.error == "Stopped after 2 attempts. Last error: The SIS answered HTTP 500 at users."


def test_a_duplicate_queued_execution_does_nothing(world, sis, conn, monkeypatch,
                                                   django_capture_on_commit_callbacks):
    from compliance import tasks

    queued = []
    monkeypatch.setattr(tasks.sis_run_execute, "delay", lambda *args: queued.append(args))
    sis.load(district_roster(users=20))
    sis.fail(500, times=1000, collection="users")
    with django_capture_on_commit_callbacks(execute=True):
        run = sis_sync.sis_sync_request(connection=conn, mode=SisRun.Mode.DELTA)
    assert queued == [(run.pk, 0)]

    def execute(attempts):
        return sis_sync.sis_run_execute(run_id=run.pk, attempts=attempts,
                                        client=sis_sync.client_for(conn, backoff=0, retries=0))

    assert execute(0) is not None
    # The bulk queue is busy: the sweep queues the stale run at every tick, and the copies pile up.
    later = timezone.now() + dt.timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        sis_sync.sis_sync_sweep(now=later)
        sis_sync.sis_sync_sweep(now=later)
    assert queued[1:] == [(run.pk, 1), (run.pk, 1)]
    requests = len(sis.requests)
    assert execute(1) is not None
    assert execute(1) is None and execute(0) is None  # the other copies: already resumed
    run.refresh_from_db()
    assert run.attempts == 2 and run.status == SisRun.Status.RUNNING
    assert len(sis.requests) == requests + 1  # the users page, once


def test_wrong_credentials_fail_the_run_without_revealing_them(world, sis, conn):
    conn.client_secret = "wrong-secret-value"
    sis_sync.sis_connection_save(connection=conn)
    run = sync(conn)
    assert run.status == SisRun.Status.FAILED and "invalid_client" in run.error
    assert "wrong-secret-value" not in run.error


def start_worker(tmp_path: Path) -> subprocess.Popen:
    """A real Celery worker on the queue SIS runs are routed to (CELERY_TASK_ROUTES: `bulk`)."""
    db = db_connection.settings_dict
    env = {**os.environ, "AULA_ENV": "test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "bulk", "-P", "solo",
                             "-n", f"sis-{os.getpid()}@%h", "-l", "INFO"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_s_run_is_resumed_by_the_sweep(tmp_path, sis):
    world = factories.World()
    conn = connect(world.district, sis)
    roster = district_roster(users=150)
    sis.load(roster)
    reached = sis.hold("users", 100)  # the worker's third users page waits here until it is killed
    worker = start_worker(tmp_path)
    try:
        run = sis_sync.sis_sync_request(connection=conn, mode=SisRun.Mode.FULL, requested_by="test")
        assert reached.wait(300), (tmp_path / "worker.log").read_text()[-3000:]  # a worker starts slowly on a busy CI
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
    sis.release("users", 100)
    run.refresh_from_db()
    assert run.status == SisRun.Status.RUNNING and run.attempts == 1
    assert run.checkpoint["resource"] == "users" and run.checkpoint["offset"] == 100
    assert run.counts["users"]["created"] == 100
    # Not yet stale: the sweep leaves it (its worker might be alive); stale: queued again, and resumed.
    assert run.pk not in sis_sync.sis_sync_sweep()
    assert sis_sync.sis_sync_sweep(now=timezone.now() + dt.timedelta(hours=1)) == [run.pk]
    sis_sync.sis_run_execute(run_id=run.pk, client=sis_sync.client_for(conn, backoff=0))
    run.refresh_from_db()
    assert run.status == SisRun.Status.DONE and run.attempts == 2
    assert run.counts["users"] == {"created": 150, "updated": 0, "deleted": 0, "unchanged": 0, "errors": 0}
    assert run.counts["enrollments"]["created"] == len(roster["enrollments"])
    assert active_enrollments(world.district) == expected_enrollments(roster)
    users_offsets = [int(r["params"]["offset"]) for r in sis.collection_requests("users")]
    assert users_offsets == [0, 50, 100, 100]  # the killed page again, then on: nothing read twice but it


# --- what Aula still holds, re-pointing a connection ----------------------------------------------------------------


def test_an_unchanged_record_is_applied_again_when_aula_lost_its_row_or_link(world, sis, conn):
    roster = district_roster(users=60)
    sis.load(roster)
    sync(conn)
    RosterLink.objects.get(district=world.district, kind="user", sourced_id="u-3").delete()
    AcademicSession.objects.get(district=world.district, sourced_id="term-1").delete()
    linked(world.district, "enrollment", "e-4-0").delete()  # the row, its link left behind
    run = sync(conn, SisRun.Mode.FULL)
    assert run.status == SisRun.Status.DONE, run.error
    assert run.counts["users"]["updated"] == 1 and run.counts["users"]["unchanged"] == 59
    assert run.counts["academicSessions"]["created"] == 1
    assert run.counts["enrollments"]["created"] == 1
    assert linked(world.district, "user", "u-3").email == "u-3@sis.test"
    assert AcademicSession.objects.filter(district=world.district, sourced_id="term-1").exists()
    assert active_enrollments(world.district) == expected_enrollments(roster)
    assert total(sync(conn, SisRun.Mode.FULL), "unchanged") == total(run, "unchanged") + 3


def test_re_pointing_a_connection_forgets_the_old_sis_digests(world, sis, conn):
    roster = district_roster(users=20)
    sis.load(roster)
    sync(conn)
    conn.client_secret = sis.client_secret  # other changes keep them
    sis_sync.sis_connection_save(connection=conn)
    assert SisRecord.objects.filter(connection=conn).exists()
    other = OneRosterSIS().start()
    try:
        other.load(roster)
        conn.base_url, conn.token_url = other.base_url, other.token_url
        conn.client_id, conn.client_secret = other.client_id, other.client_secret
        sis_sync.sis_connection_save(connection=conn)
        assert not SisRecord.objects.filter(connection=conn).exists()
        run = sync(conn, SisRun.Mode.FULL)
        assert run.status == SisRun.Status.DONE, run.error
        assert run.counts["users"]["updated"] == 20 and total(run, "unchanged") == 0
    finally:
        other.stop()


def test_a_connection_stays_with_its_district(world, sis, conn):
    from django.core.exceptions import ValidationError

    conn.district = world.other_district
    with pytest.raises(ValidationError):
        sis_sync.sis_connection_save(connection=conn)
    assert SisConnection.objects.get(pk=conn.pk).district == world.district


# --- the credential, the schedule, other districts --------------------------------------------------------------


def test_the_secret_is_encrypted_at_rest_and_absent_from_logs(world, sis, conn, caplog):
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT client_secret FROM compliance_sisconnection WHERE id = %s", [conn.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("fernet:") and sis.client_secret not in stored
    conn.refresh_from_db()
    assert conn.client_secret.reveal() == sis.client_secret and sis.client_secret not in repr(conn.client_secret)
    sis.load(district_roster(users=20))
    caplog.set_level(logging.DEBUG)
    sis.fail(500, times=1, collection="users")
    sis.revoke_tokens()
    run = sync(conn)
    assert run.status == SisRun.Status.DONE
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert sis.client_secret not in text
    assert not any(token in text for token in sis.tokens)
    assert "sis: run" in caplog.text  # the run did log (counts only)


def test_the_sweep_starts_due_delta_syncs(world, sis, conn):
    sis.load(district_roster(users=10))
    assert sis_sync.sis_sync_sweep() != []  # never synced: due now
    run = SisRun.objects.get(connection=conn)
    assert run.mode == SisRun.Mode.DELTA and run.requested_by == "schedule"
    sis_sync.sis_run_execute(run_id=run.pk, client=sis_sync.client_for(conn, backoff=0))
    assert sis_sync.sis_sync_sweep() == []  # synced just now
    assert len(sis_sync.sis_sync_sweep(now=timezone.now() + conn.sync_interval)) == 1
    conn.enabled = False
    conn.save()
    SisRun.objects.filter(connection=conn, status=SisRun.Status.PENDING).update(status=SisRun.Status.DONE)
    assert sis_sync.sis_sync_sweep(now=timezone.now() + dt.timedelta(days=1)) == []


def test_another_districts_data_is_never_touched(world, sis, conn):
    other_sis = OneRosterSIS().start()
    try:
        other_conn = connect(world.other_district, other_sis)
        shared = district_roster(users=60)  # the same sourcedIds in both districts' SIS
        other_sis.load(shared)
        sync(other_conn)
        other_before = row_state(world.other_district)
        other_links = set(RosterLink.objects.filter(district=world.other_district).values_list("sourced_id",
                                                                                              "object_id"))
        mine_roster = district_roster(users=60)
        for person in mine_roster["users"]:  # other people in this district, under the same sourcedIds
            person["email"] = f"mine-{person['sourcedId']}@sis.test"
        sis.load(mine_roster)
        run = sync(conn, SisRun.Mode.FULL)
        assert run.status == SisRun.Status.DONE
        for sid in ["u-1", "u-2"]:
            sis.remove("users", sid)
        sync(conn, SisRun.Mode.FULL)
        assert row_state(world.other_district)[0] == other_before[0]
        assert set(RosterLink.objects.filter(district=world.other_district).values_list(
            "sourced_id", "object_id")) == other_links
        assert Membership.objects.filter(institution__district=world.other_district, is_active=False).count() == 0
        mine = {link.object_id for link in RosterLink.objects.filter(district=world.district, kind="user")}
        theirs = {link.object_id for link in RosterLink.objects.filter(district=world.other_district, kind="user")}
        assert not mine & theirs
        assert SisRunIssue.objects.filter(run__connection=other_conn).count() == 0
    finally:
        other_sis.stop()


def test_client_gives_up_after_retries(world, sis, conn):
    sis.fail(500, times=10)
    client = OneRosterClient(base_url=sis.base_url, token_url=sis.token_url, client_id=sis.client_id,
                             client_secret=sis.client_secret, retries=2, backoff=0)
    with pytest.raises(SisError) as failed:
        client.page("orgs", "orgs", offset=0, limit=10)
    assert failed.value.transient and len(sis.collection_requests("orgs")) == 3
    client.close()


# --- the admin ---------------------------------------------------------------------------------------------------


@pytest.fixture
def operator(client):
    admin_user = factories.user("operator", superuser=True)
    client.force_login(admin_user)
    return admin_user


def test_admin_connection_secret_is_write_only(client, world, sis, operator):
    form = {"district": world.district.pk, "base_url": sis.base_url, "token_url": sis.token_url,
            "client_id": "aula", "client_secret": "first-secret-value", "scope": "", "sync_interval": "01:00:00",
            "page_size": 100, "enabled": "on"}
    response = client.post("/admin/compliance/sisconnection/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    conn = SisConnection.objects.get(district=world.district)
    assert conn.client_secret.reveal() == "first-secret-value"
    page = client.get(f"/admin/compliance/sisconnection/{conn.pk}/change/").content.decode()
    assert "first-secret-value" not in page and "fernet:" not in page
    # A change without a secret keeps the stored one; with one, replaces it.
    response = client.post(f"/admin/compliance/sisconnection/{conn.pk}/change/", {**form, "client_secret": "",
                                                                                  "page_size": 200})
    assert response.status_code == 302
    conn.refresh_from_db()
    assert conn.client_secret.reveal() == "first-secret-value" and conn.page_size == 200
    client.post(f"/admin/compliance/sisconnection/{conn.pk}/change/", {**form, "client_secret": "second-secret"})
    conn.refresh_from_db()
    assert conn.client_secret.reveal() == "second-secret"
    assert "second-secret" not in client.get("/admin/compliance/sisconnection/").content.decode()


def test_admin_connection_district_is_read_only_and_changes_are_audited(client, world, sis, operator):
    from auditlog.models import LogEntry

    form = {"district": world.district.pk, "base_url": sis.base_url, "token_url": sis.token_url,
            "client_id": "aula", "client_secret": "audited-secret-value", "scope": "", "sync_interval": "01:00:00",
            "page_size": 100, "enabled": "on"}
    assert client.post("/admin/compliance/sisconnection/add/", form).status_code == 302
    conn = SisConnection.objects.get(district=world.district)
    response = client.post(f"/admin/compliance/sisconnection/{conn.pk}/change/", {
        **form, "district": world.other_district.pk, "client_secret": "another-secret-value", "page_size": 300})
    assert response.status_code == 302, response.content.decode()[:2000]
    conn.refresh_from_db()
    assert conn.district == world.district and conn.page_size == 300
    entries = LogEntry.objects.get_for_object(conn).order_by("pk")
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert all(e.actor == operator for e in entries)
    assert entries[1].changes_dict["page_size"] == ["100", "300"] and "district" not in entries[1].changes_dict
    text = "".join(str(e.changes) + e.changes_text for e in entries)
    assert "client_secret" not in text and "secret-value" not in text


def test_admin_actions_queue_runs_and_show_the_report(client, world, sis, conn, operator,
                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post("/admin/compliance/sisconnection/", {
            "action": "full_reconciliation", "_selected_action": [conn.pk]})
    assert response.status_code == 302 and len(queued) == 1
    run = SisRun.objects.get(connection=conn)
    assert run.mode == SisRun.Mode.FULL and run.requested_by == operator.email
    sis.load(district_roster(users=60))
    sis.inject("users", {"sourcedId": "u-broken", "email": "x"})
    sis_sync.sis_run_execute(run_id=run.pk, client=sis_sync.client_for(conn, backoff=0))
    page = client.get(f"/admin/compliance/sisrun/{run.pk}/change/").content.decode()
    assert "u-broken" in page and "enrollments" in page and "This field is required" in page
    assert client.get("/admin/compliance/sisrun/").status_code == 200
    assert client.post(f"/admin/compliance/sisrun/{run.pk}/delete/").status_code == 403


def test_admin_csv_upload_imports_and_keeps_the_report(client, world, operator):
    from tests.compliance.test_oneroster import CSV, csv_zip

    archive = io.BytesIO(csv_zip(CSV))
    archive.name = "roster.zip"
    response = client.post("/admin/compliance/rostercsvimport/add/", {"district": world.district.pk,
                                                                      "archive": archive})
    assert response.status_code == 302, response.content.decode()[:2000]
    done = RosterCsvImport.objects.get()
    assert done.applied and done.report["created"]["users.csv"] >= 1 and done.uploaded_by == operator
    assert RosterLink.objects.filter(district=world.district, kind="user").exists()
    broken = io.BytesIO(csv_zip({"orgs.csv": [CSV["orgs.csv"][0], ["sch-x", "active", "", "", "moon", "", ""]]}))
    broken.name = "broken.zip"
    client.post("/admin/compliance/rostercsvimport/add/", {"district": world.district.pk, "archive": broken})
    failed = RosterCsvImport.objects.order_by("-id").first()
    assert not failed.applied
    page = client.get(f"/admin/compliance/rostercsvimport/{failed.pk}/change/").content.decode()
    assert "sch-x" in page


def test_staff_cannot_reach_sis_admin(client, world, conn):
    client.force_login(world.staff_a)
    assert client.get("/admin/compliance/sisconnection/").status_code == 403
    assert client.get(f"/admin/compliance/sisconnection/{conn.pk}/change/").status_code in (302, 403)
