"""Attendance derived from connection intervals and engagement (docs/attendance.md)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from classrooms import services
from classrooms.attendance import merge_spans
from classrooms.models import AttendanceRecord, LiveSession
from tests import factories

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - dt.timedelta(hours=3)


def at(minutes: float) -> float:
    return (T0 + dt.timedelta(minutes=minutes)).timestamp()


def stay(session, user, conn, start, end, active=None, idle=0.0, resumed=False):
    active = (end - start) * 60 - idle if active is None else active
    services.attendance_interval_record(session_id=session.pk, user_id=user.pk, conn_id=conn, joined_at=at(start),
                                        left_at=at(end), active=active, idle=idle, resumed=resumed)


def held_session(world) -> LiveSession:
    s = world.session_a
    LiveSession.objects.filter(pk=s.pk).update(status="ended", started_at=T0, ended_at=T0 + dt.timedelta(minutes=60))
    s.refresh_from_db()
    return s


def test_merge_spans_bridges_short_gaps_and_overlapping_tabs():
    t = lambda m: T0 + dt.timedelta(minutes=m)  # noqa: E731
    spans = merge_spans([(t(0), t(10)), (t(5), t(20)), (t(20.5), t(30)), (t(40), t(50))], gap=60)
    assert spans == [[t(0), t(30)], [t(40), t(50)]]


def test_statuses_reconnects_and_engagement(world):
    session = held_session(world)
    late, partial, absent = (factories.user(n, age=14) for n in ("late_l", "partial_p", "absent_a"))
    for u in (late, partial, absent):
        factories.enroll(world.course_a, u)
    # student_a: whole class in two tabs plus a 30 s Wi-Fi drop (a reconnect, not a leave), idle 10 min
    stay(session, world.student_a, "a1", 0, 30, idle=600)
    stay(session, world.student_a, "a2", 30.5, 60, resumed=True)
    stay(session, world.student_a, "a3", 10, 20, active=0)  # a second, hidden tab: counted once
    stay(session, late, "l1", 15, 60)  # 45 of 60 minutes = 75 %, but first join after 10 minutes
    stay(session, partial, "p1", 0, 20)
    records = {r.user_id: r for r in services.attendance_compute(session=session)}
    a = records[world.student_a.pk]
    assert a.status == AttendanceRecord.Status.PRESENT
    assert 59 * 60 <= a.present_seconds <= 60 * 60
    assert a.reconnects == 1
    assert a.idle_seconds == 600
    assert records[late.pk].status == AttendanceRecord.Status.LATE
    assert records[partial.pk].status == AttendanceRecord.Status.PARTIAL
    assert records[partial.pk].present_seconds == 20 * 60
    assert records[absent.pk].status == AttendanceRecord.Status.ABSENT
    assert records[absent.pk].present_seconds == 0
    assert world.teacher_a.pk not in records  # attendance is for students
    # idempotent
    again = {r.user_id: r.status for r in services.attendance_compute(session=session)}
    assert again == {k: v.status for k, v in records.items()}
    assert AttendanceRecord.objects.filter(session=session).count() == 4


def test_engagement_counts_chat_polls_and_hands(world):
    import uuid

    session = world.session_a
    services.session_start(session=session, actor=world.teacher_a)
    services.chat_message_post(session=session, author=world.student_a, body="question")
    poll = services.poll_create(session=session, actor=world.teacher_a, question="?", kind="single",
                                options=["a", "b"])
    services.poll_answer(poll_id=poll.pk, user=world.student_a, attempt_id=uuid.uuid4(), positions=[0])
    services.hand_raise(session=session, user=world.student_a)
    session.refresh_from_db()
    start = session.started_at.timestamp()
    services.attendance_interval_record(session_id=session.pk, user_id=world.student_a.pk, conn_id="x1",
                                        joined_at=start, left_at=start + 600, active=600)
    services.session_end(session=session, actor=world.teacher_a)
    session.refresh_from_db()
    LiveSession.objects.filter(pk=session.pk).update(ended_at=session.started_at + dt.timedelta(minutes=10))
    session.refresh_from_db()
    record = {r.user_id: r for r in services.attendance_compute(session=session)}[world.student_a.pk]
    assert (record.chat_messages, record.poll_answers, record.hand_raises) == (1, 1, 1)
    assert record.engagement_score == 1.0


def test_interval_recording_is_idempotent_per_connection(world):
    for _ in range(2):
        services.attendance_interval_record(session_id=world.session_a.pk, user_id=world.student_a.pk, conn_id="c1",
                                            joined_at=at(0), left_at=at(5))
    from classrooms.models import AttendanceInterval

    assert AttendanceInterval.objects.filter(conn_id="c1").count() == 1
