"""The shared whiteboard under load: live delivery, late-join catch-up of a 2-hour board, server memory per board.

    .venv/bin/python -m benchmarks.collab --duration 30

One throwaway PostgreSQL and Redis, one seed (benchmarks.seed: a course, `--students + --audience` people, a
live session), real uvicorn servers on 127.0.0.1 (config.devservers.web_argv, one worker so that every board
lives in the measured process). Every client runs in this process (asyncio + `websockets`), so send and
receipt times come from one monotonic clock.

1. Live drawing, twice: `--students` drawers each send `--rate` board updates per second (the new points of
   their current pen stroke, a new stroke every `--stroke-seconds`, as static/aula/board.js does) while
   `--audience` more people only read. A relayed `update` frame is identified by its text (the server encodes
   it once for every receiver); the first copy is applied to an oracle pycrdt document, which tells which
   sends (stroke, point count) it carries. Latency = send → each other client's receipt.
   A: the default flush window (AULA_COLLAB_FLUSH_MS=20); B (baseline): AULA_COLLAB_FLUSH_MS=1, i.e. no
   batching — the same sockets, payloads and checks, one transaction and one relay per update.
2. Late-join catch-up of a synthesized 2-hour class board (`synth_log`: strokes, sticky notes, erasures),
   written through collab_services.updates_append in batches; the compacted boards are folded every
   AULA_COLLAB_COMPACT_UPDATES rows by collab_services.document_compact (what the Celery task calls), the
   others keep the whole log. A join = connect → snapshot → `sync` from an empty document → the answer applied
   to a fresh pycrdt document. Cold: the first socket of a board in the process (the server loads it from
   PostgreSQL); warm: a class is already on it (the room is in memory).
3. Server memory: the worker's RSS before and after opening one socket on each 2-hour board.

Writes JSON + markdown to benchmarks/measurements/collab-<people>-<commit>.json/.md. Methods and figures:
docs/benchmarks.md, "Whiteboard: delivery, catch-up, memory".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.classroom import (
    PY,
    ROOT,
    Server,
    app_revision,
    dist_ms,
    log,
    machine_info,
    raise_nofile,
    wait_for_quiet,
)
from benchmarks.streams import run_locked, save_summary
from config.devservers import backing_services, free_port, web_argv

PAGE_W, PAGE_H = 1600, 900


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the 2-hour board (pure pycrdt, deterministic) -----------------------------------------------------------

def synth_log(authors: list[int], *, hours: float, stroke_every: float, points: int, seed: int = 7
              ) -> tuple[list[tuple[float, int, bytes]], dict[int, int]]:
    """(time s, author, update) of a class's board, in time order: each author draws a pen stroke every
    ~`stroke_every` s (`points` points, sent 5 at a time, 10 updates/s, as the browser does), adds a sticky note
    with typed text every ~10 min, and erases one in ten of their strokes a little later. One replica per
    author, like one browser tab each."""
    from pycrdt import Array, Doc, Map, Text

    rng = random.Random(seed)
    out: list[tuple[float, int, bytes]] = []
    replicas: dict[int, int] = {}
    end = hours * 3600

    def one(author: int) -> None:
        doc = Doc()
        replicas[doc.client_id] = author
        elements = doc.get("elements", type=Map)
        sent = doc.get_state()
        counter = 0

        def change(t: float) -> None:
            nonlocal sent
            out.append((t, author, doc.get_update(sent)))
            sent = doc.get_state()

        def new_key() -> str:
            nonlocal counter
            counter += 1
            return f"{doc.client_id}-{counter}"

        events = []
        t = rng.uniform(0, stroke_every)
        while t < end:
            events.append((t, "stroke"))
            t += rng.uniform(0.5, 1.5) * stroke_every
        t = rng.uniform(0, 600)
        while t < end:
            events.append((t, "sticky"))
            t += rng.uniform(400, 800)
        events.sort()
        mine: list[str] = []
        erase_at: list[tuple[float, str]] = []
        for t, what in events:
            while erase_at and erase_at[0][0] <= t:
                _, key = erase_at.pop(0)
                if key in elements:
                    del elements[key]
                    change(t)
            key = new_key()
            if what == "stroke":
                x, y = rng.uniform(100, PAGE_W - 100), rng.uniform(100, PAGE_H - 100)
                walk = []
                for _ in range(points):
                    x = min(PAGE_W, max(0, x + rng.uniform(-12, 12)))
                    y = min(PAGE_H, max(0, y + rng.uniform(-12, 12)))
                    walk += [round(x), round(y)]  # integer board units, as board.js stores them
                elements[key] = Map({"id": key, "type": "pen", "page": "p1", "author": author, "z": len(mine) + 1,
                                     "color": "#1e88e5", "width": 3, "points": Array(walk[:10])})
                change(t)
                stroke = elements[key]["points"]
                for i, at in enumerate(range(10, len(walk), 10)):
                    stroke.extend(walk[at:at + 10])
                    change(t + 0.1 * (i + 1))
                mine.append(key)
                if rng.random() < 0.1:
                    erase_at.append((t + rng.uniform(30, 300), key))
                    erase_at.sort()
            else:
                elements[key] = Map({"id": key, "type": "sticky", "page": "p1", "author": author, "z": len(mine) + 1,
                                     "color": "#333333", "fill": "#fff59d", "x": rng.uniform(0, 1400),
                                     "y": rng.uniform(0, 700), "w": 200, "h": 160, "size": 18, "text": Text()})
                change(t)
                text = elements[key]["text"]
                words = " ".join(rng.choice(["photosynthesis", "needs", "light", "and", "water", "the", "leaf",
                                             "chlorophyll", "question:", "why", "green?", "energy", "sugar"])
                                 for _ in range(12))
                for i, at in enumerate(range(0, len(words), 16)):
                    text.insert(len(str(text)), words[at:at + 16])
                    change(t + 1 + i)
    for author in authors:
        one(author)
    out.sort(key=lambda row: row[0])
    return out, replicas


# --- the Django step: sessions, the synthesized log, compaction ------------------------------------------------

def django_step(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.collab --django-step")
    p.add_argument("--seed", required=True)
    p.add_argument("--authors", type=int, required=True)
    p.add_argument("--compacted", type=int, required=True)
    p.add_argument("--uncompacted", type=int, required=True)
    p.add_argument("--flush", default="20,1",
                   help="AULA_COLLAB_FLUSH_MS of target A and of baseline B (20: the default; 1: no batching)")
    p.add_argument("--hours", type=float, required=True)
    p.add_argument("--stroke-every", type=float, required=True)
    p.add_argument("--points", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection, transaction

    from classrooms import collab_services, services
    from classrooms.models import CollabCheckpoint, CollabClient, CollabUpdate, LiveSession, User

    seed = json.loads(Path(args.seed).read_text())
    base = LiveSession.objects.get(pk=seed["session_id"])
    teacher = User.objects.get(pk=seed["teacher"]["id"])
    authors = [s["id"] for s in seed["students"][:args.authors]]

    started = time.monotonic()
    rows, replicas = synth_log(authors, hours=args.hours, stroke_every=args.stroke_every, points=args.points)
    out: dict = {"synth_s": round(time.monotonic() - started, 1), "updates": len(rows),
                 "log_bytes": sum(len(r[2]) for r in rows), "authors": len(authors), "hours": args.hours}

    def board_session(title: str) -> tuple[LiveSession, int]:
        session = services.live_session_upsert(course=base.course, title=title, created_by=teacher)
        session = services.session_start(session=session, actor=teacher)
        return session, collab_services.documents_ensure(session)["board"].pk

    def bind(document_id: int) -> None:
        for client, author in replicas.items():
            collab_services.clients_bind(document_id=document_id, client_ids=[client], user_id=author)

    def append_all(document_id: int, compact: bool) -> dict:
        """The log through updates_append, `batch` rows per flush; with compaction every COMPACT_UPDATES rows."""
        batch, since, compactions, compact_s = 100, 0, 0, 0.0
        t0 = time.monotonic()
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            collab_services.updates_append([(document_id, author, data) for _, author, data in chunk])
            since += len(chunk)
            if compact and since >= settings.AULA_COLLAB_COMPACT_UPDATES:
                c0 = time.monotonic()
                compactor(document_id)
                compact_s += time.monotonic() - c0
                compactions, since = compactions + 1, 0
        return {"seconds": round(time.monotonic() - t0, 1), "compactions": compactions,
                "compaction_s_total": round(compact_s, 1)}

    try:
        from classrooms import collab_attribution  # noqa: F401 - document_compact needs it

        compactor_name = "collab_services.document_compact"

        def compactor(document_id: int) -> None:
            collab_services.document_compact(document_id=document_id)
    except ImportError:
        # classrooms/collab_attribution.py (per-person counts) is not in this tree yet: fold the log the way
        # document_compact does (checkpoint = whole state, folded rows deleted in the same transaction) without
        # the contribution counts, which a join never reads.
        compactor_name = "fold without attribution (classrooms/collab_attribution.py missing)"

        def compactor(document_id: int) -> None:
            from pycrdt import Doc

            with transaction.atomic():
                latest = CollabCheckpoint.objects.filter(document_id=document_id).order_by("-upto").first()
                tail = list(CollabUpdate.objects.filter(document_id=document_id, id__gt=latest.upto if latest else 0)
                            .order_by("id").values_list("id", "data"))
                if not tail:
                    return
                doc = Doc()
                if latest:
                    doc.apply_update(bytes(latest.state))
                for _, data in tail:
                    doc.apply_update(bytes(data))
                state = doc.get_update()
                CollabCheckpoint.objects.create(document_id=document_id, upto=tail[-1][0], state=state,
                                                size=len(state), created_at=django.utils.timezone.now())
                CollabUpdate.objects.filter(document_id=document_id, id__lte=tail[-1][0]).delete()

    out["compactor"] = compactor_name
    boards: dict[str, list[dict]] = {"compacted": [], "uncompacted": []}
    for variant, count in (("compacted", args.compacted), ("uncompacted", args.uncompacted)):
        if not count:
            continue
        first, first_doc = board_session(f"2-hour board {variant} 1")
        bind(first_doc)
        out[f"write_{variant}"] = append_all(first_doc, variant == "compacted")
        boards[variant].append({"session_id": first.pk, "document_id": first_doc})
        # The other boards of a variant: copies of the first (same rows, checkpoint and bindings), in SQL.
        for i in range(2, count + 1):
            session, doc_id = board_session(f"2-hour board {variant} {i}")
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute(f"INSERT INTO {CollabUpdate._meta.db_table} (document_id, author_id, data, created_at) "
                            f"SELECT %s, author_id, data, created_at FROM {CollabUpdate._meta.db_table} "
                            "WHERE document_id = %s ORDER BY id", [doc_id, first_doc])
                latest = CollabCheckpoint.objects.filter(document_id=first_doc).order_by("-upto").first()
                if latest is not None:
                    upto = (CollabUpdate.objects.filter(document_id=doc_id).order_by("id")
                            .values_list("id", flat=True).first() or 1) - 1
                    CollabCheckpoint.objects.create(document_id=doc_id, upto=upto, state=latest.state,
                                                    size=latest.size, created_at=latest.created_at)
                for client, user in CollabClient.objects.filter(document_id=first_doc).values_list("client_id",
                                                                                                    "user_id"):
                    collab_services.clients_bind(document_id=doc_id, client_ids=[client], user_id=user)
            boards[variant].append({"session_id": session.pk, "document_id": doc_id})
        tail = CollabUpdate.objects.filter(document_id=first_doc)
        latest = CollabCheckpoint.objects.filter(document_id=first_doc).order_by("-upto").first()
        out[f"stored_{variant}"] = {
            "log_rows": tail.count(),
            "log_bytes": sum(len(bytes(d)) for d in tail.values_list("data", flat=True).iterator()),
            "checkpoint_bytes": latest.size if latest else 0}
    out["boards"] = boards
    # Live drawing: each target starts from an empty board (the seed's session, then one more).
    out["live_sessions"] = {"A": base.pk, "B": board_session("live drawing B")[0].pk}
    # An empty board in a session of its own, to warm the server's code paths before measuring memory.
    warm, _ = board_session("empty board")
    out["empty_session_id"] = warm.pk
    Path(args.out).write_text(json.dumps(out))
    return 0


# --- clients -------------------------------------------------------------------------------------------------

class Net:
    def __init__(self, port: int, seed: dict):
        self.port, self.seed = port, seed
        self.origin = f"http://127.0.0.1:{port}"

    async def open(self, person: dict, session_id: int):
        from websockets.asyncio.client import connect

        ws = await connect(f"ws://127.0.0.1:{self.port}/ws/v1/sessions/{session_id}/collab/",
                           additional_headers={"Cookie": f"{self.seed['cookie_name']}={person['key']}"},
                           origin=self.origin, max_size=64 * 1024 * 1024, open_timeout=30, compression=None)
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame["type"] == "snapshot":
                return ws, frame
            if frame["type"] == "error":
                raise RuntimeError(f"refused: {frame}")


async def join_once(net: Net, person: dict, session_id: int) -> dict:
    """connect → snapshot → sync from an empty document → the answer applied; seconds per step."""
    from pycrdt import Doc, Map

    t0 = time.monotonic()
    ws, _ = await net.open(person, session_id)
    t_snap = time.monotonic()
    doc = Doc()
    await ws.send(json.dumps({"type": "sync", "ref": "j", "doc": "board", "sv": b64(doc.get_state())}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if frame["type"] in ("ack", "error") and frame["data"].get("ref") == "j":
            break
    t_ack = time.monotonic()
    if frame["type"] != "ack":
        await ws.close()
        raise RuntimeError(f"sync refused: {frame}")
    update = base64.b64decode(frame["data"]["update"])
    doc.apply_update(update)
    elements = len(doc.get("elements", type=Map))
    t_done = time.monotonic()
    await ws.close()
    return {"total": t_done - t0, "connect_snapshot": t_snap - t0, "sync": t_ack - t_snap, "apply": t_done - t_ack,
            "update_bytes": len(update), "elements": elements}


# --- phase 1: live drawing ----------------------------------------------------------------------------------

async def live_drawing(net: Net, session_id: int, args) -> dict:
    from pycrdt import Array, Doc, Map

    people = [net.seed["students"][i] for i in range(args.students + args.audience)]
    drawers = people[:args.students]
    conns: list = []
    errors: collections.Counter = collections.Counter()
    t0 = time.monotonic()
    opened = await asyncio.gather(*(net.open(p, session_id) for p in people), return_exceptions=True)
    for p, res in zip(people, opened, strict=True):
        if isinstance(res, BaseException):
            errors[f"connect: {type(res).__name__}: {str(res)[:80]}"] += 1
        else:
            conns.append((p, res[0]))
    connect_s = time.monotonic() - t0
    index = {p["id"]: i for i, (p, _) in enumerate(conns)}

    first_seen: dict[str, int] = {}          # relayed frame text → frame number
    frame_sends: list[list[int]] = []        # frame number → send ids it carried
    receipts: list[list[tuple[int, float]]] = []  # frame number → (receiver, time)
    sends: list[dict] = []                   # update id → {who, t (made), t_ack, error}
    frames_out: list[list[int]] = []         # sent frame → the updates it carried (merged)
    acked: list[asyncio.Event] = []
    oracle = Doc()
    o_elements = oracle.get("elements", type=Map)
    pending: dict[int, collections.deque] = collections.defaultdict(collections.deque)  # drawer → (sid, key, len)

    def on_update_frame(receiver: int, text: str, t: float) -> None:
        n = first_seen.get(text)
        if n is None:
            n = first_seen[text] = len(frame_sends)
            receipts.append([])
            carried = []
            data = json.loads(text)["data"]
            oracle.apply_update(base64.b64decode(data["update"]))
            for queue in pending.values():
                while queue:
                    sid, key, length = queue[0]
                    element = o_elements.get(key)
                    if element is None or len(element["points"]) < length:
                        break
                    carried.append(sid)
                    queue.popleft()
            frame_sends.append(carried)
        receipts[n].append((receiver, t))

    async def reader(i: int, ws) -> None:
        try:
            async for text in ws:
                t = time.monotonic()
                if text.startswith('{"v":1,"type":"update"') or '"type":"update"' in text[:40]:
                    on_update_frame(i, text, t)
                elif '"type":"ack"' in text[:40] or '"type":"error"' in text[:40]:
                    frame = json.loads(text)
                    ref = frame["data"].get("ref") or ""
                    if ref.startswith("u"):
                        fid = int(ref[1:])
                        for sid in frames_out[fid]:
                            sends[sid]["t_ack"] = t
                            if frame["type"] == "error":
                                sends[sid]["error"] = frame["data"].get("code")
                        if frame["type"] == "error":
                            errors[f"error frame: {frame['data'].get('code')}"] += 1
                        acked[fid].set()
        except Exception as exc:  # a dropped socket is counted, not fatal
            errors[f"socket: {type(exc).__name__}"] += 1

    readers = [asyncio.ensure_future(reader(i, ws)) for i, (_, ws) in enumerate(conns)]
    stop_at = time.monotonic() + args.duration
    rng = random.Random(args.seed)
    interval = 1 / args.rate

    async def drawer(p: dict, ws) -> None:
        doc = Doc()
        elements = doc.get("elements", type=Map)
        sent = doc.get_state()
        counter, key, started, x, y = 0, None, 0.0, 0.0, 0.0
        me = index[p["id"]]
        outbox: list[tuple[int, bytes]] = []
        has_work, done = asyncio.Event(), asyncio.Event()
        sender = (asyncio.ensure_future(browser_sender(ws, outbox, has_work, done)) if args.client == "browser"
                  else None)
        await asyncio.sleep(rng.uniform(0, interval))
        next_at = time.monotonic()
        while next_at < stop_at:
            now = time.monotonic()
            if key is None or now - started >= args.stroke_seconds:
                counter += 1
                key, started = f"{doc.client_id}-{counter}", now
                x, y = rng.uniform(100, PAGE_W - 100), rng.uniform(100, PAGE_H - 100)
                elements[key] = Map({"id": key, "type": "pen", "page": "p1", "author": p["id"], "z": counter,
                                     "color": "#e53935", "width": 3, "points": Array([round(x), round(y)])})
            walk = []
            for _ in range(args.points_per_update):
                x = min(PAGE_W, max(0, x + rng.uniform(-8, 8)))
                y = min(PAGE_H, max(0, y + rng.uniform(-8, 8)))
                walk += [round(x), round(y)]
            points = elements[key]["points"]
            points.extend(walk)
            update = doc.get_update(sent)
            sent = doc.get_state()
            sid = len(sends)
            sends.append({"who": me, "t": time.monotonic(), "t_ack": None, "error": None})
            pending[me].append((sid, key, len(points)))
            if args.client == "browser":
                outbox.append((sid, update))
                has_work.set()
            elif not await send_frame(ws, [sid], update):
                return
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        done.set()
        has_work.set()
        if sender is not None:
            await sender

    async def send_frame(ws, sids: list[int], update: bytes) -> asyncio.Event | None:
        fid = len(frames_out)
        frames_out.append(sids)
        acked.append(asyncio.Event())
        try:
            await ws.send(json.dumps({"type": "update", "ref": f"u{fid}", "doc": "board", "update": b64(update)}))
        except Exception as exc:
            errors[f"send: {type(exc).__name__}"] += 1
            return None
        return acked[fid]

    async def browser_sender(ws, outbox: list, has_work: asyncio.Event, done: asyncio.Event) -> None:
        """static/aula/collab.js: what is drawn waits in the outbox and goes, merged, SEND_EVERY_MS (50 ms)
        later, with at most MAX_IN_FLIGHT (4) updates unacknowledged at once."""
        from pycrdt import merge_updates

        slots = asyncio.Semaphore(4)
        waits: list[asyncio.Task] = []

        async def until_acked(event: asyncio.Event) -> None:
            try:
                await asyncio.wait_for(event.wait(), 60)
            except TimeoutError:
                errors["ack not received in 60 s"] += 1
            finally:
                slots.release()

        while True:
            if done.is_set() and not outbox:
                break
            await has_work.wait()
            if not outbox:
                has_work.clear()
                continue
            await asyncio.sleep(0.05)
            await slots.acquire()
            batch = outbox[:]
            outbox.clear()
            has_work.clear()
            update = batch[0][1] if len(batch) == 1 else merge_updates(*[u for _, u in batch])
            event = await send_frame(ws, [sid for sid, _ in batch], update)
            if event is None:
                slots.release()
                break
            waits.append(asyncio.ensure_future(until_acked(event)))
            if outbox:
                has_work.set()
        await asyncio.gather(*waits)

    cpu0 = psutil.Process().cpu_times()
    wall0 = time.monotonic()
    await asyncio.gather(*(drawer(p, ws) for p, ws in conns if p in drawers))
    await asyncio.sleep(args.drain)
    cpu1 = psutil.Process().cpu_times()
    client_cores = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (time.monotonic() - wall0)
    for ws in (ws for _, ws in conns):
        await ws.close()
    for r in readers:
        r.cancel()

    latencies, delivered = [], 0
    for n, carried in enumerate(frame_sends):
        for receiver, t in receipts[n]:
            for sid in carried:
                s = sends[sid]
                if s["who"] != receiver:
                    latencies.append(t - s["t"])
                    delivered += 1
    accepted = [s for s in sends if s["t_ack"] is not None and s["error"] is None]
    expected = len(sends) * (len(conns) - 1)
    return {
        "connected": len(conns), "connect_s": round(connect_s, 2), "drawers": len(drawers),
        "client": args.client, "frames_sent": len(frames_out),
        "updates_sent": len(sends), "updates_acked": len(accepted),
        "updates_per_s": round(len(sends) / args.duration, 1),
        "relayed_frames": len(frame_sends),
        "updates_per_frame": round(sum(len(c) for c in frame_sends) / max(len(frame_sends), 1), 2),
        "latency": dist_ms(latencies),
        "ack": dist_ms([s["t_ack"] - s["t"] for s in accepted]),
        "deliveries": delivered, "expected_deliveries": expected,
        "delivered_pct": round(100 * delivered / max(expected, 1), 3),
        "errors": dict(errors),
        "client_process_cores": round(client_cores, 2),
    }


# --- phases 2 and 3: joins and memory -------------------------------------------------------------------

def worker_rss(server: Server) -> int:
    return sum(p.memory_info().rss for p in server.workers())


async def joins_and_memory(net: Net, server: Server, synth: dict, args) -> dict:
    boards = synth["boards"]
    people = net.seed["students"]
    out: dict = {}
    # Warm the process's code paths (imports, caches, a room) on an empty board; then measure memory.
    for _ in range(3):
        await join_once(net, people[0], synth["empty_session_id"])
    await asyncio.sleep(1)
    rss0 = worker_rss(server)
    cold = []
    holders = []
    for i, board in enumerate(boards["compacted"]):
        cold.append(await join_once(net, people[i % len(people)], board["session_id"]))
        ws, _ = await net.open(people[-1 - i], board["session_id"])  # holds the room loaded (a class on it)
        holders.append(ws)
    await asyncio.sleep(1)
    rss1 = worker_rss(server)
    n = len(boards["compacted"])
    out["memory_compacted"] = {"boards": n, "rss_before_mb": round(rss0 / 2**20, 1),
                               "rss_after_mb": round(rss1 / 2**20, 1),
                               "per_board_mb": round((rss1 - rss0) / 2**20 / max(n, 1), 2)}
    out["cold_compacted"] = join_figures(cold)
    warm = [await join_once(net, people[j % len(people)], boards["compacted"][0]["session_id"])
            for j in range(args.joins)]
    out["warm_compacted"] = join_figures(warm)

    cold_u = []
    rss2 = worker_rss(server)
    for i, board in enumerate(boards["uncompacted"]):
        cold_u.append(await join_once(net, people[i % len(people)], board["session_id"]))
        ws, _ = await net.open(people[-1 - n - i], board["session_id"])
        holders.append(ws)
    await asyncio.sleep(1)
    rss3 = worker_rss(server)
    m = len(boards["uncompacted"])
    out["memory_uncompacted"] = {"boards": m, "rss_before_mb": round(rss2 / 2**20, 1),
                                 "rss_after_mb": round(rss3 / 2**20, 1),
                                 "per_board_mb": round((rss3 - rss2) / 2**20 / max(m, 1), 2)}
    out["cold_uncompacted"] = join_figures(cold_u)
    if boards["uncompacted"]:
        warm_u = [await join_once(net, people[j % len(people)], boards["uncompacted"][0]["session_id"])
                  for j in range(args.joins)]
        out["warm_uncompacted"] = join_figures(warm_u)
    for ws in holders:
        await ws.close()
    return out


def join_figures(joins: list[dict]) -> dict:
    if not joins:
        return {"n": 0}
    return {"total": dist_ms([j["total"] for j in joins]),
            "connect_snapshot": dist_ms([j["connect_snapshot"] for j in joins]),
            "sync": dist_ms([j["sync"] for j in joins]), "apply": dist_ms([j["apply"] for j in joins]),
            "update_bytes": joins[0]["update_bytes"], "elements": joins[0]["elements"]}


# --- the run -------------------------------------------------------------------------------------------------

def start_server(env: dict, tmp: Path, name: str, extra: dict) -> Server:
    port = free_port()
    server_env = {**env, **extra, "AULA_WS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"}
    server = Server(web_argv("127.0.0.1", port, 1), server_env, port, tmp / f"aula-{name}.log", health=True, cwd=ROOT)
    log(f"{name} listening on 127.0.0.1:{port} (pid {server.proc.pid})")
    return server


def run(args) -> dict:
    people = args.students + args.audience
    nofile = raise_nofile()
    if nofile < people + 500:
        raise SystemExit(f"open-file limit {nofile} is below the {people + 500} this run needs")
    summary: dict = {"args": vars(args), "machine": machine_info(), "app": app_revision(ROOT),
                     "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with backing_services(persistent=False) as extra, tempfile.TemporaryDirectory(prefix="aula-collab-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, **extra, "AULA_ENV": "development", "DJANGO_DEBUG": "false",
               "AULA_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(ROOT)}
        env.pop("PYTEST_XDIST_WORKER", None)
        log("migrating")
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
        log(f"seeding {people} people")
        subprocess.run([PY, "-m", "benchmarks.seed", "--students", str(people), "--out", str(tmp / "seed.json")],
                       env=env, cwd=ROOT, check=True)
        seed = json.loads((tmp / "seed.json").read_text())
        log("synthesizing and storing the 2-hour boards")
        subprocess.run([PY, "-m", "benchmarks.collab", "--django-step", "--seed", str(tmp / "seed.json"),
                        "--authors", str(args.students), "--compacted", str(args.boards),
                        "--uncompacted", str(args.uncompacted), "--hours", str(args.hours),
                        "--stroke-every", "20", "--points", "50", "--out", str(tmp / "synth.json")],
                       env=env, cwd=ROOT, check=True)
        synth = json.loads((tmp / "synth.json").read_text())
        summary["synth"] = {k: v for k, v in synth.items() if k not in ("boards",)}
        log(f"2-hour log: {synth['updates']} updates, {synth['log_bytes']} bytes")

        live = {}
        for name, flush in zip("AB", args.flush.split(","), strict=True):
            server = start_server(env, tmp, f"live-{name}", {"AULA_COLLAB_FLUSH_MS": flush})
            try:
                summary.setdefault("machine_busy_before", {})[name] = wait_for_quiet(args.quiet_wait)
                net = Net(server.port, seed)
                # A session of its own per target: both start from an empty board.
                result = asyncio.run(live_drawing(net, synth["live_sessions"][name], args))
                result["flush_ms"] = int(flush)
                result["server_exceptions"] = server.exceptions()
                live[name] = result
                log(f"{name}: delivery {result['latency']}, delivered {result['delivered_pct']} %, "
                    f"client process {result['client_process_cores']} cores")
            finally:
                server.stop()
        summary["live"] = live

        server = start_server(env, tmp, "joins", {})
        try:
            net = Net(server.port, seed)
            summary["joins"] = asyncio.run(joins_and_memory(net, server, synth, args))
            summary["joins"]["server_exceptions"] = server.exceptions()
        finally:
            server.stop()
    a = summary["live"]["A"]["latency"].get("p95_ms")
    cold = summary["joins"]["cold_compacted"]["total"].get("p95_ms")
    warm = summary["joins"]["warm_compacted"]["total"].get("p95_ms")
    summary["targets"] = {"delivery_p95_lt_100_ms": a is not None and a < 100,
                          "catch_up_p95_lt_1_s_warm": warm is not None and warm < 1000,
                          "catch_up_p95_lt_1_s_cold": cold is not None and cold < 1000}
    return summary


def markdown(summary: dict) -> str:
    a = summary["args"]
    A, B = summary["live"]["A"], summary["live"]["B"]
    j, s = summary["joins"], summary["synth"]

    def trio(d):
        return f"{d.get('p50_ms')} / {d.get('p95_ms')} / {d.get('p99_ms')}"

    lines = [f"### {a['students']} drawing at {a['rate']}/s ({a.get('client', 'blind')} client) + {a['audience']} watching, {a['duration']} s; "
             f"2-hour board of {a['students']} people (commit {(summary['app'].get('commit') or '?')[:7]})", "",
             f"| live drawing | A: AULA_COLLAB_FLUSH_MS={A['flush_ms']} | B: AULA_COLLAB_FLUSH_MS={B['flush_ms']} |",
             "|---|---|---|"]
    rows = [
        ("sockets connected", A["connected"], B["connected"]),
        ("updates made / frames sent / acknowledged",
         f"{A['updates_sent']} / {A.get('frames_sent')} / {A['updates_acked']}",
         f"{B['updates_sent']} / {B.get('frames_sent')} / {B['updates_acked']}"),
        ("relayed frames (updates per frame)", f"{A['relayed_frames']} ({A['updates_per_frame']})",
         f"{B['relayed_frames']} ({B['updates_per_frame']})"),
        ("delivery p50 / p95 / p99 (ms)", trio(A["latency"]), trio(B["latency"])),
        ("ack (stored) p50 / p95 / p99 (ms)", trio(A["ack"]), trio(B["ack"])),
        ("delivered %", A["delivered_pct"], B["delivered_pct"]),
        ("errors", A["errors"] or "none", B["errors"] or "none"),
        ("server exceptions", A["server_exceptions"] or "none", B["server_exceptions"] or "none"),
        ("client process (cores)", A["client_process_cores"], B["client_process_cores"]),
    ]
    lines += [f"| {x} | {y} | {z} |" for x, y, z in rows]
    lines += ["", f"2-hour board: {s['updates']} updates, {s['log_bytes']} bytes of log "
                  f"({s['authors']} people, compactor: {s['compactor']}); stored compacted: "
                  f"{s['stored_compacted']}; uncompacted: {s.get('stored_uncompacted')}.", "",
              "| late join (connect → snapshot → sync → applied) | p50 / p95 / p99 (ms) | sync p95 | apply p95 | n |",
              "|---|---|---|---|---|"]
    for key, label in (("warm_compacted", "compacted, class present (room in memory)"),
                       ("cold_compacted", "compacted, first socket in the process (loaded from PostgreSQL)"),
                       ("warm_uncompacted", "not compacted, class present"),
                       ("cold_uncompacted", "not compacted, first socket in the process")):
        x = j.get(key)
        if x and x.get("total"):
            lines.append(f"| {label} | {trio(x['total'])} | {x['sync'].get('p95_ms')} | "
                         f"{x['apply'].get('p95_ms')} | {x['total']['n']} |")
    lines += ["", "| server memory (worker RSS) | before (MB) | after (MB) | per board (MB) |", "|---|---|---|---|"]
    for key, label in (("memory_compacted", "2-hour boards, compacted"),
                       ("memory_uncompacted", "2-hour boards, not compacted")):
        m = j[key]
        lines.append(f"| {m['boards']} × {label} | {m['rss_before_mb']} | {m['rss_after_mb']} | {m['per_board_mb']} |")
    lines += ["", f"Targets: {summary['targets']}. Join-server exceptions: {j.get('server_exceptions') or 'none'}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--django-step"]:
        return django_step(argv[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks.collab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", type=int, default=30, help="people drawing at once")
    p.add_argument("--audience", type=int, default=200, help="people only watching")
    p.add_argument("--rate", type=float, default=10.0, help="board updates per second per drawer")
    p.add_argument("--points-per-update", type=int, default=3)
    p.add_argument("--client", choices=("browser", "blind"), default="browser",
                   help="browser: one update in flight, the rest merged after the ack (static/aula/collab.js); "
                        "blind: every update sent at once, without waiting")
    p.add_argument("--stroke-seconds", type=float, default=2.0, help="a new stroke this often")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of live drawing per target")
    p.add_argument("--drain", type=float, default=3.0, help="seconds to wait for deliveries after the last send")
    p.add_argument("--flush", default="20,1",
                   help="AULA_COLLAB_FLUSH_MS of target A and of baseline B (20: the default; 1: no batching)")
    p.add_argument("--hours", type=float, default=2.0, help="length of the synthesized class board")
    p.add_argument("--boards", type=int, default=10, help="compacted 2-hour boards (cold joins, memory)")
    p.add_argument("--uncompacted", type=int, default=3, help="uncompacted 2-hour boards (the comparison)")
    p.add_argument("--joins", type=int, default=20, help="warm late joins per variant")
    p.add_argument("--quiet-wait", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="JSON path (default: benchmarks/measurements/collab-<people>-<commit>.json)")
    args = p.parse_args(argv)
    if not 1 <= args.students <= 200 or not 0 <= args.audience <= 2000 or not 0 < args.duration <= 300:
        p.error("students 1..200, audience 0..2000, duration 0..300 s")
    if not 0 < args.rate <= 30 or not 0 < args.hours <= 4 or not 1 <= args.boards <= 50 or args.uncompacted > 10:
        p.error("rate 0..30, hours 0..4, boards 1..50, uncompacted 0..10")
    args.viewers = args.students + args.audience  # the measurements file name (save_summary)
    summary = run_locked(run, args)
    out = save_summary(summary, args, "collab", markdown)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
