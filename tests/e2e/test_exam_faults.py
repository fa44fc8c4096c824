"""Exam faults with real processes: a vanished client, a killed Celery worker, PostgreSQL restarted mid-storm.

Each test has a private PostgreSQL + Redis (tests/e2e/faultkit.FaultStack) so it may stop them at will.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import websockets

from tests.conftest import ROOT
from tests.e2e.faultkit import FaultStack

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def stack():
    s = FaultStack()
    try:
        s.start()
        yield s
    finally:
        s.close()


def seed_exam(stack: FaultStack, students: int, minutes: int = 30) -> dict:
    return json.loads(stack._python("tests/e2e/examfaultdata.py", "seed", str(students), str(minutes)))


def move_deadline(stack: FaultStack, attempt_id: int, seconds: float) -> None:
    stack._python("tests/e2e/examfaultdata.py", "deadline", str(attempt_id), str(seconds))


class Celery:
    """A real Celery worker (and optionally beat) against the stack's Redis broker."""

    def __init__(self, stack: FaultStack, *, beat: bool, name: str):
        self.log = open(stack.base / f"celery-{name}.log", "wb")  # noqa: SIM115
        argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "deadlines,default,bulk,analytics",
                "--pool", "solo", "-l", "INFO", "-n", f"{name}@%h", "--without-gossip", "--without-mingle"]
        if beat:
            argv += ["-B", "--schedule", str(stack.base / f"beat-{name}")]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=stack.env, start_new_session=True, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def attempt_row(stack: FaultStack, attempt_id: int) -> dict:
    state, deadline, finished, finalized, reason = stack.sql(
        "SELECT state, deadline, finished_at, finalized_at, finish_reason FROM exams_attempt WHERE id = %s",
        [attempt_id])[0]
    return {"state": state, "deadline": deadline, "finished_at": finished, "finalized_at": finalized,
            "reason": reason}


def wait_state(stack: FaultStack, attempt_id: int, state: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = attempt_row(stack, attempt_id)
        if row["state"] == state:
            return row
        time.sleep(0.25)
    raise AssertionError(f"attempt {attempt_id} not {state} after {timeout}s: {attempt_row(stack, attempt_id)}")


async def socket_for(server, attempt_id: int, cookie: str):
    ws = await websockets.connect(f"{server.ws_base}/ws/v1/attempts/{attempt_id}/", origin=server.origin,
                                  additional_headers={"Cookie": f"sessionid={cookie}"}, open_timeout=5)
    snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert snapshot["type"] == "snapshot"
    return ws


async def until(ws, type_: str, timeout: float = 10) -> dict:
    end = time.monotonic() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), max(end - time.monotonic(), 0.01)))
        if frame["type"] == type_:
            return frame


def test_a_student_who_vanishes_before_the_deadline_is_submitted_on_time(stack):
    data = seed_exam(stack, 1)
    student = data["students"][0]
    server = stack.server("web")
    worker = Celery(stack, beat=True, name="w1")
    try:
        async def answer_and_vanish():
            ws = await socket_for(server, student["attempt"], student["cookie"])
            await ws.send(json.dumps({"type": "answer.save", "ref": "a", "question_id": data["questions"][0],
                                      "value": "my answer", "version": 1}))
            ack = await until(ws, "ack")
            assert ack["data"]["applied"] is True
            ws.transport.abort()  # the laptop lid closes: no close frame, never comes back

        asyncio.run(answer_and_vanish())
        move_deadline(stack, student["attempt"], 4)  # the deadline now comes in 4 s; the ETA task is later
        row = wait_state(stack, student["attempt"], "submitted", timeout=40)
        assert row["reason"] == "deadline"
        assert row["finished_at"] == row["deadline"]  # the recorded finish is the deadline
        assert (row["finalized_at"] - row["deadline"]).total_seconds() < 15  # sweeper every 10 s
        assert stack.sql("SELECT value FROM exams_answer WHERE attempt_id = %s", [student["attempt"]]) == \
            [("my answer",)]
        assert stack.sql("SELECT count(*) FROM exams_integrityevent WHERE attempt_id = %s AND kind = %s",
                         [student["attempt"], "auto_submitted"]) == [(1,)]

        async def next_login():
            ws = await websockets.connect(f"{server.ws_base}/ws/v1/attempts/{student['attempt']}/",
                                          origin=server.origin,
                                          additional_headers={"Cookie": f"sessionid={student['cookie']}"})
            snap = json.loads(await ws.recv())
            await ws.close()
            return snap

        assert asyncio.run(next_login())["data"]["attempt"]["state"] == "submitted"
    finally:
        worker.stop()


def test_the_worker_holding_the_deadline_task_is_killed_and_the_attempt_still_closes_once(stack):
    data = seed_exam(stack, 1, minutes=1)
    attempt = data["students"][0]["attempt"]
    doomed = Celery(stack, beat=False, name="doomed")
    try:
        # The attempt's ETA task (queued at start) is reserved by this worker until its deadline...
        time.sleep(6)
        doomed.kill()  # ...and the worker dies holding it (acks_late: it was never acknowledged).
        move_deadline(stack, attempt, 5)  # bring the deadline close; the held ETA task is gone with the worker
        rescuer = Celery(stack, beat=True, name="rescuer")
        try:
            row = wait_state(stack, attempt, "submitted", timeout=45)
            assert row["reason"] == "deadline" and row["finished_at"] == row["deadline"]
            assert (row["finalized_at"] - row["deadline"]).total_seconds() < 15
            time.sleep(3)
            assert stack.sql("SELECT count(*) FROM exams_integrityevent WHERE attempt_id = %s AND kind = %s",
                             [attempt, "auto_submitted"]) == [(1,)]
            assert stack.sql("SELECT count(*) FROM exams_notification WHERE attempt_id = %s", [attempt]) == [(1,)]
        finally:
            rescuer.stop()
    finally:
        doomed.stop()


def test_postgres_restarted_during_an_autosave_storm_loses_no_acknowledged_answer(stack):
    data = seed_exam(stack, 8)
    server = stack.server("web")
    acked: dict[tuple[int, int], tuple[int, str]] = {}
    refused = {"count": 0}

    async def student_loop(student: dict, stop: asyncio.Event):
        version = 0
        ws = None
        pending: dict[str, tuple[int, int, str]] = {}
        while not stop.is_set():
            try:
                if ws is None:
                    ws = await socket_for(server, student["attempt"], student["cookie"])
                version += 1
                q = data["questions"][version % len(data["questions"])]
                value = f"s{student['id']}-v{version}"
                ref = f"r{version}"
                pending[ref] = (q, version, value)
                await ws.send(json.dumps({"type": "answer.save", "ref": ref, "question_id": q, "value": value,
                                          "version": version}))
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                while frame["type"] not in ("ack", "error"):
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                q, v, val = pending.pop(frame["data"]["ref"])
                if frame["type"] == "ack" and frame["data"]["applied"]:
                    acked[(student["attempt"], q)] = (v, val)
                elif frame["type"] == "error":
                    assert frame["data"]["code"] == "temporarily_unavailable", frame
                    refused["count"] += 1  # explicitly refused: the client keeps it and sends again
                await asyncio.sleep(0.05)
            except (TimeoutError, websockets.exceptions.ConnectionClosed, OSError):
                ws = None
                await asyncio.sleep(0.3)

    async def storm():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(student_loop(s, stop)) for s in data["students"]]
        await asyncio.sleep(2)
        await asyncio.to_thread(stack.stop_postgres)
        await asyncio.sleep(4)
        await asyncio.to_thread(stack.start_postgres)
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(storm())
    assert acked, "saves were acknowledged"
    assert refused["count"] > 0, "saves during the outage were refused explicitly"
    stored = {(a, q): (v, val) for a, q, v, val in stack.sql(
        "SELECT attempt_id, question_id, version, value #>> '{}' FROM exams_answer")}
    missing = {k: v for k, v in acked.items() if k not in stored or stored[k][0] < v[0]
               or (stored[k][0] == v[0] and stored[k][1] != v[1])}
    assert missing == {}, f"acknowledged but missing: {missing}"
