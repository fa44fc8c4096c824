"""Whiteboard and notes sockets inside one process (WebsocketCommunicator + real Redis + PostgreSQL), with
pycrdt playing the browser's Yjs document (same binary update format)."""

from __future__ import annotations

import base64

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from pycrdt import Doc, Map, Text

from classrooms import services
from classrooms.models import CollabClient, CollabUpdate, Feature
from config.asgi import application
from tests.classrooms.test_consumers import Client, connect
from tests.conftest import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def open_collab(user, session) -> tuple[Client, dict]:
    return await connect(user, session, "collab/")


class Replica:
    """A participant's copy of one document, as the browser keeps it."""

    def __init__(self, kind: str = "board"):
        self.kind = kind
        self.doc = Doc()
        self.elements = self.doc.get("elements", type=Map)
        self.body = self.doc.get("body", type=Text)
        self.sent = self.doc.get_state()

    def change(self) -> bytes:
        update = self.doc.get_update(self.sent)
        self.sent = self.doc.get_state()
        return update

    def stroke(self, key: str, author: int, points=(1, 2, 3, 4)) -> bytes:
        self.elements[key] = Map({"id": key, "type": "pen", "page": "p1", "author": author, "color": "#000000",
                                  "width": 3, "z": 1})
        return self.change()

    async def sync(self, client: Client) -> dict:
        ack = await client.request("sync", doc=self.kind, sv=b64(self.doc.get_state()))
        assert ack["type"] == "ack", ack
        self.doc.apply_update(base64.b64decode(ack["data"]["update"]))
        self.sent = self.doc.get_state()
        return ack


async def started(world):
    await database_sync_to_async(services.session_start)(session=world.session_a, actor=world.teacher_a)


async def test_a_stroke_is_stored_then_reaches_everyone_and_a_late_joiner_catches_up(world):
    await started(world)
    teacher, snap = await open_collab(world.teacher_a, world.session_a)
    student, snap_s = await open_collab(world.student_a, world.session_a)
    assert snap_s["data"]["me"]["user_id"] == world.student_a.pk
    assert snap_s["data"]["docs"]["board"]["edit"] == {"allowed": True, "reason": None}
    mine = Replica()
    ack = await student.request("update", doc="board", update=b64(mine.stroke("s1", world.student_a.pk)))
    assert ack["type"] == "ack", ack
    # Stored before the acknowledgement.
    assert await database_sync_to_async(CollabUpdate.objects.filter(author=world.student_a).count)() == 1
    relayed = await teacher.next("update")
    assert relayed["data"]["doc"] == "board" and relayed["data"]["by"] == [world.student_a.pk]
    theirs = Replica()
    theirs.doc.apply_update(base64.b64decode(relayed["data"]["update"]))
    assert theirs.elements["s1"]["author"] == world.student_a.pk
    # The replica is bound to the student: authorship colours everywhere.
    bound = await teacher.next("clients")
    assert set(bound["data"]["clients"].values()) == {world.student_a.pk}
    late, _ = await open_collab(world.teacher_a, world.session_a)
    fresh = Replica()
    ack = await fresh.sync(late)
    assert ack["data"]["behind"] is True and "s1" in fresh.elements
    for c in (teacher, student, late):
        await c.close()


async def test_a_locked_board_refuses_the_students_stroke_and_keeps_the_document(world):
    await started(world)
    student, _ = await open_collab(world.student_a, world.session_a)
    await database_sync_to_async(services.feature_lock)(session=world.session_a, actor=world.teacher_a,
                                                        feature=Feature.WHITEBOARD, locked=True)
    edit = await student.next("edit")
    assert edit["data"]["doc"] == "board" and edit["data"]["allowed"] is False
    mine = Replica()
    refused = await student.request("update", doc="board", update=b64(mine.stroke("s1", world.student_a.pk)))
    assert refused["type"] == "error" and refused["data"]["code"] == "locked"
    assert await database_sync_to_async(CollabUpdate.objects.count)() == 0
    # The notes are not locked; the teacher can still draw.
    teacher, _ = await open_collab(world.teacher_a, world.session_a)
    ack = await teacher.request("update", doc="board", update=b64(Replica().stroke("t1", world.teacher_a.pk)))
    assert ack["type"] == "ack"
    check = Replica()
    await check.sync(teacher)
    assert list(check.elements.keys()) == ["t1"]
    # Per-student lock: unlocking the class still leaves this student locked.
    await database_sync_to_async(services.feature_lock)(session=world.session_a, actor=world.teacher_a,
                                                        feature=Feature.WHITEBOARD, locked=True,
                                                        user=world.student_a)
    await database_sync_to_async(services.feature_lock)(session=world.session_a, actor=world.teacher_a,
                                                        feature=Feature.WHITEBOARD, locked=False)
    told = await student.next("edit")
    assert told["data"]["allowed"] is False and "for you" in told["data"]["reason"]
    again = await student.request("update", doc="board", update=b64(Replica().stroke("s2", world.student_a.pk)))
    assert again["data"]["code"] == "locked" and "for you" in again["data"]["message"]
    await student.close()
    await teacher.close()


async def test_forged_and_malformed_updates_are_refused_and_change_nothing(world):
    await started(world)
    teacher, _ = await open_collab(world.teacher_a, world.session_a)
    student, _ = await open_collab(world.student_a, world.session_a)
    # An element claiming another author.
    forged = await student.request("update", doc="board", update=b64(Replica().stroke("x", world.teacher_a.pk)))
    assert forged["data"]["code"] == "forbidden"
    # Writing as the teacher's replica (its clientID is bound to the teacher once the teacher writes).
    teacher_replica = Replica()
    assert (await teacher.request("update", doc="board",
                                  update=b64(teacher_replica.stroke("t1", world.teacher_a.pk))))["type"] == "ack"
    copycat = Doc(client_id=teacher_replica.doc.client_id)
    copycat.apply_update(teacher_replica.doc.get_update())
    before = copycat.get_state()
    copycat.get("elements", type=Map)["t1"]["color"] = "#ff0000"
    stolen = await student.request("update", doc="board", update=b64(copycat.get_update(before)))
    assert stolen["data"]["code"] == "forbidden"
    # Garbage, bad base64, an unknown element type.
    assert (await student.request("update", doc="board", update=b64(b"\x01\x02garbage")))["data"]["code"] == \
        "invalid_update"
    assert (await student.request("update", doc="board", update="!!notbase64!!"))["data"]["code"] == "invalid_update"
    odd = Replica()
    odd.elements["o"] = Map({"type": "script", "author": world.student_a.pk})
    assert (await student.request("update", doc="board", update=b64(odd.change())))["data"]["code"] == \
        "invalid_update"
    assert (await student.request("update", doc="whiteboard", update="AAAA"))["data"]["code"] == "invalid_fields"
    check = Replica()
    await check.sync(teacher)
    assert list(check.elements.keys()) == ["t1"] and check.elements["t1"]["color"] == "#000000"
    assert await database_sync_to_async(CollabUpdate.objects.count)() == 1
    # The socket is still open after all of that.
    await student.send(type="ping", ref="p1")
    assert (await student.next("pong"))["data"]["ref"] == "p1"
    await student.close()
    await teacher.close()


async def test_another_schools_or_classes_student_cannot_open_the_board(world):
    cookie = await database_sync_to_async(login_cookie)(world.student_b)
    comm = WebsocketCommunicator(
        application, f"/ws/v1/sessions/{world.session_a.pk}/collab/",
        headers=[(b"origin", b"http://localhost:8000"),
                 (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    connected, _ = await comm.connect(timeout=5)
    assert connected
    output = await comm.receive_output(timeout=5)
    assert output["type"] == "websocket.close" and output["code"] in (4403, 4404)
    await comm.disconnect()


async def test_notes_text_goes_through_the_pattern_stage_before_others_see_it(world):
    from moderation.models import PatternList, PatternRule

    def word_list():
        pl = PatternList.objects.create(name="class words", action="censor", institution=world.school_a)
        PatternRule.objects.create(pattern_list=pl, kind="term", pattern="dumbo")

    await database_sync_to_async(word_list)()
    await started(world)
    teacher, _ = await open_collab(world.teacher_a, world.session_a)
    student, _ = await open_collab(world.student_a, world.session_a)
    notes = Replica("notes")
    notes.body.insert(0, "photosynthèse needs light 👋\nyou dumbo, réally")
    ack = await student.request("update", doc="notes", update=b64(notes.change()))
    assert ack["type"] == "ack"
    notice = await student.next("notice")
    assert notice["data"]["code"] == "masked"
    relayed = await teacher.next("update")
    seen = Replica("notes")
    seen.doc.apply_update(base64.b64decode(relayed["data"]["update"]))
    assert str(seen.body) == "photosynthèse needs light 👋\nyou *****, réally"
    await student.close()
    await teacher.close()


async def test_cursors_carry_the_server_known_name_and_students_cannot_present(world):
    await started(world)
    teacher, _ = await open_collab(world.teacher_a, world.session_a)
    student, _ = await open_collab(world.student_a, world.session_a)
    await student.send(type="awareness", doc="board",
                       state={"client": 1, "page": "p1", "cursor": {"x": 10, "y": 20}, "presenting": True})
    frame = await teacher.next("awareness")
    state = frame["data"]["states"][str(world.student_a.pk)]
    assert state["name"] == world.student_a.public_name and state["presenting"] is False
    assert state["cursor"] == {"x": 10.0, "y": 20.0}
    bad = await student.request("awareness", doc="board", state={"cursor": {"x": "evil"}, "name": "Admin"})
    assert bad["data"]["code"] == "invalid_fields"
    await student.close()
    gone = await teacher.next("awareness")
    assert gone["data"]["gone"] == [world.student_a.pk]
    await teacher.close()


async def test_offline_edits_merge_on_reconnect_through_sync(world):
    await started(world)
    a, _ = await open_collab(world.teacher_a, world.session_a)
    b, _ = await open_collab(world.student_a, world.session_a)
    ra, rb = Replica(), Replica()
    await ra.sync(a)
    await rb.sync(b)
    # Partitioned: both edit the same shape's properties and add their own.
    assert (await a.request("update", doc="board", update=b64(ra.stroke("shape", world.teacher_a.pk))))["type"] \
        == "ack"
    await rb.sync(b)
    await b.close()
    ra.elements["shape"]["color"] = "#ff0000"
    rb.elements["shape"]["width"] = 9
    rb.elements["shape"]["color"] = "#00ff00"
    rb.stroke("mine", world.student_a.pk)
    assert (await a.request("update", doc="board", update=b64(ra.change())))["type"] == "ack"
    b2, _ = await open_collab(world.student_a, world.session_a)
    server_sv = (await b2.request("sync", doc="board", sv=b64(rb.doc.get_state())))["data"]
    rb.doc.apply_update(base64.b64decode(server_sv["update"]))
    ack = await b2.request("sync", doc="board", sv=b64(rb.doc.get_state()),
                           update=b64(rb.doc.get_update(base64.b64decode(server_sv["sv"]))))
    assert ack["type"] == "ack", ack
    await ra.sync(a)
    assert ra.doc.get_state() == rb.doc.get_state()
    assert dict(ra.elements["shape"]) == dict(rb.elements["shape"])
    assert ra.elements["shape"]["width"] == 9 and set(ra.elements.keys()) == {"shape", "mine"}
    await a.close()
    await b2.close()


def test_a_replica_is_bound_once(world):
    from classrooms import collab_services

    doc = collab_services.documents_ensure(world.session_a)["board"]
    assert collab_services.clients_bind(document_id=doc.pk, client_ids=[7], user_id=world.student_a.pk) == \
        {7: world.student_a.pk}
    assert collab_services.clients_bind(document_id=doc.pk, client_ids=[7, 8], user_id=world.teacher_a.pk) == \
        {7: world.student_a.pk, 8: world.teacher_a.pk}
    assert CollabClient.objects.filter(document=doc).count() == 2

