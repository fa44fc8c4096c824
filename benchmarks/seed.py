"""Create one course with a teacher, N students and a live session, plus a login session per person.

Run by the harness in its own process (it needs Django; the harness does not):
`python -m benchmarks.seed --students 2000 --out seed.json`. Everything goes through classrooms.services;
the login sessions are minted with Django's SessionStore (no password hashing, no HTTP login).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed")
    parser.add_argument("--students", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()

    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.db import transaction

    from classrooms import services
    from classrooms.models import Role

    started = time.monotonic()
    with transaction.atomic():
        district = services.district_upsert(slug="bench-district", name="Bench District")
        school = services.institution_upsert(district=district, slug="bench-school", name="Bench School")
        course = services.course_upsert(institution=school, code="BENCH-101", title="Load test lecture", term="bench")
        teacher = services.user_upsert(email="teacher@bench.example", password=None, first_name="Teacher")
        services.membership_grant(user=teacher, institution=school, role=Role.TEACHER)
        services.enrollment_upsert(course=course, user=teacher, role=Role.TEACHER)
        session = services.live_session_upsert(course=course, title="Bench lecture", created_by=teacher)
        students = []
        for i in range(args.students):
            user = services.user_upsert(email=f"s{i:05d}@bench.example", password=None,
                                        first_name=f"Student{i:05d}")
            services.membership_grant(user=user, institution=school, role=Role.STUDENT)
            services.enrollment_upsert(course=course, user=user, role=Role.STUDENT)
            students.append(user)
    session = services.session_start(session=session, actor=teacher)
    seeded = time.monotonic() - started

    engine = import_module(settings.SESSION_ENGINE)
    backend = settings.AUTHENTICATION_BACKENDS[0]

    def login_key(user) -> str:
        store = engine.SessionStore()
        store[SESSION_KEY] = user._meta.pk.value_to_string(user)
        store[BACKEND_SESSION_KEY] = backend
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        return store.session_key

    with transaction.atomic():
        out = {
            "session_id": session.pk,
            "institution_id": session.institution_id,
            "cookie_name": settings.SESSION_COOKIE_NAME,
            "teacher": {"id": teacher.pk, "key": login_key(teacher)},
            "students": [{"id": u.pk, "key": login_key(u)} for u in students],
        }
    with open(args.out, "w") as fh:
        json.dump(out, fh)
    print(f"[bench] seeded {args.students} students in {seeded:.1f}s, sessions in "
          f"{time.monotonic() - started - seeded:.1f}s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
