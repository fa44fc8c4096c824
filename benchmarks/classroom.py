"""The classroom load benchmark: one command, real servers, a bounded run, a JSON + markdown summary.

    .venv/bin/python -m benchmarks.classroom --students 2000 --rate 20 --duration 20 --workers 2

It starts throwaway PostgreSQL and Redis (config.devservers) unless DATABASE_URL / REDIS_URL are set,
migrates, seeds one course with N students and a live session (benchmarks.seed), starts Aula's production
server command (uvicorn + config.devservers.uvicorn_tuning_args) and drives it from a few load-generator
processes (benchmarks.loadgen): a join storm, chat at a fixed rate with presence changes, an idle
period, and a poll. Then, in the same run and with the same generator and rate, it does the join storm and
chat against benchmarks.bare_server (a bare `websockets` broadcast server), the ceiling. Everything
listens on 127.0.0.1 only, and every phase has a deadline.
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from benchmarks import loadgen
from config.devservers import backing_services, free_port, uvicorn_tuning_args, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- statistics ------------------------------------------------------------------------------------

def pct(values, q: float) -> float | None:
    """Nearest-rank percentile of an unsorted sequence (None when empty)."""
    if not len(values):
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def dist_ms(values) -> dict:
    values = list(values)
    if not values:
        return {"n": 0}
    s = sorted(values)
    return {"n": len(s), "p50_ms": _ms(pct(s, 50)), "p95_ms": _ms(pct(s, 95)), "p99_ms": _ms(pct(s, 99)),
            "max_ms": _ms(s[-1])}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


# --- processes we started ------------------------------------------------------------------------------

class Server:
    """A server process group we started (uvicorn + its workers, or the bare server)."""

    def __init__(self, argv: list[str], env: dict, port: int, log_path: Path, health: bool, cwd: Path = ROOT):
        self.port = port
        self.log_path = log_path
        self.log_file = open(log_path, "w")  # noqa: SIM115 - open for the server's lifetime, closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            if health:
                _wait_http(f"http://127.0.0.1:{port}/healthz/", self.proc, 60)
            else:
                wait_for_port(port, 30)
        except Exception:
            self.stop()
            raise

    def processes(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        """The processes that serve sockets: uvicorn's children when it has any, else the process itself."""
        root = psutil.Process(self.proc.pid)
        kids = [p for p in root.children() if "resource_tracker" not in " ".join(_cmdline(p))]
        return kids or [root]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log_file.close()

    def exceptions(self) -> dict[str, int]:
        """The final line of each traceback in the server's log, counted (what went wrong, how often)."""
        import re

        counts: collections.Counter[str] = collections.Counter()
        with contextlib.suppress(OSError):
            pending = False
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("Traceback"):
                    pending = True
                elif pending and re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Disconnected|Cancelled)\b", line):
                    counts[line[:160]] += 1
                    pending = False
        return dict(counts.most_common(20))

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        return ""


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def cpu_by_pid(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def rss_bytes(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def listening_pid(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def backing_processes(env: dict) -> dict[str, callable]:
    """PostgreSQL (postmaster and its backends, listed afresh on each call) and Redis, by listening port."""
    from urllib.parse import urlparse

    def tree(pid: int):
        def procs() -> list[psutil.Process]:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                return [root, *root.children(recursive=True)]
            return []
        return procs

    out = {}
    for name, url in (("postgres", env.get("DATABASE_URL")), ("redis", env.get("REDIS_URL"))):
        port = urlparse(url or "").port
        pid = listening_pid(port) if port else None
        if pid:
            out[name] = tree(pid)
    return out


def machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) from /proc/stat, all cores."""
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class CpuWindow:
    """CPU seconds used by named process groups (and the whole machine) between start() and stop()."""

    def __init__(self, groups: dict[str, callable]):
        self.groups = groups

    def start(self) -> None:
        self.t0 = time.time()
        self.m0 = machine_busy()
        self.c0 = {name: cpu_by_pid(fn()) for name, fn in self.groups.items()}

    def stop(self) -> dict:
        # Per process: a process that appeared in the window (a new PostgreSQL backend) counts from zero.
        elapsed = time.time() - self.t0
        m1 = machine_busy()
        used = {}
        for name, fn in self.groups.items():
            before = self.c0[name]
            used[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in cpu_by_pid(fn()).items())
        busy = (m1[0] - self.m0[0]) / max(m1[1] - self.m0[1], 1)
        # Whatever else ran on the machine meanwhile (other people's test runs share it), in cores.
        other = busy * (os.cpu_count() or 1) - sum(used.values()) / max(elapsed, 1e-9)
        return {"seconds": round(elapsed, 2), "cpu_s": {k: round(v, 3) for k, v in used.items()},
                "machine_busy_pct": round(100 * busy, 1), "other_processes_cores": round(max(other, 0.0), 2)}


def wait_for_quiet(limit_s: float, busy_below: float = 0.15) -> float:
    """Wait (bounded) until the machine is mostly idle before a target's run; returns the last busy share."""
    deadline = time.monotonic() + limit_s
    while True:
        a = machine_busy()
        time.sleep(2.0)
        b = machine_busy()
        busy = (b[0] - a[0]) / max(b[1] - a[1], 1)
        if busy < busy_below or time.monotonic() >= deadline:
            return round(busy, 3)
        log(f"machine {100 * busy:.0f}% busy with other work; waiting for it to calm down")


# --- load generator processes --------------------------------------------------------------------

class Generators:
    def __init__(self, count: int, spec: dict):
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for _ in range(count):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=loadgen.run, args=(child, spec), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    def psutil_procs(self) -> list[psutil.Process]:
        out = []
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(p.pid))
        return out

    def ask(self, commands: list[dict | None], timeout: float) -> list[dict | None]:
        """Send one command per process (None: skip that process) and wait for all replies."""
        for pipe, cmd in zip(self.pipes, commands, strict=True):
            if cmd is not None:
                pipe.send(cmd)
        replies: list[dict | None] = []
        deadline = time.monotonic() + timeout
        for pipe, cmd in zip(self.pipes, commands, strict=True):
            if cmd is None:
                replies.append(None)
                continue
            if not pipe.poll(max(deadline - time.monotonic(), 0.1)):
                raise TimeoutError(f"load generator did not answer {cmd['cmd']} within {timeout}s")
            reply = pipe.recv()
            if "exception" in reply:
                raise RuntimeError(f"load generator failed in {cmd['cmd']}:\n{reply['exception']}")
            replies.append(reply)
        return replies

    def stop(self) -> None:
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)


# --- one target (Aula or the bare server) ------------------------------------------------------------

def run_target(name: str, server: Server, seed: dict, args, backing: dict) -> dict:
    n = args.students
    students = seed["students"][:n]
    procs = args.procs
    result: dict = {"target": name}
    rng = random.Random(args.seed)

    spec = {"url": f"ws://127.0.0.1:{server.port}/ws/v1/sessions/{seed['session_id']}/",
            "origin": f"http://127.0.0.1:{server.port}", "cookie_name": seed["cookie_name"], "client": args.client}
    gens = Generators(procs, spec)
    groups = {"server": server.workers, "loadgen": gens.psutil_procs}
    if name == "aula":
        groups.update(backing)
    window = CpuWindow(groups)
    try:
        time.sleep(1.0)  # generator processes import websockets/uvloop
        rss_before = rss_bytes(server.workers())
        result["rss_before_mb"] = round(rss_before / 2**20, 1)

        # Client index -> (process, user). Students go round-robin; the teacher is index 0 in process 0.
        owner = {0: 0}
        per_proc: list[list] = [[] for _ in range(procs)]
        for i, s in enumerate(students, start=1):
            owner[i] = i % procs
            per_proc[i % procs].append([i, s["id"], s["key"]])

        # Teacher first, so it sees every student's join in its presence diffs.
        t_reply = gens.ask([{"cmd": "join", "teacher": True, "start_at": time.time(), "timeout": 30,
                             "clients": [[0, seed["teacher"]["id"], seed["teacher"]["key"]]]}]
                           + [None] * (procs - 1), 60)[0]
        if t_reply["clients"][0][4]:
            raise RuntimeError(f"teacher could not join: {t_reply['clients'][0][4]}\n{server.log_tail()}")
        time.sleep(0.5)

        # --- join storm ---
        log(f"{name}: join storm of {n} students")
        start_at = time.time() + 1.0
        window.start()
        profilers = Profilers(args, f"{name}-join", server, gens)
        replies = gens.ask([{"cmd": "join", "start_at": start_at, "timeout": args.join_timeout, "clients": pp}
                            for pp in per_proc], args.join_timeout + 60)
        join_cpu = window.stop()
        profilers.stop()
        clients = [c for r in replies for c in r["clients"]]
        joined = [c for c in clients if c[3] is not None and not c[4]]
        fails = collections.Counter(c[4] for c in clients if c[4])
        join_times = [c[3] - start_at for c in joined]
        result["join"] = {
            "students": n, "joined": len(joined), "success_pct": round(100 * len(joined) / max(n, 1), 2),
            "all_joined_s": round(max(join_times), 2) if join_times else None,
            "p50_s": round(pct(join_times, 50), 2) if join_times else None,
            "p95_s": round(pct(join_times, 95), 2) if join_times else None,
            "handshake": dist_ms([c[2] - c[1] for c in clients if c[2]]),
            "failures": dict(fails), "cpu": join_cpu,
        }
        log(f"{name}: joined {len(joined)}/{n} in {result['join']['all_joined_s']}s {dict(fails) or ''}")

        time.sleep(args.settle)
        rss_after = rss_bytes(server.workers())
        result["rss_after_mb"] = round(rss_after / 2**20, 1)
        result["rss_per_connection_kb"] = round((rss_after - rss_before) / 1024 / max(len(joined) + 1, 1), 1)

        if name == "aula":
            seen = {}
            for u, st, t in gens.ask([{"cmd": "presence_seen"}] + [None] * (procs - 1), 30)[0]["presence_seen"]:
                if st == "active":
                    seen[u] = t
            lat = [seen[c[0]] - c[2] for c in joined if c[0] in seen]
            result["presence_join"] = {**dist_ms(lat), "missing": sum(1 for c in joined if c[0] not in seen)}

        # --- idle: what N open sockets cost with nothing happening (re-checks, heartbeats, pings). Measured
        # before chat, over one re-check period (AULA_SOCKET_RECHECK_SECONDS, 30 s), so each socket is
        # re-checked about once, at its natural pace.
        idle_s = args.idle if name == "aula" else min(args.idle, 5.0)
        if idle_s > 0:
            window.start()
            profilers = Profilers(args, f"{name}-idle", server, gens)
            time.sleep(idle_s)
            idle = window.stop()
            profilers.stop()
            result["idle"] = idle
            idle["server_cpu_ms_per_socket_s"] = round(
                1000 * idle["cpu_s"]["server"] / idle["seconds"] / max(len(joined) + 1, 1), 3)

        # --- chat at a fixed rate (with presence changes for Aula) ---
        # The machine is shared: when other work took more than --max-other cores during the chat phase, the
        # phase is run again on the same sockets (fresh message refs), and the least disturbed attempt is kept.
        joined_ids = {c[0] for c in joined}
        index_of = {s["id"]: i for i, s in enumerate(students, start=1)}
        present = [index_of[u] for u in joined_ids]
        rng.shuffle(present)
        senders = present[:max(1, min(args.senders, len(present)))]
        others = [i for i in present if i not in senders]
        total = int(args.rate * args.duration)
        attempts = []
        for attempt in range(args.chat_attempts):
            if attempt:
                log(f"{name}: other work took {attempts[-1]['cpu']['other_processes_cores']} cores during chat; "
                    f"running the chat phase again")
                wait_for_quiet(args.quiet_wait)
            sends = [[senders[k % len(senders)], k / args.rate, attempt * total + k + 1] for k in range(total)]
            states = []
            if name == "aula" and args.presence_rate > 0:
                per = int(args.presence_rate * args.duration)
                changers = (others[attempt * per:] + others)[:per]
                state = "idle" if attempt % 2 == 0 else "away"
                states = [[idx, 0.25 + k / args.presence_rate, state] for k, idx in enumerate(changers)]
            cmds = [{"cmd": "chat", "start_at": 0, "drain_min": 1.0, "drain_max": args.drain,
                     "sends": [s for s in sends if owner[s[0]] == p],
                     "states": [s for s in states if owner[s[0]] == p]} for p in range(procs)]
            start_at = time.time() + 1.0
            for c in cmds:
                c["start_at"] = start_at
            log(f"{name}: chat {args.rate}/s for {args.duration}s to {len(joined) + 1} sockets")
            _sleep_until(start_at - 0.05)
            window.start()
            profilers = Profilers(args, f"{name}-chat{attempt}", server, gens)
            replies = gens.ask(cmds, args.duration + args.drain + 60)
            chat_cpu = window.stop()
            profilers.stop()
            chat = summarize_chat(replies, chat_cpu, args, start_at)
            quiesce(gens, chat)
            chat["attempt"] = attempt
            if "idle" in result:
                idle = result["idle"]
                idle_rate = idle["cpu_s"]["server"] / idle["seconds"]
                net = chat["cpu"]["cpu_s"]["server"] - idle_rate * chat["cpu"]["seconds"]
                chat["server_cpu_us_per_delivery_net_of_idle"] = round(
                    1e6 * max(net, 0.0) / max(chat["deliveries"], 1), 2)
                chat["idle_server_cpu_pct"] = round(100 * idle_rate, 1)
            if name == "aula":
                seen_list = gens.ask([{"cmd": "presence_seen"}] + [None] * (procs - 1), 30)[0]["presence_seen"]
                seen = {(u, st): t for u, st, t in seen_list}
                st_lat, missing = [], 0
                for r in replies:
                    for st in r["states"]:
                        t = seen.get((st["user_id"], st["state"]))
                        if t is None:
                            missing += 1
                        else:
                            st_lat.append(t - st["t_send"])
                chat["presence_state"] = {**dist_ms(st_lat), "missing": missing}
            attempts.append(chat)
            if chat["cpu"]["other_processes_cores"] <= args.max_other:
                break
        best = min(attempts, key=lambda a: a["cpu"]["other_processes_cores"])
        result["chat"] = best
        if "presence_state" in best:
            result["presence_state"] = best.pop("presence_state")
        result["chat_attempts"] = [
            {"attempt": a["attempt"], "other_processes_cores": a["cpu"]["other_processes_cores"],
             "latency": a["latency"], "delivered_pct": a["delivered_pct"],
             "eventually_delivered_pct": a["eventually_delivered_pct"],
             "server_cpu_us_per_delivery": a["server_cpu_us_per_delivery"]} for a in attempts]

        # --- poll (Aula only) ---
        if name == "aula" and args.poll:
            profilers = Profilers(args, f"{name}-poll", server, gens)
            try:
                result["poll"] = run_poll(gens, procs, owner, present, args, rng)
            finally:
                profilers.stop()

        # --- rejoin: everyone joins again, now with chat history and an answered poll in the snapshot ---
        if name == "aula" and args.rejoin:
            gens.ask([{"cmd": "leave"}] * procs, 120)
            time.sleep(args.settle)
            log(f"{name}: second join storm (after chat and poll)")
            start_at = time.time() + 1.0
            window.start()
            profilers = Profilers(args, f"{name}-rejoin", server, gens)
            replies = gens.ask([{"cmd": "join", "start_at": start_at, "timeout": args.join_timeout, "clients": pp}
                                for pp in per_proc], args.join_timeout + 60)
            rejoin_cpu = window.stop()
            profilers.stop()
            clients = [c for r in replies for c in r["clients"]]
            ok = [c[3] - start_at for c in clients if c[3] is not None and not c[4]]
            result["rejoin"] = {"joined": len(ok), "success_pct": round(100 * len(ok) / max(n, 1), 2),
                                "all_joined_s": round(max(ok), 2) if ok else None,
                                "p50_s": round(pct(ok, 50), 2) if ok else None,
                                "failures": dict(collections.Counter(c[4] for c in clients if c[4])),
                                "cpu": rejoin_cpu}
            log(f"{name}: rejoined {len(ok)}/{n} in {result['rejoin']['all_joined_s']}s")

        replies = gens.ask([{"cmd": "close"}] * procs, 120)
        closed = collections.Counter()
        for r in replies:
            closed.update(r["closed_by_server_before_end"])
        result["closed_by_server_before_end"] = dict(closed)
    finally:
        gens.stop()
    return result


class Profilers:
    """Optional evidence: py-spy samples of the server workers (and one generator) during one phase."""

    def __init__(self, args, label: str, server: Server, gens: Generators):
        self.procs: list[subprocess.Popen] = []
        if not args.py_spy:
            return
        out = Path(args.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        targets = [(f"server-{i}", p.pid) for i, p in enumerate(server.workers())]
        targets.append(("loadgen-0", gens.procs[0].pid))
        for name, pid in targets:
            path = out / f"{args.students}-w{args.workers}-{label}-{name}.txt"
            self.procs.append(subprocess.Popen(
                [args.py_spy, "record", "-p", str(pid), "-r", "250", "--nonblocking", "-f", "raw", "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def quiesce(gens: Generators, chat: dict) -> None:
    """Let a backlog drain before the next phase; record what arrived after the drain window."""
    replies = gens.ask([{"cmd": "quiesce", "quiet": 1.5, "timeout": 120}] * len(gens.procs), 180)
    late = array.array("d")
    for r in replies:
        late.frombytes(r["late_lat"])
    eventually = sum(r["deliveries"] for r in replies)
    chat["late_deliveries"] = len(late)
    chat["late_latency"] = dist_ms(late)
    chat["eventually_delivered_pct"] = round(100 * eventually / max(chat["expected"], 1), 3)
    chat["eventually_per_receiver_min"] = min(r["per_receiver_min"] for r in replies)
    chat["quiesce_s"] = max(r["waited"] for r in replies)
    chat["quiesced"] = all(r["quiet"] for r in replies)


def summarize_chat(replies: list[dict], cpu: dict, args, start_at: float) -> dict:
    lat, lat_sent = array.array("d"), array.array("d")
    for r in replies:
        lat.frombytes(r["lat"])
        lat_sent.frombytes(r["lat_sent"])
    sends = [s for r in replies for s in r["sends"]]
    receivers = sum(r["receivers"] for r in replies)
    deliveries = sum(r["deliveries"] for r in replies)
    expected = len(sends) * receivers
    acked = [s for s in sends if s["t_ack"] is not None and not s["error"]]
    errors = collections.Counter(s["error"] for s in sends if s["error"])
    server_cpu = cpu["cpu_s"]["server"]
    lg_cpu = cpu["cpu_s"]["loadgen"]
    # Latency in the last third of the sending period: does it stay flat, or is a backlog building up?
    cut = start_at + args.duration * 2 / 3
    tail = [latency for latency, sent in zip(lat, lat_sent, strict=True) if sent >= cut]
    frames = collections.Counter()
    for r in replies:
        frames.update(r["frames"])
    all_frames = deliveries + sum(frames.values())
    out = {
        "messages": len(sends), "acked": len(acked), "send_errors": dict(errors),
        "receivers": receivers, "deliveries": deliveries, "expected": expected,
        "delivered_pct": round(100 * deliveries / max(expected, 1), 3),
        "per_receiver_min": min(r["per_receiver_min"] for r in replies),
        "gaps": sum(r["gaps"] for r in replies), "dups": sum(r["dups"] for r in replies),
        # A gap seen by a client makes it resume from the database (docs/protocol.md); a reordered frame is
        # one that arrived after a later seq (it counts as delivered).
        "reordered": sum(r["reordered"] for r in replies),
        "receivers_that_saw_a_gap": sum(r["receivers_that_saw_a_gap"] for r in replies),
        "lagged": sum(r["lagged"] for r in replies), "closed_during": sum(r["closed_during"] for r in replies),
        "latency": dist_ms(lat),
        "latency_last_third": dist_ms(tail),
        "ack": dist_ms([s["t_ack"] - s["t_send"] for s in acked]),
        "send_lag": dist_ms([s["t_send"] - s["sched"] for s in sends]),
        "deliveries_per_s": round(deliveries / args.duration, 1),
        "other_frames": dict(frames),
        "cpu": cpu,
        "server_cpu_us_per_delivery": round(1e6 * server_cpu / max(deliveries, 1), 2),
        "server_cpu_us_per_frame": round(1e6 * server_cpu / max(all_frames, 1), 2),
        "server_deliveries_per_cpu_s": round(deliveries / max(server_cpu, 1e-9)),
        "loadgen_cpu_us_per_frame": round(1e6 * lg_cpu / max(all_frames, 1), 2),
    }
    for name in ("postgres", "redis"):
        if name in cpu["cpu_s"]:
            out[f"{name}_cpu_us_per_delivery"] = round(1e6 * cpu["cpu_s"][name] / max(deliveries, 1), 2)
    return out


def run_poll(gens: Generators, procs: int, owner: dict, present: list[int], args, rng: random.Random) -> dict:
    created = gens.ask([{"cmd": "poll_create", "timeout": 30}] + [None] * (procs - 1), 60)[0]
    if not created.get("poll_id"):
        return {"error": f"poll.create failed: {created}"}
    poll_id = created["poll_id"]
    time.sleep(1.0)  # poll.started reaches everyone
    answers = [[idx, rng.uniform(0, args.poll_spread), rng.randrange(4)] for idx in present]
    start_at = time.time() + 1.0
    log(f"aula: poll {poll_id}: {len(answers)} answers over {args.poll_spread}s")
    timeout = args.poll_spread + 30
    replies = gens.ask([{"cmd": "poll_answer", "poll_id": poll_id, "start_at": start_at, "timeout": timeout,
                         "expect_total": len(answers),
                         "answers": [a for a in answers if owner[a[0]] == p]} for p in range(procs)],
                       timeout + 60)
    recs = [a for r in replies for a in r["answers"]]
    ok = [a for a in recs if a["t_ack"] is not None and not a["error"] and not a["duplicate"]]
    results = sorted(replies[0]["results"])  # the teacher's poll.results frames: (time, respondents)
    errors = collections.Counter(a["error"] for a in recs if a["error"])
    # Answers commit one at a time under the poll's row lock, so the committed set is always a prefix of
    # the commit order (approximated by ack order): the r-th answer is visible in the first results frame
    # that counts at least r respondents.
    ok.sort(key=lambda a: a["t_ack"])
    visible, invisible = [], 0
    j = 0
    for r, a in enumerate(ok, start=1):
        while j < len(results) and results[j][1] < r:
            j += 1
        if j < len(results):
            visible.append(results[j][0] - a["t_send"])
        else:
            invisible += 1
    last_send = max((a["t_send"] for a in recs), default=start_at)
    final = next((t for t, cnt in results if cnt >= len(ok)), None) if ok else None
    return {
        "answers": len(recs), "acked": len(ok), "errors": dict(errors),
        "ack": dist_ms([a["t_ack"] - a["t_send"] for a in ok]),
        "answer_to_teacher_results": {**dist_ms(visible), "never_seen": invisible},
        "last_answer_to_final_results_ms": _ms(final - last_send) if final else None,
        "results_frames_at_teacher": len(results),
        "answers_per_s_offered": round(len(recs) / args.poll_spread, 1),
    }


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


# --- the run -------------------------------------------------------------------------------------------

def machine_info() -> dict:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import websockets

    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "websockets": websockets.__version__}


def app_revision(app: Path) -> dict:
    """Which code was measured: the commit, and whether the work tree differed from it."""
    info: dict = {"dir": str(app)}
    stamp = app / "BENCH_REVISION"  # written next to an exported tree (see docs/benchmarks.md)
    if stamp.exists():
        info["commit"] = stamp.read_text().strip()
        info["dirty"] = False
        return info
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=app, capture_output=True, text=True,
                                        check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=app,
                                 capture_output=True, text=True, check=True).stdout.split("\n")
        info["dirty"] = [line[3:] for line in changed if line.strip()]
    return info


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (inherited by the servers and generators it starts) to `want`:
    the hard limit too when allowed (root), else up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass  # not privileged: the hard limit stays
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(args) -> dict:
    nofile = raise_nofile()
    need = 2 * args.students + 500
    if nofile < need:
        raise SystemExit(f"open-file limit {nofile} is below the {need} this run needs")
    summary = {"args": vars(args), "machine": machine_info(), "nofile": nofile,
               "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    app = Path(args.app_dir).resolve()
    summary["app"] = app_revision(app)
    with backing_services(persistent=False) as extra, tempfile.TemporaryDirectory(prefix="aula-bench-") as tmp:
        tmp = Path(tmp)
        # The app's modules come from --app-dir (first on the path); `benchmarks` from this checkout.
        env = {**os.environ, **extra, "AULA_ENV": "development", "DJANGO_DEBUG": "false",
               "AULA_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "config.settings",
               "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(app), str(ROOT)]))}
        log(f"migrating ({app})")
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=app, check=True)
        log(f"seeding {args.students} students")
        seed_path = tmp / "seed.json"
        subprocess.run([PY, "-m", "benchmarks.seed", "--students", str(args.students), "--out", str(seed_path)],
                       env=env, cwd=app, check=True)
        seed = json.loads(seed_path.read_text())
        backing = backing_processes(env)
        results = []
        for target in args.targets:
            port = free_port()
            if target == "aula":
                server_env = {**env, "AULA_WS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
                              "AULA_RATE_LIMITS": "chat=100000/1,presence=100000/1,poll_answer=100000/1",
                              **dict(item.split("=", 1) for item in args.server_env)}
                argv = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                        "--workers", str(args.workers), *uvicorn_tuning_args()]
                summary["aula_server_command"] = " ".join(argv[1:])
                server = Server(argv, server_env, port, tmp / "aula.log", health=True, cwd=app)
            else:
                argv = [PY, "-m", "benchmarks.bare_server", "--port", str(port)]
                server = Server(argv, env, port, tmp / "bare.log", health=False)
            log(f"{target} listening on 127.0.0.1:{port} (pid {server.proc.pid})")
            try:
                busy = wait_for_quiet(args.quiet_wait)
                result = run_target(target, server, seed, args, backing)
                result["machine_busy_before"] = busy
                results.append(result)
            finally:
                server.stop()
                tail, errors = server.log_tail(), server.exceptions()
            results[-1]["server_exceptions"] = errors
            if tail.strip():
                results[-1]["server_log_tail"] = tail[-4000:]
        summary["results"] = results
    by = {r["target"]: r for r in results}
    if "aula" in by and "bare" in by:
        a, b = by["aula"]["chat"], by["bare"]["chat"]
        summary["aula_vs_bare"] = {
            "aula_cpu_us_per_delivery": a["server_cpu_us_per_delivery"],
            "bare_cpu_us_per_delivery": b["server_cpu_us_per_delivery"],
            "aula_deliveries_per_core_s": a["server_deliveries_per_cpu_s"],
            "bare_deliveries_per_core_s": b["server_deliveries_per_cpu_s"],
            "ratio": round(a["server_deliveries_per_cpu_s"] / max(b["server_deliveries_per_cpu_s"], 1), 3),
        }
        if "server_cpu_us_per_delivery_net_of_idle" in a and "server_cpu_us_per_delivery_net_of_idle" in b:
            summary["aula_vs_bare"]["ratio_net_of_idle"] = round(
                b["server_cpu_us_per_delivery_net_of_idle"] / max(a["server_cpu_us_per_delivery_net_of_idle"], 1e-9), 3)
    return summary


# One row of the summary table: a label and how to read it from one target's result.
ROWS = [
    ("join: all joined (s)", lambda r: r["join"]["all_joined_s"]),
    ("join: success %", lambda r: r["join"]["success_pct"]),
    ("join: p95 per socket (s)", lambda r: r["join"]["p95_s"]),
    ("join: server CPU per join (ms)",
     lambda r: round(1000 * r["join"]["cpu"]["cpu_s"]["server"] / max(r["join"]["joined"], 1), 1)),
    ("rejoin after chat + poll: all joined (s)", lambda r: r["rejoin"]["all_joined_s"] if "rejoin" in r else "–"),
    ("chat latency p50 / p95 / p99 (ms)",
     lambda r: f"{r['chat']['latency'].get('p50_ms')} / {r['chat']['latency'].get('p95_ms')} / "
               f"{r['chat']['latency'].get('p99_ms')}"),
    ("chat latency p95, last third (ms)", lambda r: r["chat"]["latency_last_third"].get("p95_ms")),
    ("chat delivered % (within drain / eventually)",
     lambda r: f"{r['chat']['delivered_pct']} / {r['chat'].get('eventually_delivered_pct')}"),
    ("chat: sockets that saw a seq gap (→ resume) / frames out of order",
     lambda r: f"{r['chat']['receivers_that_saw_a_gap']} / {r['chat']['reordered']}"),
    ("chat: fewest messages any socket got (of sent)",
     lambda r: f"{r['chat'].get('eventually_per_receiver_min')} of {r['chat']['messages']}"),
    ("deliveries/s achieved", lambda r: r["chat"]["deliveries_per_s"]),
    ("server CPU µs / delivery", lambda r: r["chat"]["server_cpu_us_per_delivery"]),
    ("server CPU µs / delivery, net of idle", lambda r: r["chat"].get("server_cpu_us_per_delivery_net_of_idle")),
    ("deliveries per server CPU-second", lambda r: r["chat"]["server_deliveries_per_cpu_s"]),
    ("idle server CPU with N open (% of a core)", lambda r: r["chat"].get("idle_server_cpu_pct")),
    ("machine busy during chat %", lambda r: r["chat"]["cpu"]["machine_busy_pct"]),
    ("other processes on the machine during chat (cores)",
     lambda r: f"{r['chat']['cpu']['other_processes_cores']} (attempt {r['chat']['attempt'] + 1} "
               f"of {len(r['chat_attempts'])})"),
    ("load generator CPU µs / frame", lambda r: r["chat"]["loadgen_cpu_us_per_frame"]),
    ("PostgreSQL + Redis CPU µs / delivery",
     lambda r: (round(r["chat"].get("postgres_cpu_us_per_delivery", 0)
                      + r["chat"].get("redis_cpu_us_per_delivery", 0), 2)
                if "postgres_cpu_us_per_delivery" in r["chat"] else "–")),
    ("server RSS per connection (KiB)", lambda r: r["rss_per_connection_kb"]),
    ("presence: join seen by teacher p95 (ms)",
     lambda r: r.get("presence_join", {}).get("p95_ms", "–")),
    ("presence: state change p50 / p95 / max (ms)",
     lambda r: (f"{r['presence_state'].get('p50_ms')} / {r['presence_state'].get('p95_ms')} / "
                f"{r['presence_state'].get('max_ms')}") if "presence_state" in r else "–"),
    ("poll: answer → teacher results p50 / p95 (ms)",
     lambda r: (f"{r['poll']['answer_to_teacher_results'].get('p50_ms')} / "
                f"{r['poll']['answer_to_teacher_results'].get('p95_ms')}") if "poll" in r else "–"),
    ("poll: last answer → final results (ms)",
     lambda r: r["poll"].get("last_answer_to_final_results_ms") if "poll" in r else "–"),
    ("poll: answer ack p95 (ms)", lambda r: r["poll"]["ack"].get("p95_ms") if "poll" in r else "–"),
    ("server exceptions logged", lambda r: sum(r.get("server_exceptions", {}).values()))]


def cell(fn, result: dict) -> str:
    try:
        return str(fn(result))
    except (KeyError, TypeError, IndexError):
        return "–"


def markdown(summary: dict) -> str:
    args = summary["args"]
    lines = [f"### {args['students']} students, chat {args['rate']}/s for {args['duration']}s, "
             f"uvicorn --workers {args['workers']}, {args['procs']} load-generator processes ({args['client']} client)", ""]
    results = summary["results"]
    lines.append("| measure | " + " | ".join(r["target"] for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for label, fn in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(fn, r) for r in results) + " |")
    if "aula_vs_bare" in summary:
        v = summary["aula_vs_bare"]
        lines += ["", f"Aula / bare deliveries per server CPU-second: **{v['ratio']}**"
                      + (f" (net of idle: {v['ratio_net_of_idle']})" if "ratio_net_of_idle" in v else "")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.classroom", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="chat messages per second, room-wide")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of chat")
    p.add_argument("--workers", type=int, default=2, help="uvicorn --workers")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes")
    p.add_argument("--senders", type=int, default=20, help="students who send the chat messages")
    p.add_argument("--presence-rate", type=float, default=2.0, help="presence state changes per second (Aula)")
    p.add_argument("--poll-spread", type=float, default=5.0, help="seconds over which all students answer")
    p.add_argument("--no-poll", dest="poll", action="store_false")
    p.add_argument("--no-rejoin", dest="rejoin", action="store_false",
                   help="skip the second join storm (after chat and poll) against Aula")
    p.add_argument("--idle", type=float, default=30.0,
                   help="seconds of idle measurement (N sockets open, no traffic) before chat")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between the join storm and chat")
    p.add_argument("--join-timeout", type=float, default=60.0)
    p.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for deliveries after the last send")
    p.add_argument("--targets", default="aula,bare", help="aula, bare or both (comma-separated)")
    p.add_argument("--client", choices=["sansio", "asyncio"], default="sansio",
                   help="load-generator sockets: websockets' sans-I/O protocol on asyncio (lighter) or "
                        "websockets.asyncio.client")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="wait up to this long for other work on the machine to stop before each target")
    p.add_argument("--py-spy", help="path to a py-spy binary: sample server workers during chat (evidence)")
    p.add_argument("--profile-dir", default=str(ROOT / "benchmarks" / "results" / "profiles"))
    p.add_argument("--app-dir", default=str(ROOT),
                   help="the Aula checkout to serve (default: this one); e.g. an exported commit")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the Aula server (what-if experiments), repeatable")
    p.add_argument("--chat-attempts", type=int, default=3,
                   help="run the chat phase again (up to this many times) when other work disturbed it")
    p.add_argument("--max-other", type=float, default=0.25,
                   help="cores of other work during chat above which the chat phase counts as disturbed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="write the JSON summary here (default: benchmarks/results/<name>.json)")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not 1 <= args.students <= 10000 or not 0 < args.duration <= 600 or not 0 < args.rate <= 1000:
        p.error("students 1..10000, duration 0..600 s, rate 0..1000/s")
    summary = run(args)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        f"classroom-{args.students}-w{args.workers}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(markdown(summary))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
