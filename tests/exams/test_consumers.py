"""The attempt socket and its HTTP fallback: autosave acks, submit replays, isolation, proctor board."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from config.asgi import application
from exams import services
from exams.models import Attempt, IntegrityEvent, Notification
from tests.conftest import login_cookie
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db(transaction=True)


async def open_socket(user, path):
    """(communicator, admitted, close code). A refused socket is accepted and closed at once with a code."""
    cookie = await database_sync_to_async(login_cookie)(user)
    comm = WebsocketCommunicator(application, path, headers=[
        (b"origin", b"http://localhost:8000"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, code = await comm.connect(timeout=5)
    if not connected:
        return comm, False, code
    first = await comm.receive_output(timeout=5)
    if first["type"] == "websocket.close":
        return comm, False, first["code"]
    comm._first = first
    return comm, True, None


async def frames_until(comm, type_, timeout=5):
    seen = []
    first = getattr(comm, "_first", None)
    if first is not None:
        comm._first = None
        frame = json.loads(first["text"])
        if frame["type"] == type_:
            return frame, seen
        seen.append(frame)
    while True:
        frame = json.loads(await comm.receive_from(timeout=timeout))
        if frame["type"] == type_:
            return frame, seen
        seen.append(frame)


async def test_autosave_over_the_socket_acknowledges_only_what_is_stored(world):
    ex = await database_sync_to_async(ExamWorld)(world)
    attempt = await database_sync_to_async(services.attempt_start)(exam=ex.exam, student=world.student_a)
    comm, ok, _ = await open_socket(world.student_a, f"/ws/v1/attempts/{attempt.pk}/")
    assert ok
    snap, _ = await frames_until(comm, "snapshot")
    assert snap["data"]["attempt"]["deadline"] and snap["data"]["server_time"]
    assert len(snap["data"]["questions"]) == 6
    assert "correct" not in json.dumps(snap["data"]["questions"])  # no answer key on the wire
    await comm.send_to(text_data=json.dumps({"type": "answer.save", "ref": "a1", "question_id": ex.q_short.pk,
                                             "value": "Paris", "version": 2}))
    ack, _ = await frames_until(comm, "ack")
    assert ack["data"] | {"saved_at": None} == {"ref": "a1", "question_id": ex.q_short.pk, "version": 2,
                                                "applied": True, "saved_at": None}
    await comm.send_to(text_data=json.dumps({"type": "answer.save", "ref": "a2", "question_id": ex.q_short.pk,
                                             "value": "Rome", "version": 1}))
    stale, _ = await frames_until(comm, "ack")
    assert stale["data"]["applied"] is False and stale["data"]["version"] == 2
    await comm.send_to(text_data=json.dumps({"type": "attempt.submit", "ref": "s"}))
    submitted, _ = await frames_until(comm, "ack")
    assert submitted["data"]["state"] == "submitted"
    await comm.send_to(text_data=json.dumps({"type": "answer.save", "ref": "a3", "question_id": ex.q_short.pk,
                                             "value": "Late", "version": 3}))
    refused, _ = await frames_until(comm, "error")
    assert refused["data"]["code"] == "attempt_closed"
    await comm.disconnect()
    stored = await database_sync_to_async(lambda: Attempt.objects.get(pk=attempt.pk).answers.get(
        question=ex.q_short).value)()
    assert stored == "Paris"


async def test_another_students_attempt_is_not_found_on_socket_and_http(world, caplog):
    ex = await database_sync_to_async(ExamWorld)(world)
    attempt = await database_sync_to_async(services.attempt_start)(exam=ex.exam, student=world.student_a)
    comm, ok, code = await open_socket(world.student_b, f"/ws/v1/attempts/{attempt.pk}/")
    assert not ok and code == 4404
    await comm.disconnect()

    def http():
        c = Client()
        c.force_login(world.student_b)
        r = c.post(f"/api/v1/attempts/{attempt.pk}/answers/",
                   data={"question_id": ex.q_short.pk, "value": "x", "version": 5}, content_type="application/json")
        return r.status_code, r.json()

    status, body = await database_sync_to_async(http)()
    assert status == 404 and body["error"]["code"] == "not_found"
    assert not await database_sync_to_async(
        lambda: Attempt.objects.get(pk=attempt.pk).answers.exists())()
    assert sum("refused" in r.getMessage() for r in caplog.records) >= 2


async def test_submit_replayed_over_rest_and_socket_concurrently_submits_once(world):
    ex = await database_sync_to_async(ExamWorld)(world)
    attempt = await database_sync_to_async(services.attempt_start)(exam=ex.exam, student=world.student_a)
    comm, ok, _ = await open_socket(world.student_a, f"/ws/v1/attempts/{attempt.pk}/")
    await frames_until(comm, "snapshot")

    def rest(n):
        c = Client(enforce_csrf_checks=False)
        c.force_login(world.student_a)
        return [c.post(f"/api/v1/attempts/{attempt.pk}/submit/", data={}, content_type="application/json").status_code
                for _ in range(n)]

    rest_task = asyncio.gather(*[database_sync_to_async(rest, thread_sensitive=False)(10) for _ in range(5)])
    for i in range(50):
        await comm.send_to(text_data=json.dumps({"type": "attempt.submit", "ref": f"s{i}"}))
    statuses = sum(await rest_task, [])
    acks = [await frames_until(comm, "ack") for _ in range(50)]
    assert set(statuses) == {200} and len(statuses) == 50
    assert {a[0]["data"]["state"] for a in acks} == {"submitted"}
    await comm.disconnect()
    counts = await database_sync_to_async(lambda: (
        IntegrityEvent.objects.filter(attempt=attempt, kind="submitted").count(),
        Notification.objects.filter(attempt=attempt).count()))()
    assert counts == (1, 1)


async def test_proctor_board_sees_students_live_and_grants_time(world):
    ex = await database_sync_to_async(ExamWorld)(world)
    await database_sync_to_async(services.attempts_precreate)(exam=ex.exam)
    board, ok, _ = await open_socket(world.teacher_a, f"/ws/v1/exams/{ex.exam.pk}/proctor/")
    assert ok
    snap, _ = await frames_until(board, "snapshot")
    assert [r["state"] for r in snap["data"]["attempts"]] == ["not_started"]
    attempt = await database_sync_to_async(services.attempt_start)(exam=ex.exam, student=world.student_a)
    status, _ = await frames_until(board, "attempt.status")
    assert status["data"]["state"] == "in_progress" and status["data"]["attempt_id"] == attempt.pk
    student, _, _ = await open_socket(world.student_a, f"/ws/v1/attempts/{attempt.pk}/")
    conn, _ = await frames_until(board, "attempt.connection")
    assert conn["data"] == conn["data"] | {"attempt_id": attempt.pk, "connected": True}
    await board.send_to(text_data=json.dumps({"type": "extra_time", "ref": "x", "attempt_id": attempt.pk,
                                              "minutes": 15}))
    ack, _ = await frames_until(board, "ack")
    timer, _ = await frames_until(student, "attempt.status")
    assert timer["data"]["deadline"].startswith(ack["data"]["deadline"][:16])
    assert timer["data"]["extra_minutes"] == 15
    await student.disconnect()
    await board.disconnect()
    refused, ok, code = await open_socket(world.student_a, f"/ws/v1/exams/{ex.exam.pk}/proctor/")
    assert not ok and code == 4403
    await refused.disconnect()


def test_http_fallback_refuses_bad_values_with_400_and_records_events(world):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    c = Client()
    c.force_login(world.student_a)
    r = c.post(f"/api/v1/attempts/{attempt.pk}/answers/", data={"question_id": ex.q_num.pk, "value": "NaN",
                                                               "version": 1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    r = c.post(f"/api/v1/attempts/{attempt.pk}/events/", data={"kind": "focus_lost", "duration_ms": 1500},
               content_type="application/json")
    assert r.status_code == 200 and r.json() == {"recorded": True}
    assert IntegrityEvent.objects.filter(attempt=attempt, kind="focus_lost", data__duration_ms=1500).exists()


async def test_proctor_sees_the_answered_count_when_it_changes_not_on_every_save(world):
    ex = await database_sync_to_async(ExamWorld)(world)
    attempt = await database_sync_to_async(services.attempt_start)(exam=ex.exam, student=world.student_a)
    board, ok, _ = await open_socket(world.teacher_a, f"/ws/v1/exams/{ex.exam.pk}/proctor/")
    assert ok
    await frames_until(board, "snapshot")
    student, ok, _ = await open_socket(world.student_a, f"/ws/v1/attempts/{attempt.pk}/")
    assert ok
    await frames_until(student, "snapshot")
    for ref, question, version in [("a", ex.q_short, 1), ("b", ex.q_short, 2), ("c", ex.q_tf, 1)]:
        value = True if question == ex.q_tf else f"v{version}"
        await student.send_to(text_data=json.dumps({"type": "answer.save", "ref": ref, "question_id": question.pk,
                                                    "value": value, "version": version}))
        ack, _ = await frames_until(student, "ack")
        assert ack["data"]["applied"] is True
    first, _ = await frames_until(board, "attempt.progress")
    second, between = await frames_until(board, "attempt.progress")
    assert (first["data"]["answered"], second["data"]["answered"]) == (1, 2)
    assert not [f for f in between if f["type"] == "attempt.progress"]
    await student.disconnect()
    await board.disconnect()


async def test_attempt_sockets_of_an_exam_are_rechecked_together(world, settings):
    """The periodic re-check batches an exam's attempt sockets: a student who left the school loses the
    socket (4403); a classmate in the same exam keeps theirs."""
    from classrooms.models import Enrollment, Membership
    from tests import factories

    settings.AULA_SOCKET_RECHECK_SECONDS = 1

    def setup():
        ex = ExamWorld(world)
        classmate = factories.user("exam-classmate", age=15)
        factories.enroll(world.course_a, classmate)
        return (services.attempt_start(exam=ex.exam, student=world.student_a),
                services.attempt_start(exam=ex.exam, student=classmate), classmate)

    leaving, staying, classmate = await database_sync_to_async(setup)()
    gone, ok_a, _ = await open_socket(world.student_a, f"/ws/v1/attempts/{leaving.pk}/")
    kept, ok_b, _ = await open_socket(classmate, f"/ws/v1/attempts/{staying.pk}/")
    assert ok_a and ok_b

    def leave_school():
        Enrollment.objects.filter(user=world.student_a).update(is_active=False)
        Membership.objects.filter(user=world.student_a).update(is_active=False)

    await database_sync_to_async(leave_school)()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 8
    while True:
        output = await gone.receive_output(timeout=max(deadline - loop.time(), 0.01))
        if output["type"] == "websocket.close":
            assert output["code"] == 4403
            break
    await asyncio.sleep(1.5)  # a full period later the classmate is still served
    await kept.send_to(text_data=json.dumps({"type": "time.sync", "ref": "t1", "client_time": 0}))
    assert not await kept.receive_nothing(timeout=1)
    await kept.disconnect()


async def test_saves_beyond_the_sockets_limit_are_refused_with_retry_after_and_change_nothing(world):
    from exams.consumers import SAVE_LIMIT
    from exams.models import Answer

    ex = await database_sync_to_async(ExamWorld)(world)
    attempt = await database_sync_to_async(services.attempt_start)(exam=ex.exam, student=world.student_a)
    comm, ok, _ = await open_socket(world.student_a, f"/ws/v1/attempts/{attempt.pk}/")
    assert ok
    await frames_until(comm, "snapshot")
    total = SAVE_LIMIT.count + 3
    for v in range(1, total + 1):
        await comm.send_to(text_data=json.dumps({"type": "answer.save", "ref": f"s{v}",
                                                 "question_id": ex.q_short.pk, "value": f"v{v}", "version": v}))
    replies = {}
    while len(replies) < total:
        frame = json.loads(await comm.receive_from(timeout=10))
        if frame["type"] in ("ack", "error"):
            replies[frame["data"]["ref"]] = frame
    assert all(replies[f"s{v}"]["type"] == "ack" for v in range(1, SAVE_LIMIT.count + 1))
    refused = [replies[f"s{v}"] for v in range(SAVE_LIMIT.count + 1, total + 1)]
    assert all(r["type"] == "error" and r["data"]["code"] == "rate_limited" for r in refused)
    assert all(0 < r["data"]["details"]["retry_after"] <= SAVE_LIMIT.window for r in refused)
    stored = await database_sync_to_async(lambda: Answer.objects.get(attempt=attempt, question=ex.q_short))()
    assert stored.version == SAVE_LIMIT.count  # the refused saves changed nothing
    await comm.disconnect()


def test_local_limit_counts_in_fixed_windows():
    from config.realtime.ratelimit import Limit, LocalLimit

    limit = LocalLimit(Limit(2, 10))
    assert limit.hit(100.0).allowed and limit.hit(101.0).allowed
    refused = limit.hit(104.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(6.0)
    assert limit.hit(110.0).allowed  # a new window


async def test_a_second_socket_of_the_same_attempt_shares_the_save_limit(world):
    from exams.consumers import SAVE_LIMIT

    ex = await database_sync_to_async(ExamWorld)(world)
    attempt = await database_sync_to_async(services.attempt_start)(exam=ex.exam, student=world.student_a)
    socks = []
    for _ in range(2):
        comm, ok, _ = await open_socket(world.student_a, f"/ws/v1/attempts/{attempt.pk}/")
        assert ok
        await frames_until(comm, "snapshot")
        socks.append(comm)
    each = SAVE_LIMIT.count // 2 + 5  # together 10 more than the limit
    codes = []
    for i, comm in enumerate(socks):
        for n in range(each):
            v = i * 1000 + n + 1
            await comm.send_to(text_data=json.dumps({"type": "answer.save", "ref": f"s{v}",
                                                     "question_id": ex.q_short.pk, "value": f"v{v}", "version": v}))
        got = 0
        while got < each:
            frame = json.loads(await comm.receive_from(timeout=10))
            if frame["type"] in ("ack", "error") and str(frame["data"].get("ref", "")).startswith("s"):
                got += 1
                codes.append(frame["data"]["code"] if frame["type"] == "error" else "ack")
    assert codes.count("ack") == SAVE_LIMIT.count and codes.count("rate_limited") == 2 * each - SAVE_LIMIT.count
    for comm in socks:
        await comm.disconnect()
