"""Attendance derived from what happened: connection intervals plus engagement (see docs/attendance.md)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from classrooms.models import (
    AttendanceInterval,
    AttendanceRecord,
    ChatMessage,
    Enrollment,
    HandRaise,
    LiveSession,
    PollAnswer,
    Role,
)

RECONNECT_MERGE_SECONDS = 60  # a gap shorter than this between two stays is a reconnect, not a leave


def _setting(name: str, default):
    return getattr(settings, name, default)


def merge_spans(intervals: list[tuple[dt.datetime, dt.datetime]], gap: float) -> list[list[dt.datetime]]:
    """Union of stays, with gaps shorter than `gap` seconds bridged (several tabs count once)."""
    spans: list[list[dt.datetime]] = []
    for start, end in sorted(intervals):
        if spans and (start - spans[-1][1]).total_seconds() <= gap:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return spans


def classify(present: float, duration: float, first_join: dt.datetime | None, started: dt.datetime) -> str:
    if present <= 0 or first_join is None:
        return AttendanceRecord.Status.ABSENT
    threshold = _setting("AULA_ATTENDANCE_PRESENT_RATIO", 0.75)
    late_after = _setting("AULA_ATTENDANCE_LATE_MINUTES", 10) * 60
    if duration <= 0 or present / duration >= threshold:
        if (first_join - started).total_seconds() > late_after:
            return AttendanceRecord.Status.LATE
        return AttendanceRecord.Status.PRESENT
    return AttendanceRecord.Status.PARTIAL


def compute_session_attendance(session: LiveSession) -> list[AttendanceRecord]:
    """Recompute every student's record for a session (idempotent: upserts one row per student)."""
    intervals = list(AttendanceInterval.objects.filter(session=session).order_by("joined_at"))
    if not intervals and session.started_at is None:
        return []
    started = session.started_at or min(i.joined_at for i in intervals)
    ended = session.ended_at or max(i.left_at for i in intervals)
    duration = max((ended - started).total_seconds(), 0)

    by_user: dict[int, list[AttendanceInterval]] = defaultdict(list)
    for interval in intervals:
        by_user[interval.user_id].append(interval)

    chats = dict(ChatMessage.objects.filter(session=session).values_list("author_id").annotate(n=Count("id")))
    answers = dict(PollAnswer.objects.filter(poll__session=session, user__isnull=False)
                   .values_list("user_id").annotate(n=Count("id")))
    hands = dict(HandRaise.objects.filter(session=session).values_list("user_id").annotate(n=Count("id")))
    students = list(Enrollment.objects.filter(course_id=session.course_id, role=Role.STUDENT)
                    .values_list("user_id", flat=True))

    records = []
    with transaction.atomic():
        for user_id in students:
            stays = by_user.get(user_id, [])
            clipped = [(max(i.joined_at, started), min(i.left_at, ended)) for i in stays]
            clipped = [(a, b) for a, b in clipped if b > a]
            spans = merge_spans(clipped, RECONNECT_MERGE_SECONDS)
            present = sum((b - a).total_seconds() for a, b in spans)
            gaps_bridged = max(len(merge_spans(clipped, 0)) - len(spans), 0)
            reconnects = max(sum(1 for i in stays if i.resumed), gaps_bridged)
            active = min(sum(i.active_seconds for i in stays), present)
            idle = min(sum(i.idle_seconds for i in stays), max(present - active, 0))
            interactions = chats.get(user_id, 0) + answers.get(user_id, 0) + hands.get(user_id, 0)
            score = 0.0
            if present > 0:
                score = round(0.6 * (active / present) + 0.4 * min(1.0, interactions / 3), 3)
            first_join = min((a for a, _ in spans), default=None)
            record, _ = AttendanceRecord.objects.update_or_create(
                session=session, user_id=user_id,
                defaults={
                    "institution_id": session.institution_id,
                    "status": classify(present, duration, first_join, started),
                    "first_join": first_join, "last_leave": max((b for _, b in spans), default=None),
                    "present_seconds": int(present), "active_seconds": int(active), "idle_seconds": int(idle),
                    "reconnects": reconnects, "chat_messages": chats.get(user_id, 0),
                    "poll_answers": answers.get(user_id, 0), "hand_raises": hands.get(user_id, 0),
                    "engagement_score": score,
                },
            )
            records.append(record)
    return records
