"""Fault tests: real PostgreSQL, Redis and uvicorn processes are killed and restarted under a live class.

Every test runs against a private stack (tests/e2e/faultkit.py), so killing a store does not touch the
PostgreSQL and Redis that other test workers share. Clients follow docs/protocol.md (seq tracking, resume
on gap / sys.lagged / sys.resync, reconnect with ?last_seq=&resume=), and the database is the truth the
received events are compared with.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

import pytest
import websockets

from tests.e2e.faultkit import REDIS_PREFIX, FaultStack, LiveClient, tcp_send_queue, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def stack():
    s = FaultStack()
    try:
        s.start()
        yield s
    finally:
        s.close()


@pytest.fixture
def servers(stack):
    """Start uvicorn processes (in parallel) on the stack; stores a test took down are brought back."""

    def start(*names: str):
        out: dict[str, object] = {}

        def one(name):
            try:
                out[name] = stack.server(name)
            except Exception as exc:  # re-raised below, in the test's thread
                out[name] = exc

        threads = [threading.Thread(target=one, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for v in out.values():
            if isinstance(v, Exception):
                raise v
        return [out[n] for n in names]

    yield start
    for server in stack.servers:  # shown by pytest when the test failed
        print(f"--- log of server {server.name} (tail) ---\n{server.log()[-6000:]}")
    stack.stop_servers()
    stack.start_redis()
    stack.start_postgres()


@dataclass
class Sent:
    client: str
    ref: str
    at: float
    outcome: str  # "ack", an error code, or "no-reply"
    seq: int | None = None
    done_at: float = 0.0
    attempt: int = 1  # > 1: a retry with the same ref (its ack may answer an earlier attempt)


async def chatter(client: LiveClient, stop: asyncio.Event, log: list[Sent], interval: float = 0.2,
                  body: str = "", retry_unavailable: bool = False) -> None:
    """Post chat until told to stop, like a participant; optionally retry a refused send with the same ref."""
    n, attempt = 0, 1
    retry_ref = None
    while not stop.is_set():
        n += 1
        ref = retry_ref or f"{client.name}-m{n}"
        attempt = attempt + 1 if retry_ref else 1
        sent = Sent(client.name, ref, time.monotonic(), "no-reply", attempt=attempt)
        try:
            frame = await client.request("chat.send", ref=ref, body=body or f"{client.name} says {n}", timeout=5)
            sent.outcome = "ack" if frame["type"] == "ack" else frame["data"]["code"]
            sent.seq = frame["data"].get("seq")
        except (ConnectionError, TimeoutError, websockets.exceptions.ConnectionClosed):
            pass
        sent.done_at = time.monotonic()
        log.append(sent)
        retry_ref = ref if retry_unavailable and sent.outcome != "ack" else None
        await asyncio.sleep(interval)


async def converged(clients: list[LiveClient], db_seqs: set[int], timeout: float) -> dict[str, set[int]]:
    """Wait until every client has every stored chat message since it joined; returns what is missing."""
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: all(not c.missing(db_seqs) for c in clients), timeout, what="convergence")
    return {c.name: c.missing(db_seqs) for c in clients if c.missing(db_seqs)}


async def close_all(clients: list[LiveClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


def assert_room_log_consistent(stack: FaultStack, session: dict) -> None:
    """Nothing half-written: every chat row has its room event and vice versa, and seqs have no gaps."""
    chat = {r[0] for r in stack.sql("SELECT seq FROM classrooms_chatmessage WHERE session_id = %s", [session["id"]])}
    events = stack.sql("SELECT seq, type FROM realtime_roomevent WHERE room_key = %s ORDER BY seq", [session["room"]])
    seqs = [s for s, _ in events]
    assert chat == {s for s, t in events if t == "chat.message"}
    assert seqs == list(range(1, len(seqs) + 1)), "room seqs must be gapless"
    (last,), = stack.sql("SELECT last_seq FROM realtime_roomsequence WHERE room_key = %s", [session["room"]])
    assert last == len(seqs)


# --- 5. tenancy and roles, against a real server, with its log ---------------------------------------------

async def test_other_school_and_teacher_only_actions_are_refused_and_logged(stack, servers):
    (server,) = servers("authz")
    session, data = stack.data["sessions"]["authz"], stack.data
    outsider = LiveClient("outsider", [server], session["id"], data["outsider"]["cookie"], reconnect=False)
    await outsider.start()
    # Closed with 4404 (the handshake is accepted first: an HTTP 403 would look like a network error to a
    # browser, which would then retry forever), and nothing about the room was sent.
    assert outsider.refused == 4404 and outsider.connects == [0] and outsider.counts == {}

    student = await LiveClient("student", [server], session["id"], data["students"][0]["cookie"]).start()
    teacher = await LiveClient("teacher", [server], session["id"], data["teacher"]["cookie"]).start()
    (events_before,), = stack.sql("SELECT count(*) FROM realtime_roomevent WHERE room_key = %s", [session["room"]])
    attempts = [
        ("session.end", {}), ("chat.clear", {"reason": "x"}), ("control.lock", {"feature": "chat", "locked": True}),
        ("poll.create", {"question": "q?", "kind": "single", "options": ["a", "b"]}),
        ("control.remove", {"user_id": data["teacher"]["id"], "reason": "x"}), ("hand.lower_all", {}),
    ]
    for type_, fields in attempts:
        reply = await student.request(type_, **fields)
        assert reply["type"] == "error" and reply["data"]["code"] == "forbidden", (type_, reply)
    assert (await student.request("chat.send", body="still here"))["type"] == "ack"  # the socket stayed open
    await asyncio.sleep(0.5)
    assert student.closes == [] and teacher.closes == []
    (count_after,), = stack.sql("SELECT count(*) FROM realtime_roomevent WHERE room_key = %s", [session["room"]])
    assert count_after == events_before + 1  # only the chat message was written
    (status,), = stack.sql("SELECT status FROM classrooms_livesession WHERE id = %s", [session["id"]])
    assert status == "live"
    await close_all([student, teacher])

    log = server.log()
    refused = [ln for ln in log.splitlines() if "websocket refused code=4404" in ln]
    assert any(f"user={data['outsider']['id']}]" in ln and f"/ws/v1/sessions/{session['id']}/" in ln
               for ln in refused), log[-3000:]
    denied = [ln for ln in log.splitlines()
              if f"privileged action refused user={data['students'][0]['id']} session={session['id']}" in ln]
    assert len(denied) == len(attempts), log[-3000:]


# --- 2. a client that stops reading ------------------------------------------------------------------------

async def test_a_client_that_stops_reading_does_not_slow_the_others_and_catches_up(stack, servers):
    (server,) = servers("slow")
    session, data = stack.data["sessions"]["slow"], stack.data
    fast = [await LiveClient(f"fast{i}", [server], session["id"], p["cookie"]).start()
            for i, p in enumerate([data["teacher"], data["students"][0]])]
    # A small receive buffer and queue: when it stops reading, the server's writes back up quickly.
    slow = await LiveClient("slow", [server], session["id"], data["students"][1]["cookie"],
                            recv_buffer=4096, max_queue=1).start()
    senders = [await LiveClient(f"sender{i}", [server], session["id"], p["cookie"]).start()
               for i, p in enumerate(data["students"][2:4])]
    clients = [*fast, slow, *senders]
    slow.reading.clear()  # the tab freezes

    stop, sent = asyncio.Event(), []
    # 2,000 emoji (the longest message there is, 8 kB as UTF-8) fill the buffers in a few hundred messages.
    body = "\N{PARTY POPPER}" * 2000
    tasks = [asyncio.create_task(chatter(s, stop, sent, interval=0, body=body)) for s in senders]
    acks = lambda: sum(1 for s in sent if s.outcome == "ack")  # noqa: E731
    # First the kernel's send buffer for the slow socket fills (it grows to megabytes on loopback) ...
    slow_port = slow.ws.local_address[1]
    queued, since = tcp_send_queue(server.port, slow_port), acks()
    assert queued is not None
    while acks() - since < 40:
        await asyncio.sleep(0.1)
        if (now_queued := tcp_send_queue(server.port, slow_port)) != queued:
            queued, since = now_queued, acks()
        assert acks() < 2000, "the kernel never stopped taking frames for the slow socket"
    # ... then the server's own buffer and the hub's backlog: past 256 frames it is dropped (sys.lagged),
    # while the gap stays within what a resume replays (500 events).
    target = acks() + 256 + 60
    await wait_until(lambda: acks() >= target, 60, what="the backlog to overflow")
    stop.set()
    await asyncio.gather(*tasks)
    acked = {s.seq: s.done_at for s in sent if s.outcome == "ack"}
    db = stack.chat_seqs(session["id"])
    assert set(acked) == db

    # Everyone else got every message promptly, in order, without having to resume.
    assert not await converged([*fast, *senders], db, 10)
    for c in [*fast, *senders]:
        lateness = sorted(c.received[seq].at - at for seq, at in acked.items())
        assert lateness[int(len(lateness) * 0.99)] < 1.0 and lateness[-1] < 3.0, (c.name, lateness[-5:])
        # Never dropped for lagging. Concurrent writers commit in seq order but their publishes (from parallel
        # threads) can reach Redis a hair out of order; the client sees that as a gap and resumes (protocol).
        assert c.counts.get("sys.lagged", 0) == 0 and c.counts.get("gap", 0) <= 3, (c.name, c.counts)
    assert len(slow.chat_seqs & db) < len(db) / 2  # it really was behind

    slow.reading.set()  # the tab wakes up: it notices the gap (or is told it lagged) and resumes
    missing = await converged([slow], db, 20)
    if missing and slow.counts.get("snapshot", 0) > 1:
        # Too far behind for a replay, the server sent a fresh snapshot: it carries the last 100 messages
        # (history, not the whole log). Everything from that window on must be there.
        missing = {k: {s for s in v if s > max(db) - 100} for k, v in missing.items()}
        missing = {k: v for k, v in missing.items() if v}
    assert not missing, (sorted(missing["slow"])[:3], len(missing["slow"]), slow.counts, slow.closes, slow.connects,
                         slow.ws.state, server.log()[-3000:])
    assert slow.counts.get("sys.lagged", 0) + slow.counts.get("gap", 0) >= 1, slow.counts
    assert slow.counts.get("resume_sent", 0) >= 1 and slow.closes == [], slow.counts
    await close_all(clients)


# --- 1. Redis killed for 10 s mid-lecture ------------------------------------------------------------------

async def test_redis_killed_for_ten_seconds_mid_lecture(stack, servers):
    a, b = servers("redis-a", "redis-b")
    session, data = stack.data["sessions"]["redis"], stack.data
    people = [data["teacher"], *data["students"][:3], data["students"][7]]
    clients = [await LiveClient(f"c{i}", [a, b] if i % 2 else [b, a], session["id"], p["cookie"]).start()
               for i, p in enumerate(people)]
    watcher = clients[-1]  # posts nothing; logged out after the recovery (its login is not used elsewhere)
    stop, sent = asyncio.Event(), []
    tasks = [asyncio.create_task(chatter(c, stop, sent, interval=0.25)) for c in clients[:-1]]
    await asyncio.sleep(2)

    killed_at = time.monotonic()
    await asyncio.to_thread(stack.kill_redis)
    # Another process keeps writing (an admin action, an API call, a task): stored, but not published.
    out_of_band = await asyncio.to_thread(stack.post_chat, session["id"], data["teacher"]["id"], 3)
    await asyncio.sleep(max(0.0, killed_at + 10 - time.monotonic()))
    during = [s for s in sent if killed_at + 0.5 < s.at]
    await asyncio.to_thread(stack.start_redis)
    restored_at = time.monotonic()
    await asyncio.sleep(5)  # the lecture goes on through the recovery
    stop.set()
    await asyncio.gather(*tasks)

    # While Redis was away, sends were refused as temporarily unavailable; the sockets stayed open.
    assert len(during) > 10 and {s.outcome for s in during} == {"temporarily_unavailable"}, \
        {s.outcome for s in during}
    assert all(c.closes == [] and len(c.connects) == 1 for c in clients), [(c.name, c.closes) for c in clients]
    # The hubs resubscribed by themselves and told every socket to resync, once (the teacher's socket is
    # in two rooms), and the resumes that follow are served, not refused by a stale Redis connection.
    assert all(c.counts.get("sys.resync") == 1 for c in clients), [c.counts for c in clients]
    after = [s for s in sent if s.at > restored_at + 3]  # the hubs retry Redis every 2 s at most
    assert after and {s.outcome for s in after} == {"ack"}, [s.outcome for s in after]

    db = stack.chat_seqs(session["id"])
    assert set(out_of_band) <= db
    missing = await converged(clients, db, 15)
    assert not missing, (missing, [c.counts for c in clients])
    assert not [k for c in clients for k in c.counts if k.startswith("resume_refused")], [c.counts for c in clients]

    # A message after the recovery travels live again (no resume needed to see it).
    resumes = [c.counts.get("resume_sent", 0) for c in clients]
    seq = (await clients[0].request("chat.send", body="back to normal"))["data"]["seq"]
    await wait_until(lambda: all(seq in c.chat_seqs for c in clients), 3, what="live delivery")
    assert [c.counts.get("resume_sent", 0) for c in clients] == resumes

    # Presence comes back too: the restarted (empty) Redis is refilled by the next heartbeats, counted right.
    await wait_until(lambda: stack.presence_metas(session["room"]) == len(clients), 15, what="heartbeats")
    late = await LiveClient("late", [a], session["id"], data["students"][4]["cookie"]).start()
    assert late.presence_count == len(clients) + 1
    await wait_until(lambda: clients[0].presence_count == len(clients) + 1, 3, what="the teacher's count")
    clients.append(late)

    # Authorization is still re-checked on every socket (AULA_SOCKET_RECHECK_SECONDS=2 on these servers).
    await asyncio.to_thread(stack.logout, watcher.cookie)
    await wait_until(lambda: watcher.refused is not None, 10, what="logged-out socket closed")
    assert watcher.refused == 4401
    assert "room hub lost Redis" in a.log() and "room hub reconnected to Redis" in b.log()
    await close_all(clients)


# --- 4. PostgreSQL stopped for 30 s ------------------------------------------------------------------------

async def test_postgres_down_for_thirty_seconds(stack, servers):
    a, b = servers("pg-a", "pg-b")
    session, data = stack.data["sessions"]["pg"], stack.data
    people = [data["teacher"], *data["students"][:3]]
    clients = [await LiveClient(f"p{i}", [a, b] if i % 2 else [b, a], session["id"], p["cookie"]).start()
               for i, p in enumerate(people)]
    stop, sent = asyncio.Event(), []
    tasks = [asyncio.create_task(chatter(c, stop, sent, interval=0.3, retry_unavailable=True)) for c in clients]
    await asyncio.sleep(2)

    stopping_wall = time.time()
    await asyncio.to_thread(stack.stop_postgres)
    down_at = time.monotonic()
    await asyncio.sleep(30)
    pongs = [await c.request("ping") for c in clients]
    restarting_at = time.monotonic()  # PostgreSQL accepts connections before pg_ctl start returns
    await asyncio.to_thread(stack.start_postgres)
    up_at = time.monotonic()
    await wait_until(lambda: sum(1 for s in sent if s.at > up_at and s.outcome == "ack") >= 2 * len(clients),
                     20, what="chat working again")
    await asyncio.sleep(1)
    stop.set()
    await asyncio.gather(*tasks)

    during = [s for s in sent if down_at + 1 < s.at and s.done_at < restarting_at]
    assert len(during) > 10 and all(s.done_at - s.at < 2 for s in during)  # refused at once, not hanging
    # Every send while the database was down was refused, except the retry of a send that had been stored
    # just before the stop (its first reply was lost): acknowledged again, from the row it already has.
    odd = [s for s in during if s.outcome != "temporarily_unavailable"]
    for s in odd:
        (created,), = stack.sql("SELECT extract(epoch FROM created_at) FROM classrooms_chatmessage "
                                "WHERE session_id = %s AND seq = %s", [session["id"], s.seq])
        assert s.outcome == "ack" and s.attempt > 1 and float(created) < stopping_wall, \
            (s, float(created) - stopping_wall)
    assert all(p["type"] == "pong" for p in pongs)  # the sockets stayed open and responsive
    assert all(c.closes == [] and len(c.connects) == 1 for c in clients), [(c.name, c.closes) for c in clients]
    # Chat recovered without restarting anything, and every refused send, retried with its ref, landed once.
    recovered = [s for s in sent if s.at > up_at]
    first_ok = min(s.done_at for s in recovered if s.outcome == "ack")
    assert first_ok - up_at < 10
    assert all(s.outcome == "ack" for s in recovered if s.at > first_ok + 1)
    assert a.proc.poll() is None and b.proc.poll() is None

    assert_room_log_consistent(stack, session)
    refs = stack.sql("SELECT client_ref, seq FROM classrooms_chatmessage WHERE session_id = %s", [session["id"]])
    acked = {s.ref: s.seq for s in sent if s.outcome == "ack"}
    assert {r: q for r, q in refs if r in acked} == acked  # one row per acknowledged ref, with its seq
    db = {q for _, q in refs}
    missing = await converged(clients, db, 15)
    assert not missing, (missing, [c.counts for c in clients])
    await close_all(clients)


# --- 3. one of two server processes killed -----------------------------------------------------------------

async def test_a_server_process_killed_its_clients_move_and_ghosts_leave(stack, servers):
    victim, survivor = servers("kill-victim", "kill-survivor")
    session, data = stack.data["sessions"]["kill"], stack.data
    teacher = await LiveClient("teacher", [survivor], session["id"], data["teacher"]["cookie"]).start()
    movers = [await LiveClient(f"mover{i}", [victim, survivor], session["id"], p["cookie"]).start()
              for i, p in enumerate(data["students"][:2])]
    # A laptop that was closed at the same moment: it never comes back, only the sweeper can remove it.
    gone = await LiveClient("gone", [victim], session["id"], data["students"][2]["cookie"], reconnect=False).start()
    local = await LiveClient("local", [survivor], session["id"], data["students"][3]["cookie"]).start()
    clients = [teacher, *movers, gone, local]
    stop, sent = asyncio.Event(), []
    tasks = [asyncio.create_task(chatter(c, stop, sent, interval=0.3)) for c in [local, *movers]]

    def conns_of(user_id: int) -> set[str]:
        conns = set()
        for _, frame in teacher.frames:
            if frame["type"] == "presence.diff":
                for meta in frame["data"]["joins"].get(str(user_id), {"metas": []})["metas"]:
                    conns.add(meta["conn"])
        return conns

    victim_users = [data["students"][i]["id"] for i in range(3)]
    await wait_until(lambda: all(conns_of(u) for u in victim_users), 5, what="joins seen by the teacher")
    ghosts = set().union(*(conns_of(u) for u in victim_users))
    assert len(ghosts) == 3

    # The worst moment to die: just after the victim's heartbeat, so its entries look fresh for longest.
    rd = stack.realtime_redis()
    hb_key = f"{REDIS_PREFIX}:pres:{session['room']}:hb"
    gone_conn = next(iter(conns_of(data["students"][2]["id"])))
    first = rd.zscore(hb_key, gone_conn)
    await wait_until(lambda: rd.zscore(hb_key, gone_conn) != first, 15, interval=0.02, what="a heartbeat")
    await asyncio.to_thread(victim.kill)
    killed_at = time.monotonic()

    # The movers reconnect to the survivor with their resume token and replay what they missed.
    await wait_until(lambda: all(len(m.connects) == 2 and m.counts.get("resume.done") for m in movers), 15,
                     what="movers reconnected and resumed")
    assert all(m.connects == [0, 1] and m.counts.get("snapshot") == 1 for m in movers), \
        [(m.connects, m.counts) for m in movers]
    # Presence: every connection of the dead process leaves within 30 s, each exactly once.
    await wait_until(lambda: ghosts <= {m["conn"] for _, m in teacher.presence_leaves()}, 35, interval=0.05,
                     what="ghost leaves")
    left_at = {m["conn"]: at for at, m in teacher.presence_leaves() if m["conn"] in ghosts}
    print("ghost leaves, seconds after the kill:", {c: round(t - killed_at, 2) for c, t in left_at.items()})
    assert max(left_at.values()) - killed_at < 30, {c: round(t - killed_at, 2) for c, t in left_at.items()}
    leaves = [m["conn"] for _, m in teacher.presence_leaves() if m["conn"] in ghosts]
    assert sorted(leaves) == sorted(ghosts)
    # Nobody still connected was reported as gone (the movers' new connections included).
    all_users = [data["teacher"]["id"], *(data["students"][i]["id"] for i in range(4))]
    live_conns = set().union(*(conns_of(u) for u in all_users)) - ghosts
    assert len(live_conns) >= 3 and not live_conns & {m["conn"] for _, m in teacher.presence_leaves()}

    stop.set()
    await asyncio.gather(*tasks)
    db = stack.chat_seqs(session["id"])
    missing = await converged([teacher, *movers, local], db, 15)
    assert not missing, (missing, [c.counts for c in clients])
    await close_all(clients)
