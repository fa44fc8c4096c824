"""Live session sockets end to end inside one process (WebsocketCommunicator + real Redis + PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from classrooms.models import AttendanceInterval, ChatMessage, PollAnswer
from config.asgi import application
from tests import factories
from tests.conftest import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)


class Client:
    """A socket plus the frames it received, with helpers to wait for a type."""

    def __init__(self, comm: WebsocketCommunicator):
        self.comm = comm
        self.frames: list[dict] = []

    async def next(self, type_: str, timeout: float = 5) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for i, f in enumerate(self.frames):
            if f["type"] == type_:
                return self.frames.pop(i)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {type_} frame; got {[f['type'] for f in self.frames]}")
            frame = json.loads(await self.comm.receive_from(timeout=remaining))
            if frame["type"] == type_:
                return frame
            self.frames.append(frame)

    async def send(self, **msg) -> None:
        await self.comm.send_to(text_data=json.dumps(msg))

    async def request(self, type_: str, **fields) -> dict:
        ref = uuid.uuid4().hex[:8]
        await self.send(type=type_, ref=ref, **fields)
        while True:
            frame = await self.next_any(("ack", "error"))
            if frame["data"].get("ref") == ref:
                return frame
            self.frames.append(frame)

    async def next_any(self, types: tuple[str, ...], timeout: float = 5) -> dict:
        for i, f in enumerate(self.frames):
            if f["type"] in types:
                return self.frames.pop(i)
        frame = json.loads(await self.comm.receive_from(timeout=timeout))
        while frame["type"] not in types:
            self.frames.append(frame)
            frame = json.loads(await self.comm.receive_from(timeout=timeout))
        return frame

    async def close(self) -> None:
        await self.comm.disconnect()


async def connect(user, session, query: str = "") -> tuple[Client, dict]:
    cookie = await database_sync_to_async(login_cookie)(user)
    comm = WebsocketCommunicator(
        application, f"/ws/v1/sessions/{session.pk}/{query}",
        headers=[(b"origin", b"http://localhost:8000"),
                 (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, code = await comm.connect(timeout=5)
    assert connected, code
    client = Client(comm)
    return client, await client.next("snapshot")


async def refused(user, session) -> int:
    cookie = await database_sync_to_async(login_cookie)(user)
    comm = WebsocketCommunicator(
        application, f"/ws/v1/sessions/{session.pk}/",
        headers=[(b"origin", b"http://localhost:8000"),
                 (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, code = await comm.connect(timeout=5)
    if connected:  # refusals are accepted and closed at once, so the browser sees the code
        output = await comm.receive_output(timeout=5)
        assert output["type"] == "websocket.close", output
        code = output["code"]
    await comm.disconnect()
    return code


async def test_snapshot_describes_the_room_for_each_role(world):
    teacher, snap_t = await connect(world.teacher_a, world.session_a)
    student, snap_s = await connect(world.student_a, world.session_a)
    assert snap_t["data"]["you"]["can_moderate"] is True
    assert {r["id"] for r in snap_t["data"]["roster"]} == {world.teacher_a.pk, world.student_a.pk}
    assert snap_s["data"]["you"] == {"id": world.student_a.pk, "name": world.student_a.public_name,
                                     "role": "student", "can_moderate": False}
    assert snap_s["data"]["roster"] is None  # students do not get the enrollment list
    assert snap_s["data"]["resume_token"]
    await teacher.close()
    await student.close()


async def test_chat_is_stored_then_broadcast_with_seq_to_everyone(world):
    teacher, snap = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    ack = await student.request("chat.send", body="  <b>hello</b> class  ")
    assert ack["type"] == "ack"
    for client in (teacher, student):
        frame = await client.next("chat.message")
        assert frame["seq"] == ack["data"]["seq"] == snap["data"]["last_seq"] + 1
        assert frame["data"]["body"] == "<b>hello</b> class"  # stored as text; pages render it inert
        assert frame["data"]["author"] == {"id": world.student_a.pk, "name": world.student_a.public_name}
    assert await database_sync_to_async(ChatMessage.objects.filter(session=world.session_a).count)() == 1
    await teacher.close()
    await student.close()


async def test_a_retried_send_with_the_same_ref_posts_once(world):
    student, _ = await connect(world.student_a, world.session_a)
    await student.send(type="chat.send", ref="same", body="once")
    first = await student.next("ack")
    await student.send(type="chat.send", ref="same", body="once")
    second = await student.next("ack")
    assert first["data"]["seq"] == second["data"]["seq"]
    assert await database_sync_to_async(ChatMessage.objects.count)() == 1
    await student.close()


async def test_teacher_only_actions_are_refused_and_logged(world, caplog):
    student, _ = await connect(world.student_a, world.session_a)
    for type_, fields in [("chat.clear", {"reason": "x"}), ("poll.create", {"question": "q", "kind": "open"}),
                          ("control.remove", {"user_id": world.teacher_a.pk}), ("session.end", {}),
                          ("hand.call_next", {}), ("control.lock", {"feature": "chat", "locked": True})]:
        reply = await student.request(type_, **fields)
        assert reply["type"] == "error" and reply["data"]["code"] == "forbidden", type_
    assert sum("privileged action refused" in r.getMessage() for r in caplog.records) == 6
    await student.close()


async def test_rate_limit_says_slow_down(world, settings):
    # 5 per minute here (5 per 5 s by default): a loaded CI machine must not let the window roll over.
    settings.AULA_RATE_LIMITS = ["chat=5/60"]
    student, _ = await connect(world.student_a, world.session_a)
    for i in range(7):
        await student.send(type="chat.send", ref=f"r{i}", body=f"m{i}")
    replies = {}
    while len(replies) < 7:
        frame = await student.next_any(("ack", "error"))
        replies[frame["data"]["ref"]] = frame
    codes = [replies[f"r{i}"]["type"] for i in range(7)]
    assert codes == ["ack"] * 5 + ["error"] * 2
    assert {replies[f"r{i}"]["data"]["code"] for i in (5, 6)} == {"rate_limited"}
    reply = await student.request("chat.send", body="again")
    assert reply["data"]["code"] == "rate_limited" and reply["data"]["details"]["retry_after"] > 0
    await student.close()


async def test_chat_lock_class_wide_and_per_student(world):
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    assert (await teacher.request("control.lock", feature="chat", locked=True))["type"] == "ack"
    assert (await student.next("controls.updated"))["data"]["locked_features"] == ["chat"]
    reply = await student.request("chat.send", body="hi")
    assert reply["data"]["code"] == "forbidden"
    assert (await teacher.request("chat.send", body="teachers may still talk"))["type"] == "ack"
    await teacher.request("control.lock", feature="chat", locked=False)
    await teacher.request("control.lock", feature="chat", locked=True, user_id=world.student_a.pk)
    assert (await student.request("chat.send", body="hi"))["data"]["code"] == "forbidden"
    await teacher.close()
    await student.close()


async def test_teacher_deletes_and_clears_chat_with_audit(world):
    from auditlog.models import LogEntry

    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    ack = await student.request("chat.send", body="something rude")
    reply = await teacher.request("chat.delete", message_id=ack["data"]["id"], reason="language")
    assert reply["type"] == "ack"
    deleted = await student.next("chat.deleted")
    assert deleted["data"] == {"id": ack["data"]["id"], "by": world.teacher_a.pk}  # the reason stays audited
    await student.request("chat.send", body="another")
    await teacher.request("chat.clear", reason="fresh start")
    assert "reason" not in (await student.next("chat.cleared"))["data"]
    entries = await database_sync_to_async(list)(LogEntry.objects.filter(actor=world.teacher_a)
                                                .values_list("changes", flat=True))
    text = json.dumps(entries)
    assert "chat.delete" in text and "chat.clear" in text and "language" in text
    # A late joiner's replay no longer carries the deleted text.
    late, snap = await connect(world.student_a, world.session_a, "?last_seq=0")
    assert snap["data"]["chat"] == []
    await teacher.close()
    await student.close()
    await late.close()


async def test_poll_answer_is_idempotent_and_results_are_broadcast(world):
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    created = await teacher.request("poll.create", question="2+2?", kind="single", options=["3", "4"], quiz=True,
                                    correct=[1])
    poll_id = created["data"]["poll_id"]
    started = await student.next("poll.started")
    assert started["data"]["poll"]["options"] == [{"position": 0, "label": "3"}, {"position": 1, "label": "4"}]
    assert "correct" not in json.dumps(started["data"])  # the answer key is not sent while open
    attempt = str(uuid.uuid4())
    first = await student.request("poll.answer", poll_id=poll_id, attempt_id=attempt, positions=[1])
    replay = await student.request("poll.answer", poll_id=poll_id, attempt_id=attempt, positions=[1])
    assert first["data"]["duplicate"] is False and replay["data"]["duplicate"] is True
    conflict = await student.request("poll.answer", poll_id=poll_id, attempt_id=str(uuid.uuid4()), positions=[0])
    assert conflict["data"]["code"] == "conflict"
    results = await teacher.next("poll.results")
    assert results["data"]["counts"] == {"0": 0, "1": 1} and results["data"]["respondents"] == 1
    await teacher.request("poll.close", poll_id=poll_id)
    final = [f for f in [await student.next("poll.results")] if f["seq"] is not None] or \
        [await student.next("poll.results")]
    assert final[0]["data"]["correct"] == [1]
    details = await teacher.request_details(poll_id) if hasattr(teacher, "request_details") else None
    await teacher.send(type="poll.details", ref="d", poll_id=poll_id)
    details = await teacher.next("poll.details")
    assert details["data"]["answers"][0]["correct"] is True
    assert await database_sync_to_async(PollAnswer.objects.count)() == 1
    await teacher.close()
    await student.close()


async def test_anonymous_poll_stores_no_user(world):
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    created = await teacher.request("poll.create", question="Mood?", kind="open", anonymous=True)
    await student.request("poll.answer", poll_id=created["data"]["poll_id"], attempt_id=str(uuid.uuid4()),
                          text="sleepy")
    answer = await database_sync_to_async(PollAnswer.objects.get)()
    assert answer.user_id is None and str(world.student_a.pk) not in answer.respondent
    await teacher.close()
    await student.close()


async def test_hand_raise_queue(world):
    other = await database_sync_to_async(factories.user)("student_a2", age=14)
    await database_sync_to_async(factories.enroll)(world.course_a, other)
    teacher, _ = await connect(world.teacher_a, world.session_a)
    s1, _ = await connect(world.student_a, world.session_a)
    s2, _ = await connect(other, world.session_a)
    await s1.request("hand.raise")
    await s1.request("hand.raise")  # idempotent
    await s2.request("hand.raise")
    raised = [await teacher.next("hand.raised"), await teacher.next("hand.raised")]
    assert [r["data"]["user"]["id"] for r in raised] == [world.student_a.pk, other.pk]
    called = await teacher.request("hand.call_next")
    assert called["data"]["user_id"] == world.student_a.pk
    lowered = await s2.next("hand.lowered")
    assert lowered["data"] == {"user_id": world.student_a.pk, "reason": "called"}
    await teacher.request("hand.lower_all")
    assert (await s2.next("hand.lowered"))["data"] == {"user_id": other.pk, "reason": "all"}
    _, snap = await connect(world.teacher_a, world.session_a)
    assert snap["data"]["hands"] == []
    for c in (teacher, s1, s2):
        await c.close()


async def test_removed_student_is_disconnected_and_cannot_rejoin(world):
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    assert (await teacher.request("control.remove", user_id=world.student_a.pk, reason="disruptive"))["type"] == "ack"
    output = await student.comm.receive_output(timeout=5)
    while output["type"] != "websocket.close":
        output = await student.comm.receive_output(timeout=5)
    assert output["code"] == 4408
    assert await refused(world.student_a, world.session_a) == 4408
    await teacher.request("control.readmit", user_id=world.student_a.pk)
    again, _ = await connect(world.student_a, world.session_a)
    await again.close()
    await teacher.close()


async def test_ending_the_session_closes_everyone_and_refuses_reconnects(world):
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    await teacher.request("session.start")
    assert (await student.next("session.status"))["data"]["status"] == "live"
    await teacher.send(type="session.end")
    for client in (student, teacher):  # everyone leaves, the teacher too
        output = await client.comm.receive_output(timeout=5)
        while output["type"] != "websocket.close":
            output = await client.comm.receive_output(timeout=5)
        assert output["code"] == 4409
    assert await refused(world.student_a, world.session_a) == 4409


async def test_resume_replays_exactly_the_missed_events(world):
    teacher, _ = await connect(world.teacher_a, world.session_a)
    student, snap = await connect(world.student_a, world.session_a)
    token, seen = snap["data"]["resume_token"], snap["data"]["last_seq"]
    await student.close()
    for i in range(3):
        await teacher.request("chat.send", body=f"while away {i}")
    back, _ = None, None
    cookie = await database_sync_to_async(login_cookie)(world.student_a)
    comm = WebsocketCommunicator(
        application, f"/ws/v1/sessions/{world.session_a.pk}/?last_seq={seen}&resume={token}",
        headers=[(b"origin", b"http://localhost:8000"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    assert (await comm.connect())[0]
    back = Client(comm)
    replayed = [await back.next("chat.message") for _ in range(3)]
    assert [f["seq"] for f in replayed] == [seen + 1, seen + 2, seen + 3]
    done = await back.next("resume.done")
    assert done["data"]["last_seq"] == seen + 3
    # a forged token (another user's) gets a snapshot instead of a replay
    await back.close()
    await teacher.close()


async def test_presence_diffs_and_attendance_interval(world):
    teacher, snap = await connect(world.teacher_a, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    diff = await teacher.next("presence.diff")
    assert str(world.student_a.pk) in diff["data"]["joins"]
    await student.request("presence.state", state="idle")
    diff = await teacher.next("presence.diff")
    assert diff["data"]["joins"][str(world.student_a.pk)]["metas"][0]["state"] == "idle"
    await student.close()
    diff = await teacher.next("presence.diff")
    assert str(world.student_a.pk) in diff["data"]["leaves"]
    intervals = await database_sync_to_async(list)(AttendanceInterval.objects.filter(user=world.student_a))
    assert len(intervals) == 1 and intervals[0].end_reason == "closed"
    await teacher.close()


async def test_connection_cap_per_user(world):
    clients = [(await connect(world.student_a, world.session_a))[0] for _ in range(5)]
    assert await refused(world.student_a, world.session_a) == 4429
    for c in clients:
        await c.close()


async def wait_closed(client: Client, timeout: float = 8) -> int:
    """Read until the server closes the socket; returns the close code."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        output = await client.comm.receive_output(timeout=max(deadline - loop.time(), 0.01))
        if output["type"] == "websocket.close":
            return output.get("code")


async def test_recheck_closes_exactly_the_sockets_that_lost_access(world, settings):
    """One batched re-check per room: a logged-out user (4401), a changed password (4401), a dropped
    enrollment (4403) and a removed student (4408) go; everyone else in the room stays."""
    from django.contrib.sessions.backends.cached_db import SessionStore
    from django.utils import timezone

    from classrooms.models import Enrollment, ParticipantState
    from tests import factories

    settings.AULA_SOCKET_RECHECK_SECONDS = 1

    def more_students():
        people = [factories.user(f"rc{i}", age=15) for i in range(4)]
        for person in people:
            factories.enroll(world.course_a, person)
        return people

    logged_out, repassworded, dropped, removed = await database_sync_to_async(more_students)()
    teacher, _ = await connect(world.teacher_a, world.session_a)
    stays, _ = await connect(world.student_a, world.session_a)
    clients = {u.pk: (await connect(u, world.session_a))[0] for u in (logged_out, repassworded, dropped, removed)}

    def revoke():
        from django.contrib.sessions.models import Session

        for s in Session.objects.all():
            if s.get_decoded().get("_auth_user_id") == str(logged_out.pk):
                SessionStore(s.session_key).delete()
        repassworded.set_password("a-new-password-2026")
        repassworded.save()
        Enrollment.objects.filter(user=dropped).update(is_active=False)
        ParticipantState.objects.update_or_create(
            session=world.session_a, user=removed,
            defaults={"institution_id": world.session_a.institution_id, "removed_at": timezone.now()})

    await database_sync_to_async(revoke)()
    codes = await asyncio.gather(*(wait_closed(clients[u.pk]) for u in (logged_out, repassworded, dropped, removed)))
    assert codes == [4401, 4401, 4403, 4408]
    # The others are untouched: still served after a full re-check period.
    await asyncio.sleep(1.5)
    pong = await stays.request("chat.send", body="still here")
    assert pong["type"] == "ack"
    assert (await teacher.next("chat.message"))["data"]["body"] == "still here"
    await stays.close()
    await teacher.close()


async def test_state_changes_in_a_big_lecture_go_to_teachers_only(world, monkeypatch):
    """Above the roster threshold students get counts, not other students' presence; a state change
    (which carries no count of its own) must follow the same rule."""
    from classrooms import realtime

    monkeypatch.setattr(realtime, "ROSTER_FOR_STUDENTS_MAX", 1)
    teacher, _ = await connect(world.teacher_a, world.session_a)

    def classmate():
        from tests import factories

        person = factories.user("classmate", age=15)
        factories.enroll(world.course_a, person)
        return person

    other = await database_sync_to_async(classmate)()
    watcher, _ = await connect(other, world.session_a)
    student, _ = await connect(world.student_a, world.session_a)
    await asyncio.sleep(0.6)  # the joins' diff (with its count) is flushed; the change comes on its own
    await student.request("presence.state", state="away")
    for _ in range(5):  # the teacher sees the change ...
        diff = await teacher.next("presence.diff")
        metas = diff["data"]["joins"].get(str(world.student_a.pk), {}).get("metas", [])
        if metas and metas[0]["state"] == "away":
            break
    else:
        raise AssertionError("teacher never saw the state change")
    await asyncio.sleep(0.6)  # ... and the classmate never gets another student's presence
    while not await watcher.comm.receive_nothing(timeout=0.3):  # (a timed-out receive would kill the app)
        frame = json.loads(await watcher.comm.receive_from())
        assert frame["type"] != "presence.diff", frame
    for c in (student, watcher, teacher):
        await c.close()


def test_answers_racing_a_close_are_exactly_the_final_results(world):
    """Answers take a share lock on the poll and no longer wait for each other; the close's exclusive lock
    still orders them: every acknowledged answer is in the final results, and none after."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.core.exceptions import ValidationError
    from django.db import connection

    from classrooms import services
    from config.realtime.models import RoomEvent
    from tests import factories

    students = [factories.user(f"racer{i}", age=15) for i in range(16)]
    for s in students:
        factories.enroll(world.course_a, s)
    poll = services.poll_create(session=world.session_a, actor=world.teacher_a, question="Ready?", kind="single",
                                options=["yes", "no"])
    start = threading.Barrier(len(students) + 1, timeout=20)

    def answer(student) -> bool:
        try:
            start.wait()
            fresh = type(poll).objects.select_related("session__course").get(pk=poll.pk)
            services.poll_answer(poll_id=fresh.pk, user=student, attempt_id=uuid.uuid4(), positions=[0])
            return True
        except ValidationError:
            return False  # "This poll is closed."
        finally:
            connection.close()

    def close() -> None:
        try:
            start.wait()
            services.poll_close(poll=type(poll).objects.select_related("session").get(pk=poll.pk),
                                actor=world.teacher_a)
        finally:
            connection.close()

    with ThreadPoolExecutor(len(students) + 1) as pool:
        answers = [pool.submit(answer, s) for s in students]
        pool.submit(close).result(timeout=30)
        answered = [a.result(timeout=30) for a in answers]
    final = RoomEvent.objects.filter(type="poll.results").order_by("-seq").first().payload
    stored = PollAnswer.objects.filter(poll=poll).count()
    assert final["respondents"] == stored == sum(answered)
    assert final["counts"] == {"0": stored, "1": 0}


async def test_snapshots_share_state_only_at_the_same_seq(world):
    """Joins at the same seq share one build of the room's polls, chat and hands; any stored event moves the
    seq, so the next joiner sees it at once (no stale history within the cache's lifetime)."""
    teacher, first = await connect(world.teacher_a, world.session_a)
    student, same = await connect(world.student_a, world.session_a)
    assert same["data"]["last_seq"] == first["data"]["last_seq"] and same["data"]["chat"] == first["data"]["chat"]
    sent = await teacher.request("chat.send", body="after the first joins")
    _, later = await connect(world.student_a, world.session_a)
    assert later["data"]["last_seq"] == sent["data"]["seq"]
    assert later["data"]["chat"][-1]["body"] == "after the first joins"
    await teacher.request("chat.delete", message_id=sent["data"]["id"], reason="test")
    _, after_delete = await connect(world.student_a, world.session_a)
    assert all(m["id"] != sent["data"]["id"] for m in after_delete["data"]["chat"])
    await student.close()
    await teacher.close()
