"""Whiteboard fault tests: two (or three) real uvicorn processes share the test PostgreSQL and Redis; clients on
different processes draw, get partitioned, lose their server to SIGKILL, forge updates and draw through
compaction. pycrdt plays the browser's Yjs document (same binary update format); the database is the truth
every client's document is compared with (docs/collab.md).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async

from classrooms import collab_services, selectors, services, tasks
from classrooms.models import (
    CollabCheckpoint,
    CollabClient,
    CollabDocument,
    CollabUpdate,
    Feature,
)
from tests.conftest import login_cookie
from tests.e2e.collabkit import (
    CollabServer,
    CollabSocket,
    Drawer,
    Replica,
    b64,
    caught_up,
    elements_of,
    refused_at_connect,
    unb64,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def servers(tmp_path):
    """Start named uvicorn processes (in parallel) on the test database and Redis; logs shown on failure."""
    started: list[CollabServer] = []

    def start(*names: str) -> list[CollabServer]:
        out: dict[str, object] = {}

        def one(name):
            try:
                out[name] = CollabServer(name, tmp_path)
            except Exception as exc:  # re-raised below, in the test's thread
                out[name] = exc

        threads = [threading.Thread(target=one, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in names:
            if isinstance(out[name], CollabServer):
                started.append(out[name])
        for v in out.values():
            if isinstance(v, Exception):
                raise v
        return [out[n] for n in names]

    yield start
    for server in started:
        server.stop()
        print(f"--- log of server {server.name} (tail) ---\n{server.log()[-4000:]}")


def start_class(world) -> None:
    services.session_start(session=world.session_a, actor=world.teacher_a)


def board_id(world) -> int:
    return CollabDocument.objects.get(session=world.session_a, kind="board").pk


def stored_board(world) -> dict:
    """The board as the database holds it: latest checkpoint plus the log after it."""
    return elements_of(selectors.collab_state(CollabDocument.objects.get(session=world.session_a, kind="board")))


# --- 1. relay across processes ------------------------------------------------------------------------

def test_a_stroke_and_a_cursor_drawn_on_one_process_reach_a_client_on_the_other(world, servers):
    one, two = servers("one", "two")
    start_class(world)
    sid, student_id, teacher_id = world.session_a.pk, world.student_a.pk, world.teacher_a.pk
    student_cookie, teacher_cookie = login_cookie(world.student_a), login_cookie(world.teacher_a)

    async def scenario():
        watcher = await CollabSocket.open("teacher", two, sid, teacher_cookie)
        theirs = Replica()
        await theirs.pull(watcher)
        student = await CollabSocket.open("student", one, sid, student_cookie)
        mine = Replica()
        await mine.pull(student)

        key, update = mine.stroke(student_id)
        assert (await student.request("update", doc="board", update=b64(update)))["type"] == "ack"
        relayed = await watcher.next("update", where=lambda f: f["data"]["by"] == [student_id])
        assert relayed["data"]["doc"] == "board"
        theirs.apply(unb64(relayed["data"]["update"]))
        # The replica's binding crosses too (authorship colours on the other process).
        bound = await watcher.next("clients", where=lambda f: str(mine.client_id) in f["data"]["clients"])
        assert bound["data"]["clients"][str(mine.client_id)] == student_id
        assert bound["data"]["people"][str(student_id)]["name"] == world.student_a.public_name

        # The stroke grows; the teacher answers from the other process; both documents converge.
        assert (await student.request("update", doc="board", update=b64(mine.extend(key, [5, 6]))))["type"] == "ack"
        tkey, tupdate = theirs.stroke(teacher_id)
        assert (await watcher.request("update", doc="board", update=b64(tupdate)))["type"] == "ack"
        grown = await watcher.next("update", where=lambda f: f["data"]["by"] == [student_id])
        theirs.apply(unb64(grown["data"]["update"]))
        answer = await student.next("update", where=lambda f: f["data"]["by"] == [teacher_id])
        mine.apply(unb64(answer["data"]["update"]))
        assert mine.doc.get_state() == theirs.doc.get_state()
        assert mine.state() == theirs.state()
        assert set(mine.state()) == {key, tkey} and mine.state()[key]["points"] == [10, 20, 30, 40, 5, 6]
        # Nothing more to fetch on either side: the relays alone made them equal.
        assert (await theirs.pull(watcher))["behind"] is False
        assert (await mine.pull(student))["behind"] is False

        # A cursor on process one is drawn on process two, with the name the server knows.
        await student.send(type="awareness", doc="board",
                           state={"client": mine.client_id, "page": "p1", "cursor": {"x": 120, "y": 80},
                                  "tool": "pen", "selection": [key]})
        moved = await watcher.next("awareness", where=lambda f: str(student_id) in f["data"]["states"])
        state = moved["data"]["states"][str(student_id)]
        assert state["cursor"] == {"x": 120.0, "y": 80.0} and state["selection"] == [key]
        assert state["name"] == world.student_a.public_name and state["presenting"] is False
        # A late joiner on process two gets it in its snapshot, and both documents' state vectors.
        late = await CollabSocket.open("late", two, sid, teacher_cookie)
        assert late.snapshot["awareness"]["board"][str(student_id)]["cursor"] == {"x": 120.0, "y": 80.0}
        assert unb64(late.snapshot["docs"]["board"]["sv"]) == mine.doc.get_state()
        # Leaving on process one removes the cursor on process two.
        await student.close()
        gone = await watcher.next("awareness", where=lambda f: student_id in f["data"]["gone"])
        assert gone["data"]["doc"] == "board"
        await late.close()
        await watcher.close()
        return mine.state()

    final = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert stored_board(world) == final


# --- 2. partition: the same shape edited on both sides ------------------------------------------------

def test_two_clients_partitioned_on_two_processes_edit_the_same_shape_and_converge_after_sync(world, servers):
    one, two = servers("one", "two")
    start_class(world)
    sid, student_id, teacher_id = world.session_a.pk, world.student_a.pk, world.teacher_a.pk
    student_cookie, teacher_cookie = login_cookie(world.student_a), login_cookie(world.teacher_a)

    async def scenario():
        teacher = await CollabSocket.open("teacher", one, sid, teacher_cookie)
        student = await CollabSocket.open("student", two, sid, student_cookie)
        ra, rb = Replica(), Replica()
        await ra.pull(teacher)
        await rb.pull(student)
        shape, update = ra.stroke(teacher_id)
        assert (await teacher.request("update", doc="board", update=b64(update)))["type"] == "ack"
        got = await student.next("update", where=lambda f: f["data"]["by"] == [teacher_id])
        rb.apply(unb64(got["data"]["update"]))
        assert rb.state() == ra.state()

        # The student's socket goes (closed: a train tunnel); both keep editing the same shape.
        await student.close()
        ra.elements[shape]["color"] = "#ff0000"
        ra.elements[shape]["points"].extend([1, 1])
        assert (await teacher.request("update", doc="board", update=b64(ra.change())))["type"] == "ack"
        theirs_key, update = ra.stroke(teacher_id)
        assert (await teacher.request("update", doc="board", update=b64(update)))["type"] == "ack"
        rb.elements[shape]["color"] = "#00ff00"
        rb.elements[shape]["width"] = 9
        rb.elements[shape]["points"].extend([2, 2])
        mine_key, _ = rb.stroke(student_id)  # offline: only in the student's document
        rb.change()

        # Back, on the other process: sync sends our sv, takes what we lack, then sends what the server
        # lacks (computed from the server's sv in the ack).
        back = await CollabSocket.open("student-back", one, sid, student_cookie)
        first = await back.request("sync", doc="board", sv=b64(rb.doc.get_state()))
        assert first["type"] == "ack" and first["data"]["behind"] is True
        rb.doc.apply_update(unb64(first["data"]["update"]))
        lacking = rb.doc.get_update(unb64(first["data"]["sv"]))
        second = await back.request("sync", doc="board", sv=b64(rb.doc.get_state()), update=b64(lacking))
        assert second["type"] == "ack", second
        rb.doc.apply_update(unb64(second["data"]["update"]))
        relayed = await teacher.next("update", where=lambda f: f["data"]["by"] == [student_id])
        ra.apply(unb64(relayed["data"]["update"]))

        assert ra.doc.get_state() == rb.doc.get_state()
        assert ra.state() == rb.state()
        assert set(ra.state()) == {shape, theirs_key, mine_key}
        merged = ra.state()[shape]
        assert merged["width"] == 9 and merged["color"] in ("#ff0000", "#00ff00")
        assert sorted(merged["points"][4:]) == [1, 1, 2, 2]  # both appends kept, in one order
        # A late joiner on either process, and the database, hold the same document.
        for server in (one, two):
            assert await caught_up(f"late-{server.name}", server, sid, teacher_cookie) == ra.state()
        await back.close()
        await teacher.close()
        return ra.state()

    final = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert stored_board(world) == final


# --- 3. a server process killed mid-class ------------------------------------------------------------

def test_a_server_killed_while_a_student_draws_loses_no_stroke(world, servers):
    one, two = servers("one", "two")
    start_class(world)
    sid, student_id = world.session_a.pk, world.student_a.pk
    teacher_cookie = login_cookie(world.teacher_a)
    drawer = Drawer("student", student_id, login_cookie(world.student_a), sid)

    async def scenario():
        watcher = await CollabSocket.open("teacher", two, sid, teacher_cookie)
        await drawer.connect(one)
        stop = asyncio.Event()
        drawing = asyncio.create_task(drawer.draw_until(stop))
        # Drawing for a while first (servers that just started can be slow to answer on two busy cores).
        await until(lambda: len(drawer.acked) >= 5, 30, "five acknowledged strokes")
        # The host hangs (nothing more is read, stored or answered), then crashes, while the student draws.
        one.freeze()
        await asyncio.sleep(0.4)
        acked_at_kill = set(drawer.acked)
        one.kill()
        code = await asyncio.wait_for(drawer.sock.closed, 10)
        assert code not in (1000, 4401, 4403, 4404, 4408, 4409), code
        drawn_before = set(drawer.keys)
        unacked = drawn_before - acked_at_kill
        assert len(acked_at_kill) >= 5 and unacked, (len(acked_at_kill), len(unacked))
        await asyncio.sleep(0.3)  # still drawing, offline: only in the student's document
        # Reconnect to the surviving process: its sync sends whatever the server lacks, then drawing goes on.
        await drawer.connect(two)
        await asyncio.sleep(1.0)
        stop.set()
        await drawing
        await drawer.settle()
        assert not drawer.refused, drawer.refused
        assert drawer.offline and len(drawer.keys) > len(drawn_before | drawer.offline)

        final = drawer.replica.state()
        assert set(final) == set(drawer.keys)
        fresh = await caught_up("late", two, sid, teacher_cookie)
        assert acked_at_kill <= set(fresh)
        assert fresh == final  # the unacknowledged strokes too, re-sent by the sync, every point of them
        # The watcher on the surviving process converged too.
        seen = Replica()
        await seen.pull(watcher)
        assert seen.state() == final
        await drawer.close()
        await watcher.close()
        return final, acked_at_kill

    final, acked_at_kill = asyncio.run(asyncio.wait_for(scenario(), 90))
    stored = stored_board(world)
    assert acked_at_kill <= set(stored)
    assert stored == final
    # Every stored row loads: the crash left nothing half-written.
    for data in CollabUpdate.objects.filter(document_id=board_id(world)).values_list("data", flat=True):
        Replica().doc.apply_update(bytes(data))


# --- 4. forged updates and another school -------------------------------------------------------------

def test_forged_updates_and_a_locked_board_are_refused_across_processes_and_change_nothing(world, servers):
    one, two = servers("one", "two")
    start_class(world)
    sid, student_id, teacher_id = world.session_a.pk, world.student_a.pk, world.teacher_a.pk
    student_cookie, teacher_cookie = login_cookie(world.student_a), login_cookie(world.teacher_a)

    async def scenario():
        teacher = await CollabSocket.open("teacher", one, sid, teacher_cookie)
        student = await CollabSocket.open("student", two, sid, student_cookie)
        mine = Replica()
        await mine.pull(teacher)
        key, update = mine.stroke(teacher_id)
        assert (await teacher.request("update", doc="board", update=b64(update)))["type"] == "ack"
        await student.next("update", where=lambda f: f["data"]["by"] == [teacher_id])
        before_rows = await database_sync_to_async(CollabUpdate.objects.count)()
        before_bound = await database_sync_to_async(
            lambda: sorted(CollabClient.objects.values_list("client_id", "user_id")))()

        # Written with the teacher's replica (bound to the teacher on the other process).
        copycat = Replica(client_id=mine.client_id)
        copycat.apply(mine.doc.get_update())
        copycat.elements[key]["color"] = "#ff0000"
        stolen = await student.request("update", doc="board", update=b64(copycat.change()))
        assert stolen["type"] == "error" and stolen["data"]["code"] == "forbidden", stolen
        # The same through a sync.
        stolen = await student.request("sync", doc="board", sv=b64(copycat.doc.get_state()),
                                       update=b64(copycat.doc.get_update(unb64(
                                           student.snapshot["docs"]["board"]["sv"]))))
        assert stolen["data"]["code"] == "forbidden", stolen
        # A new element claiming the teacher as its author.
        claim = Replica()
        _, forged = claim.stroke(teacher_id)
        assert (await student.request("update", doc="board", update=b64(forged)))["data"]["code"] == "forbidden"

        # The teacher locks the board (from outside both processes): the student on process two is told, and
        # refused; the teacher on process one still draws.
        await database_sync_to_async(services.feature_lock)(session=world.session_a, actor=world.teacher_a,
                                                            feature=Feature.WHITEBOARD, locked=True)
        told = await student.next("edit", where=lambda f: f["data"]["doc"] == "board")
        assert told["data"]["allowed"] is False and told["data"]["reason"]
        own = Replica()
        _, stroke = own.stroke(student_id)
        locked = await student.request("update", doc="board", update=b64(stroke))
        assert locked["type"] == "error" and locked["data"]["code"] == "locked", locked
        locked = await student.request("sync", doc="board", sv=b64(own.doc.get_state()), update=b64(stroke))
        assert locked["data"]["code"] == "locked", locked
        teacher_key, update = mine.stroke(teacher_id)
        assert (await teacher.request("update", doc="board", update=b64(update)))["type"] == "ack"

        after_rows = await database_sync_to_async(CollabUpdate.objects.count)()
        after_bound = await database_sync_to_async(
            lambda: sorted(CollabClient.objects.values_list("client_id", "user_id")))()
        assert after_rows == before_rows + 1  # the teacher's second stroke only
        assert after_bound == before_bound
        for server in (one, two):
            assert await caught_up(f"late-{server.name}", server, sid, teacher_cookie) == mine.state()
        # The socket stays open after refusals.
        await student.send(type="ping", ref="still-here")
        assert (await student.next("pong"))["data"]["ref"] == "still-here"
        await student.close()
        await teacher.close()
        return mine.state(), teacher_key

    final, teacher_key = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert stored_board(world) == final and final[teacher_key]["author"] == teacher_id
    assert final[next(iter(final))]["color"] == "#1f77b4"  # the forged colour never landed
    log = two.log()
    assert f"collab update refused user={student_id} session={sid} doc=board code=forbidden" in log
    assert f"collab edit refused user={student_id} session={sid} doc=board" in log


def test_a_socket_to_another_schools_session_is_refused_at_connect(world, servers):
    (one,) = servers("one")
    start_class(world)
    services.session_start(session=world.session_b, actor=_teacher_of(world.course_b))

    async def scenario():
        codes = {}
        for name, user, session in (("student_b", world.student_b, world.session_a),
                                    ("student_c", world.student_c, world.session_a),
                                    ("staff_b", world.staff_b, world.session_a),
                                    ("student_a", world.student_a, world.session_b)):
            cookie = await database_sync_to_async(login_cookie)(user)
            codes[name] = await refused_at_connect(one, session.pk, cookie)
        return codes

    codes = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert codes == dict.fromkeys(("student_b", "student_c", "staff_b", "student_a"), 4404), codes
    assert not CollabUpdate.objects.exists()


def _teacher_of(course):
    from tests import factories

    teacher = factories.user("teacher_b")
    factories.enroll(course, teacher, "teacher")
    return teacher


# --- 5. compaction while the class draws --------------------------------------------------------------

def test_compaction_while_two_processes_draw_keeps_every_stroke_for_a_late_joiner(world, servers):
    one, two = servers("one", "two")
    start_class(world)
    sid = world.session_a.pk
    teacher_cookie = login_cookie(world.teacher_a)
    student = Drawer("student", world.student_a.pk, login_cookie(world.student_a), sid)
    teacher = Drawer("teacher", world.teacher_a.pk, teacher_cookie, sid)

    async def scenario():
        await student.connect(one)
        await teacher.connect(two)
        document_id = await database_sync_to_async(board_id)(world)
        stop = asyncio.Event()
        drawing = [asyncio.create_task(student.draw_until(stop, every=0.05)),
                   asyncio.create_task(teacher.draw_until(stop, every=0.05))]
        folded = 0
        for _ in range(8):
            await asyncio.sleep(0.3)
            # The Celery task's own function, as the worker runs it, while both processes store updates.
            await database_sync_to_async(tasks.collab_compact)(document_id)
            folded += 1
        stop.set()
        await asyncio.gather(*drawing)
        await student.settle()
        await teacher.settle()
        assert not student.refused and not teacher.refused
        assert student.acked == set(student.keys) and teacher.acked == set(teacher.keys)
        # Everyone's strokes, as both participants' documents together hold them.
        expected = Replica()
        expected.apply(student.replica.doc.get_update())
        expected.apply(teacher.replica.doc.get_update())
        return document_id, expected.state()

    document_id, expected = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert set(expected) == set(student.keys) | set(teacher.keys)
    checkpoints = CollabCheckpoint.objects.filter(document_id=document_id)
    assert checkpoints.exists()
    sent = 2 * (len(student.keys) + len(teacher.keys))
    assert CollabUpdate.objects.filter(document_id=document_id).count() < sent  # the log was folded
    assert stored_board(world) == expected

    # Late joiners: on a process that held the document all along, and on a new one that loads it from the
    # checkpoint and the log after it.
    (three,) = servers("three")

    async def late():
        views = [await caught_up(f"late-{s.name}", s, sid, teacher_cookie) for s in (one, three)]
        await student.close()
        await teacher.close()
        return views

    for view in asyncio.run(asyncio.wait_for(late(), 60)):
        assert view == expected


def test_a_log_row_committed_after_a_later_one_is_not_lost_by_compaction(world, servers):
    """Log ids are taken at INSERT, rows become visible at COMMIT. A server process's flush that stalls inside
    its transaction (preempted, a GC pause) while another process stores a later row and the compactor runs
    must still have its row loaded by every process afterwards: it was acknowledged to its author."""
    one, two = servers("one", "two")
    start_class(world)
    sid, student_id, teacher_id = world.session_a.pk, world.student_a.pk, world.teacher_a.pk
    teacher_cookie = login_cookie(world.teacher_a)
    slow = Replica()
    slow_key, slow_update = slow.stroke(student_id)
    inserted, go_on = threading.Event(), threading.Event()
    outcome: dict = {}

    def stalled_flush(document_id: int) -> None:
        """The real write path (collab_services.updates_append), paused right after its INSERT."""
        from django.db import connection as conn

        def pause_after_insert(execute, sql, params, many, context):
            result = execute(sql, params, many, context)
            if sql.lstrip().upper().startswith('INSERT INTO "CLASSROOMS_COLLABUPDATE"'):
                inserted.set()
                go_on.wait(30)
            return result

        try:
            with conn.execute_wrapper(pause_after_insert):
                outcome["ids"] = collab_services.updates_append([(document_id, student_id, slow_update)])
        except Exception as exc:  # shown by the assertion below
            outcome["error"] = exc
        finally:
            inserted.set()
            conn.close()

    async def scenario():
        sock = await CollabSocket.open("teacher", one, sid, teacher_cookie)
        replica = Replica()
        await replica.pull(sock)
        first, update = replica.stroke(teacher_id)
        assert (await sock.request("update", doc="board", update=b64(update)))["type"] == "ack"
        document_id = await database_sync_to_async(board_id)(world)
        flusher = threading.Thread(target=stalled_flush, args=(document_id,))
        flusher.start()
        try:
            assert await asyncio.to_thread(inserted.wait, 10)
            later, update = replica.stroke(teacher_id)
            stored = sock.send_request("update", doc="board", update=b64(update))
            await asyncio.wait([stored], timeout=2)  # acknowledged meanwhile (or held until the flush commits)
            await database_sync_to_async(tasks.collab_compact)(document_id)
        finally:
            go_on.set()
            await asyncio.to_thread(flusher.join, 30)
        assert "error" not in outcome, outcome
        assert (await asyncio.wait_for(stored, 10))["type"] == "ack"
        await sock.close()
        return first, later

    first, later = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert set(stored_board(world)) == {first, later, slow_key}
    # A process that loads the board now (a late joiner on process two) has all three.
    assert set(asyncio.run(caught_up("late", two, sid, teacher_cookie))) == {first, later, slow_key}
