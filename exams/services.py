"""Writes for exams (authoring, attempts and grading arrive with the exams capability)."""

from __future__ import annotations

import datetime as dt

from classrooms.services import upsert
from classrooms.models import Course
from exams.models import Exam


def exam_upsert(*, course: Course, title: str, opens_at: dt.datetime | None = None,
                closes_at: dt.datetime | None = None, time_limit_minutes: int = 60,
                status: str = Exam.Status.DRAFT) -> Exam:
    return upsert(Exam, course=course, title=title,
                  defaults={"institution_id": course.institution_id, "opens_at": opens_at, "closes_at": closes_at,
                            "time_limit_minutes": time_limit_minutes, "status": status})
