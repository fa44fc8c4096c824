"""Slicing after the fact, access to analytics, the pipeline's health figures, the API and the CSV export."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from analytics import buffer, selectors, services
from classrooms.models import Role
from streaming import services as streaming_services
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_700_000_000.0
START = dt.datetime.fromtimestamp(T0, tz=dt.UTC)


def seed(scope: str, scope_id: int) -> None:
    for i in range(30):
        buffer.record("viewer.join", scope=scope, scope_id=scope_id, at=T0 + i * 20, country="FR" if i % 3 else "DE",
                      region="FR-IDF" if scope == "stream" and i % 3 else "", segment="member" if i < 10 else "anonymous")
    buffer.record("chat.message", scope=scope, scope_id=scope_id, at=T0 + 5, value=0.5, segment="member")
    buffer.record("chat.message", scope=scope, scope_id=scope_id, at=T0 + 6, value=-0.1, segment="member")
    buffer.record("viewer.join", scope=scope, scope_id=scope_id + 1, at=T0, country="FR")  # another stream
    buffer.flush_now()
    services.flush()


def test_window_choice_is_the_coarsest_that_fits():
    assert selectors.window_for(START, START + dt.timedelta(hours=2)) == 300
    assert selectors.window_for(START, START + dt.timedelta(minutes=30)) == 60
    assert selectors.window_for(START, START + dt.timedelta(minutes=1)) == 10


def test_slices_by_geography_and_segment():
    seed("stream", 40)
    end = START + dt.timedelta(minutes=10)
    s = selectors.slice_rollups(scope="stream", scope_id=40, start=START, end=end, kind="viewer.join")
    assert sum(r["count"] for r in s.totals) == 30
    by_country = selectors.slice_rollups(scope="stream", scope_id=40, start=START, end=end, kind="viewer.join",
                                         group_by="country")
    assert {t["group"]: t["count"] for t in by_country.totals} == {"DE": 10, "FR": 20}
    fr_members = selectors.slice_rollups(scope="stream", scope_id=40, start=START, end=end, kind="viewer.join",
                                         region="FR-IDF", segment="member")
    assert sum(t["count"] for t in fr_members.totals) == 6
    chat = selectors.slice_rollups(scope="stream", scope_id=40, start=START, end=end, kind="chat.message")
    assert chat.totals[0]["value_avg"] == pytest.approx(0.2)
    later = selectors.slice_rollups(scope="stream", scope_id=40, start=START + dt.timedelta(minutes=5), end=end)
    assert sum(t["count"] for t in later.totals) == 15  # joins at T0+300 .. T0+580


def test_class_slices_refuse_regions_and_suppress_small_groups():
    seed("session", 50)
    end = START + dt.timedelta(minutes=10)
    with pytest.raises(ValueError):
        selectors.slice_rollups(scope="session", scope_id=50, start=START, end=end, group_by="region")
    s = selectors.slice_rollups(scope="session", scope_id=50, start=START, end=end, group_by="segment")
    chat = next(t for t in s.totals if t["kind"] == "chat.message")
    assert chat["suppressed"] and chat["count"] is None  # 2 messages < AULA_ANALYTICS_MIN_GROUP
    joins = {t["group"]: t["count"] for t in s.totals if t["kind"] == "viewer.join"}
    assert joins == {"anonymous": 20, "member": 10}


def test_flush_lag_and_overflow_are_reported(settings):
    import time

    buffer.record("reaction", scope="stream", scope_id=1, at=time.time())
    buffer.flush_now()
    time.sleep(0.3)
    assert selectors.flush_lag() >= 0.3
    services.flush()
    assert selectors.flush_lag() == 0.0 and selectors.last_flush_at() is not None
    services.analytics_redis().hincrby(buffer.overflow_key(), "reaction", 3)
    assert selectors.pipeline_status()["overflow_total"] == 3


@pytest.fixture
def stream_world():
    owner, moderator, stranger = factories.user("owner"), factories.user("mod"), factories.user("stranger")
    channel = streaming_services.channel_upsert(owner=owner, slug="chan", title="Chan")
    streaming_services.channel_role_grant(channel=channel, user=moderator, role="moderator")
    stream = streaming_services.stream_upsert(channel=channel, title="Live")
    return stream, owner, moderator, stranger


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_stream_analytics_api_is_for_the_creator_and_moderators(stream_world):
    stream, owner, moderator, stranger = stream_world
    seed("stream", stream.pk)
    url = f"/api/v1/analytics/streams/{stream.pk}/?start=2023-11-14T22:13:20Z&end=2023-11-14T22:23:20Z&group_by=country"
    for user in (owner, moderator):
        body = _client(user).get(url).json()
        assert {t["group"]: t["count"] for t in body["totals"] if t["kind"] == "viewer.join"} == {"DE": 10, "FR": 20}
    refused = _client(stranger).get(url)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert Client().get(url).status_code in (401, 403)
    bad = _client(owner).get(f"/api/v1/analytics/streams/{stream.pk}/?start=yesterday")
    assert bad.status_code == 400 and "start" in bad.json()["error"]["details"]
    assert _client(owner).get("/api/v1/analytics/pipeline/").status_code == 403


def test_class_analytics_for_teachers_and_school_staff_only(world):
    inst = factories.institution()
    course = factories.course(inst)
    teacher, student, staff, other_staff = (factories.user("t"), factories.user("s"), factories.staff_of(inst),
                                            factories.staff_of(factories.institution()))
    factories.enroll(course, teacher, Role.TEACHER)
    factories.enroll(course, student, Role.STUDENT)
    session = factories.live_session(course)
    seed("session", session.pk)
    url = f"/api/v1/analytics/sessions/{session.pk}/?start=2023-11-14T22:13:20Z&end=2023-11-14T22:23:20Z"
    assert _client(teacher).get(url).status_code == 200
    assert _client(staff).get(url).status_code == 200
    assert _client(student).get(url).status_code == 404
    assert _client(other_staff).get(url).status_code == 404
    assert _client(teacher).get(url + "&group_by=region").status_code == 400


def test_csv_export_matches_the_slice_and_is_defused(stream_world):
    stream, owner, _, stranger = stream_world
    seed("stream", stream.pk)
    url = f"/analytics/streams/{stream.pk}/export.csv?start=2023-11-14T22:13:20Z&end=2023-11-14T22:23:20Z"
    response = _client(owner).get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    lines = response.content.decode("utf-8-sig").strip().splitlines()
    assert lines[0].startswith('"bucket_start"')
    assert sum(int(line.split(",")[4].strip('"')) for line in lines[1:] if '"viewer.join"' in line) == 30
    assert _client(stranger).get(url).status_code == 404
    page = _client(owner).get(url.replace("export.csv", ""))
    assert page.status_code == 200 and b"<polyline" in page.content
