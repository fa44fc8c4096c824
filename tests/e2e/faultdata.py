"""Data for a fault-test stack, run as a subprocess with DATABASE_URL/REDIS_URL pointing at it; prints JSON.

`seed`: two schools, a teacher and students in school A's course with one live session per scenario, a
student of school B with a session of its own, and a signed-in Django session per user (minted directly
with SessionStore, as a login would store it).
`post <session_id> <user_id> <count>`: chat messages written through the service by another process (as the
admin, the API or a task would), printed as their seqs.
`logout <session_key>`: end a login the way the logout view does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.sessions.backends.cached_db import SessionStore  # noqa: E402

from classrooms import realtime, services  # noqa: E402
from classrooms.models import Role  # noqa: E402
from tests import factories  # noqa: E402

SCENARIOS = ("redis", "slow", "kill", "pg", "authz")
STUDENTS = 8


def cookie_for(user) -> str:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key


def person(user) -> dict:
    return {"id": user.pk, "cookie": cookie_for(user)}


def seed() -> None:
    school_a = factories.institution(factories.district("fault-d"), "fault-a")
    school_b = factories.institution(factories.district("fault-e"), "fault-b")
    course_a, course_b = factories.course(school_a, "FLT-A"), factories.course(school_b, "FLT-B")
    teacher = factories.user("fault_teacher")
    factories.enroll(course_a, teacher, Role.TEACHER)
    students = []
    for i in range(STUDENTS):
        s = factories.user(f"fault_student{i}", age=15)
        factories.enroll(course_a, s)
        students.append(s)
    outsider = factories.user("fault_student_b", age=15)
    factories.enroll(course_b, outsider)
    sessions = {}
    for name in SCENARIOS:
        live = factories.live_session(course_a, f"Fault {name}")
        services.session_start(session=live, actor=teacher)
        sessions[name] = {"id": live.pk, "room": realtime.session_room(school_a.pk, live.pk)}
    other = factories.live_session(course_b, "Fault other school")
    print(json.dumps({
        "sessions": sessions,
        "other_session": other.pk,
        "teacher": person(teacher),
        "students": [person(s) for s in students],
        "outsider": person(outsider),
    }))


def post(session_id: str, user_id: str, count: str) -> None:
    from classrooms.models import LiveSession, User

    session, author = LiveSession.objects.get(pk=session_id), User.objects.get(pk=user_id)
    seqs = [services.chat_message_post(session=session, author=author, body=f"out-of-band {i}").seq
            for i in range(int(count))]
    print(json.dumps(seqs))


def logout(session_key: str) -> None:
    SessionStore(session_key).delete()  # what the logout view does to the stored session


if __name__ == "__main__":
    {"seed": seed, "post": post, "logout": logout}[sys.argv[1]](*sys.argv[2:])
