"""Count the SQL statements behind each real-time operation of one student (evidence for docs/benchmarks.md).

Runs the same sync code the live-session consumer runs in its database thread, with Django's
CaptureQueriesContext, against a seeded database:

    .venv/bin/python -m config.devservers env -- sh -c \
        '.venv/bin/python manage.py migrate -v0 && .venv/bin/python -m benchmarks.query_counts'

BEGIN / SET TRANSACTION / COMMIT are counted. Not counted: the `SELECT 1` health check Django runs before the first query of every database_sync_to_async
call (CONN_HEALTH_CHECKS=True; Channels closes old connections around each call), and Redis commands.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    students = int(os.environ.get("BENCH_STUDENTS", "200"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed.json")
        from benchmarks import seed

        seed.main(["--students", str(students), "--out", path])
        with open(path) as fh:
            data = json.load(fh)

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from classrooms import services
    from classrooms.consumers import LiveSessionConsumer
    from classrooms.models import LiveSession, Poll, PollAnswer, User
    from classrooms.realtime import session_room
    from config.realtime.middleware import _user_from_session, session_still_valid

    session = LiveSession.objects.select_related("course").get(pk=data["session_id"])
    student = User.objects.get(pk=data["students"][0]["id"])
    teacher = User.objects.get(pk=data["teacher"]["id"])
    key = data["students"][0]["key"]

    def consumer_for(user: User, role: str) -> LiveSessionConsumer:
        c = LiveSessionConsumer()
        c.scope = {"url_route": {"kwargs": {"session_id": session.pk}}, "session_key": key, "query_string": b""}
        c.user, c.session, c.role = user, session, role
        c.is_staff_role = role in ("teacher", "ta")
        c.room_key = session_room(session.institution_id, session.pk)
        c.conn_id = uuid.uuid4().hex
        return c

    rows: list[tuple[str, int]] = []

    def count(label: str, fn) -> None:
        with CaptureQueriesContext(connection) as ctx:
            fn()
        rows.append((label, len(ctx.captured_queries)))

    c = consumer_for(student, "student")
    count("connect: session cookie → user (middleware)", lambda: _user_from_session.func(key))
    load = LiveSessionConsumer.__dict__["_load"].func  # the sync function under @database_sync_to_async
    count("connect: authorize (_load)", lambda: load(c, session.pk))
    count("connect: snapshot, empty room (_build_snapshot)", c._build_snapshot)
    count("re-check, every 30 s per socket (session_still_valid + still_authorized)",
          lambda: (session_still_valid(key, student.pk), c.still_authorized()))

    def chat() -> None:
        s = LiveSession.objects.select_related("course").get(pk=session.pk)  # what _call does first
        services.chat_message_post(session=s, author=student, body="hello", client_ref=uuid.uuid4().hex)

    count("chat.send (_call + chat_message_post)", chat)
    for _ in range(120):
        chat()
    poll = services.poll_create(session=session, actor=teacher, question="Q", kind="single", options=["A", "B"])
    others = [User.objects.get(pk=s["id"]) for s in data["students"][1:]]

    def answer(user: User) -> None:
        s = LiveSession.objects.select_related("course").get(pk=session.pk)
        p = Poll.objects.filter(session=s, pk=poll.pk).select_related("session").first()
        services.poll_answer(poll_id=p.pk, user=user, attempt_id=uuid.uuid4(), positions=[0])

    count("poll.answer (_call + _poll + poll_answer)", lambda: answer(student))
    for u in others:
        answer(u)
    count("poll results publish (every 250 ms while answers arrive)",
          lambda: services.poll_results_publish(poll=Poll.objects.select_related("session").get(pk=poll.pk)))
    count(f"connect: snapshot with 120 chat messages and a poll of {students} answers", c._build_snapshot)
    t = consumer_for(teacher, "teacher")
    count(f"connect: teacher snapshot (roster of {students})", t._build_snapshot)

    answers = PollAnswer.objects.filter(poll=poll).count()
    print(f"| operation ({students} students, {answers} poll answers) | SQL statements |")
    print("|---|---|")
    for label, n in rows:
        print(f"| {label} | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
