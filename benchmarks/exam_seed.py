"""Seed an exam with N students (pre-created attempts) and a login session each; print JSON.

`python -m benchmarks.exam_seed --students 2000 --close-in 150 --out seed.json`: the exam closes
`close-in` seconds from now and its time limit is longer, so every attempt's deadline is the close: all
N deadlines fall in the same second, as at the end of a real exam period.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exam_seed")
    parser.add_argument("--students", type=int, required=True)
    parser.add_argument("--close-in", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import datetime as dt
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.db import transaction
    from django.utils import timezone

    from classrooms import services as cs
    from classrooms.models import Role
    from exams import services
    from exams.models import Exam, Question

    started = time.monotonic()
    now = timezone.now()
    with transaction.atomic():
        district = cs.district_upsert(slug="exam-bench", name="Exam Bench District")
        school = cs.institution_upsert(district=district, slug="exam-bench-school", name="Exam Bench School")
        course = cs.course_upsert(institution=school, code=f"EXB-{int(now.timestamp())}", title="Final", term="b")
        exam = services.exam_upsert(course=course, title="Final exam", opens_at=now - dt.timedelta(minutes=1),
                                    closes_at=now + dt.timedelta(seconds=args.close_in), time_limit_minutes=120,
                                    status=Exam.Status.PUBLISHED)
        bank = services.bank_create(course=course, title="Final bank")
        questions = [services.question_create(bank=bank, kind=Question.Kind.SHORT, prompt=f"Q{i}", correct=["a"])
                     for i in range(10)]
        services.section_add(exam=exam, questions=questions)
        users = []
        for i in range(args.students):
            u = cs.user_upsert(email=f"x{i:05d}-{int(now.timestamp())}@exam.bench", password=None,
                               first_name=f"S{i:05d}")
            cs.enrollment_upsert(course=course, user=u, role=Role.STUDENT)
            users.append(u)
    services.attempts_precreate(exam=exam)
    engine = import_module(settings.SESSION_ENGINE)
    out = {"exam": exam.pk, "questions": [q.pk for q in questions], "closes_at": exam.closes_at.timestamp(),
           "students": []}
    for u in users:
        store = engine.SessionStore()
        store[SESSION_KEY], store[BACKEND_SESSION_KEY] = str(u.pk), settings.AUTHENTICATION_BACKENDS[0]
        store[HASH_SESSION_KEY] = u.get_session_auth_hash()
        store.create()
        out["students"].append({"id": u.pk, "key": store.session_key})
    out["seed_seconds"] = round(time.monotonic() - started, 1)
    with open(args.out, "w") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
