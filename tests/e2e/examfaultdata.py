"""Exam data for a fault-test stack, run as a subprocess against it; prints JSON.

`seed <students> <minutes>`: an exam on a fresh course with N students, each with a started attempt and a
signed-in session; `deadline <attempt_id> <seconds_from_now>`: move one attempt's deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.utils import timezone  # noqa: E402

from classrooms.models import Role  # noqa: E402
from exams import services  # noqa: E402
from exams.models import Attempt, Exam, Question  # noqa: E402
from tests import factories  # noqa: E402
from tests.e2e.faultdata import cookie_for  # noqa: E402


def seed(students: int, minutes: int) -> None:
    now = timezone.now()
    school = factories.institution(factories.district(f"exam-d-{now.timestamp():.0f}"))
    course = factories.course(school, "EXF")
    teacher = factories.user(f"exam_teacher_{now.timestamp():.0f}")
    factories.enroll(course, teacher, Role.TEACHER)
    exam = services.exam_upsert(course=course, title="Fault exam", opens_at=now - dt.timedelta(minutes=1),
                                closes_at=now + dt.timedelta(hours=2), time_limit_minutes=minutes,
                                status=Exam.Status.PUBLISHED, shuffle_questions=False)
    bank = services.bank_create(course=course, title="B")
    questions = [services.question_create(bank=bank, kind=Question.Kind.SHORT, prompt=f"q{i}", correct=["x"])
                 for i in range(3)]
    services.section_add(exam=exam, questions=questions)
    out = {"exam": exam.pk, "questions": [q.pk for q in questions], "teacher": cookie_for(teacher), "students": []}
    for i in range(students):
        s = factories.user(f"exam_student_{i}_{now.timestamp():.0f}", age=16)
        factories.enroll(course, s)
        attempt = services.attempt_start(exam=exam, student=s)
        out["students"].append({"id": s.pk, "attempt": attempt.pk, "cookie": cookie_for(s)})
    print(json.dumps(out))


def deadline(attempt_id: int, seconds: float) -> None:
    when = timezone.now() + dt.timedelta(seconds=seconds)
    Attempt.objects.filter(pk=attempt_id).update(deadline=when)
    print(json.dumps({"deadline": when.isoformat()}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "seed":
        seed(int(args[0]), int(args[1]))
    elif command == "deadline":
        deadline(int(args[0]), float(args[1]))
