"""The live-stream load benchmark: one command, real servers, a bounded run, a JSON + markdown summary.

    .venv/bin/python -m benchmarks.streams --viewers 5000 --reactions-per-second 2000 --chat-rate 10 \\
        --duration 30 --workers 1 --baseline

It starts throwaway PostgreSQL and Redis (config.devservers) unless DATABASE_URL / REDIS_URL are set,
migrates, seeds a channel with a live stream and N signed-in viewers with login sessions
(benchmarks.stream_seed), starts Aula's production server command (config.devservers.web_argv: uvicorn +
uvicorn_tuning_args) and its Celery processes, and drives the stream room from a few load-generator
processes (benchmarks.stream_loadgen) over real WebSockets on 127.0.0.1, phase by phase:

1. connect storm: every viewer connects at the same instant (anonymous ones without a cookie); a viewer is
   connected at its first frame from the room; then the viewer count is checked;
2. reactions: --reactions-per-second in aggregate, spread over the signed-in viewers, for --duration
   seconds; every viewer adds up the `reactions` deltas it receives (exactness, latency);
3. chat: --chat-rate messages per second from --senders viewers for --duration seconds (latency, delivery,
   server CPU per delivery);
4. partial leave: --leave-share of the viewers disconnect; the viewer count is checked again.

`python -m benchmarks.streams --table A.json B.json` prints one table from several runs' summaries.

With --baseline the same phases then run against benchmarks.bare_stream_server (a bare `websockets` room,
the ceiling), with the same generators and rates. Everything listens on 127.0.0.1 only, and every phase has
a deadline. The methods are in docs/benchmarks.md ("Live streams").
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
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
    CpuWindow,
    Generators,
    Server,
    _sleep_until,
    app_revision,
    backing_processes,
    cell,
    dist_ms,
    log,
    machine_info,
    pct,
    quiesce,
    raise_nofile,
    rss_bytes,
    summarize_chat,
    wait_for_quiet,
)
from config.devservers import backing_services, celery_processes, free_port, web_argv

LOCK = Path("/tmp/aula-bench-running")  # while it exists, other engineers' test runs wait
GENERATOR = "benchmarks.stream_loadgen:StreamLoadGen"


class Background:
    """Processes without a port we started for the run (the Celery worker and beat); stopped by group."""

    def __init__(self, specs: list[tuple[str, list[str]]], env: dict, cwd: Path, logdir: Path):
        self.procs: list[tuple[str, subprocess.Popen, object]] = []
        for name, argv in specs:
            fh = open(logdir / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
            self.procs.append((name, subprocess.Popen(argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                                      start_new_session=True), fh))

    def processes(self) -> list[psutil.Process]:
        out = []
        for _, p, _ in self.procs:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(p.pid)
                out += [root, *root.children(recursive=True)]
        return out

    def stop(self) -> None:
        import signal

        for _, p, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for _, p, fh in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            fh.close()


# --- phases ------------------------------------------------------------------------------------------

def viewer_count_check(gens: Generators, expected: int, peak: int, phase_start: float, since: float,
                       interval: float) -> dict:
    """Do the `viewers` frames show the connected number within one batch interval of `since` (when the last
    connect or close completed)? Read from the observers' frames since the phase began (the count may reach
    its final value before the last socket hears from the room) and every open viewer's last frame."""
    replies = gens.ask([{"cmd": "viewers", "since": phase_start}] * len(gens.procs), 30)
    frames = sorted(f for r in replies for f in r["frames"])
    last: collections.Counter = collections.Counter()
    for r in replies:
        last.update(r["last_counts"])
    first_right = next((f for f in frames if f[2] == expected), None)
    # Per observer, its latest count: they all must agree with the expected number at the end.
    latest = {}
    for t, idx, count, pk in frames:
        latest[idx] = (t, count, pk)
    open_now = sum(r["open"] for r in replies)
    converged = None if first_right is None else round(max(first_right[0] - since, 0.0), 3)
    return {
        "expected": expected, "open_sockets": open_now,
        "observers_latest_counts": sorted({v[1] for v in latest.values()}, key=str),
        "observers_latest_peaks": sorted({v[2] for v in latest.values()}, key=str),
        "viewers_with_right_count": last.get(expected, 0),
        "viewers_last_counts": {str(k): v for k, v in last.most_common(5)},
        "converged_after_s": converged,
        "peak_expected": peak,
        "peak_right": bool(latest) and all(v[2] == peak for v in latest.values()),
        "met": (converged is not None and converged <= interval + 0.25
                and all(v[1] == expected for v in latest.values()) and bool(latest)),
    }


def run_storm(gens: Generators, window: CpuWindow, per_proc: list[list], args, name: str) -> tuple[dict, list]:
    log(f"{name}: connect storm of {args.viewers} viewers")
    start_at = time.time() + 1.0
    window.start()
    replies = gens.ask([{"cmd": "join", "start_at": start_at, "timeout": args.connect_timeout, "clients": pp}
                        for pp in per_proc], args.connect_timeout + 60)
    cpu = window.stop()
    clients = [c for r in replies for c in r["clients"]]  # (idx, t_start, t_open, t_connected, fail, first type)
    joined = [c for c in clients if c[3] is not None and not c[4]]
    times = [c[3] - start_at for c in joined]
    storm = {
        "viewers": len(clients), "connected": len(joined),
        "success_pct": round(100 * len(joined) / max(len(clients), 1), 2),
        "all_connected_s": round(max(times), 2) if times else None,
        "p50_s": round(pct(times, 50), 3) if times else None,
        "p95_s": round(pct(times, 95), 3) if times else None,
        "handshake": dist_ms([c[2] - c[1] for c in clients if c[2]]),
        "failures": dict(collections.Counter(c[4] for c in clients if c[4])),
        "first_frame_types": dict(collections.Counter(c[5] for c in joined)),
        "server_cpu_ms_per_connect": round(1000 * cpu["cpu_s"]["server"] / max(len(joined), 1), 2),
        "cpu": cpu, "start_at": start_at, "t_done": max((c[3] for c in joined), default=start_at),
    }
    log(f"{name}: connected {len(joined)}/{len(clients)} in {storm['all_connected_s']}s {storm['failures'] or ''}")
    return storm, joined


def reaction_latency(accepted: list[tuple], timelines: list[list], window_s: float) -> dict:
    """Two estimates, per observer viewer and accepted reaction (docs/benchmarks.md, "Live streams"):

    * could_include: receive time of the first delta whose window ends at or after the send (the first
      delta that could hold the reaction; when a frame has no window_start, the first received after the
      send) − send time. This is the figure held against the target.
    * by_count: the k-th reaction in send order counts as shown when the viewer's running total first
      reaches k (conservative: it assumes the server counted reactions in the order they were sent).
    """
    sends = sorted(a[0] for a in accepted)
    rng = random.Random(7)
    sample = sends if len(sends) <= 20000 else sorted(rng.sample(sends, 20000))
    could, by_count, never = [], [], 0
    for tl in timelines:
        if not tl:
            never += len(sample)
            continue
        ends = [(ws + window_s) if ws is not None else t for t, _, ws in tl]
        # Window ends are ordered as the frames arrive; keep the index monotone in case of clock jitter.
        for i in range(1, len(ends)):
            ends[i] = max(ends[i], ends[i - 1])
        recv = [t for t, _, _ in tl]
        for t_s in sample:
            i = bisect.bisect_left(ends, t_s)
            if i < len(tl):
                could.append(recv[i] - t_s)
            else:
                never += 1
        running = [total for _, total, _ in tl]
        for k, t_s in enumerate(sends, start=1):
            i = bisect.bisect_left(running, k)
            if i < len(tl):
                by_count.append(recv[i] - t_s)
    return {"could_include": {**dist_ms(could), "never_seen": never}, "by_count": dist_ms(by_count)}


def run_reactions(gens: Generators, window: CpuWindow, senders: list[int], owner: dict, args, name: str,
                  live_counters) -> dict:
    emojis = args.emojis
    total = int(args.reactions_per_second * args.duration)
    rate = args.reactions_per_second
    sends = [[senders[k % len(senders)], k / rate, emojis[k % len(emojis)], k + 1] for k in range(total)]
    window_s = (args.window_ms or 500) / 1000
    start_at = time.time() + 1.0
    cmds = [{"cmd": "reactions", "start_at": start_at, "sends": [s for s in sends if owner[s[0]] == p],
             "drain_min": 2 * window_s, "drain_max": args.drain, "quiet": 2 * window_s + 0.5}
            for p in range(len(gens.procs))]
    log(f"{name}: reactions {rate}/s for {args.duration}s from {len(senders)} viewers "
        f"({rate / max(len(senders), 1):.2f}/s each)")
    _sleep_until(start_at - 0.05)
    window.start()
    replies = gens.ask(cmds, args.duration + args.drain + 60)
    cpu = window.stop()
    all_sends = [s for r in replies for s in r["sends"]]  # (t_send, t_ack, error, emoji)
    errors = collections.Counter(s[2] for s in all_sends if s[2])
    acked = [s for s in all_sends if s[1] is not None and not s[2]]
    # The server's answer to each reaction is its ack; a room that does not ack reactions accepts every
    # reaction it did not answer with an error frame.
    accepted = acked if acked else [s for s in all_sends if not s[2]]
    expected = collections.Counter(s[3] for s in accepted)
    receivers = sum(r["receivers"] for r in replies)
    exact = over = under = 0
    totals = []
    for r in replies:
        for tot, by, k in r["totals"]:
            totals += [tot] * k
            if collections.Counter(by) == expected:
                exact += k
            elif tot > len(accepted):
                over += k
            else:
                under += k
    frames = sum(r["frames"] for r in replies)
    server_cpu = cpu["cpu_s"]["server"]
    seen_window = next((r["window_ms"] for r in replies if r["window_ms"]), None)
    out = {
        "sent": len(all_sends), "acked": len(acked), "accepted": len(accepted), "errors": dict(errors),
        "offered_per_s": rate, "senders": len(senders), "receivers": receivers,
        "window_ms_seen": seen_window,
        "exact_viewers": exact, "viewers_over": over, "viewers_under": under,
        "exact_pct": round(100 * exact / max(receivers, 1), 3),
        "viewer_total_min": min(totals, default=None), "viewer_total_max": max(totals, default=None),
        "reactions_frames": sum(r["rx_frames"] for r in replies),
        "reactions_frames_per_viewer_s": round(sum(r["rx_frames"] for r in replies) / max(receivers, 1)
                                               / args.duration, 2),
        "ack": dist_ms([s[1] - s[0] for s in acked]),
        "latency": reaction_latency(accepted, [tl for r in replies for tl in r["timelines"]],
                                    (seen_window or args.window_ms or 500) / 1000),
        "closed_during": sum(r["closed_during"] for r in replies),
        "frames_delivered": frames,
        "server_cpu_us_per_frame": round(1e6 * server_cpu / max(frames, 1), 2),
        "server_cpu_us_per_reaction": round(1e6 * server_cpu / max(len(accepted), 1), 2),
        "cpu": cpu,
    }
    if live_counters is not None:
        out["server_counted"] = live_counters(start_at - 1, time.time() + 1)
    log(f"{name}: reactions accepted {len(accepted)}/{len(all_sends)}, exact at {exact}/{receivers} viewers, "
        f"latency p95 {out['latency']['could_include'].get('p95_ms')} ms")
    return out


def run_chat(gens: Generators, window: CpuWindow, senders: list[int], owner: dict, args, name: str,
             receivers: int) -> dict:
    total = int(args.chat_rate * args.duration)
    sends = [[senders[k % len(senders)], k / args.chat_rate, k + 1] for k in range(total)]
    start_at = time.time() + 1.0
    cmds = [{"cmd": "chat", "start_at": start_at, "drain_min": 1.0, "drain_max": args.drain,
             "sends": [s for s in sends if owner[s[0]] == p], "states": []} for p in range(len(gens.procs))]
    log(f"{name}: chat {args.chat_rate}/s for {args.duration}s to {receivers} viewers")
    _sleep_until(start_at - 0.05)
    window.start()
    replies = gens.ask(cmds, args.duration + args.drain + 60)
    cpu = window.stop()
    chat = summarize_chat(replies, cpu, args, start_at)
    quiesce(gens, chat)
    return chat


def run_leave(gens: Generators, leaving: list[list[int]], args, name: str) -> float:
    log(f"{name}: {sum(len(x) for x in leaving)} viewers leave")
    replies = gens.ask([{"cmd": "leave_some", "idxs": idxs} for idxs in leaving], 120)
    return max(r["t_done"] for r in replies)


# --- one target (Aula or the bare room) --------------------------------------------------------------------

def run_target(name: str, server: Server, seed: dict, args, backing: dict, live_counters) -> dict:
    """All phases against one server; `backing` maps extra process groups (PostgreSQL, Redis, Celery) whose
    CPU each phase reports next to the server's."""
    procs = args.procs
    viewers = seed["viewers"][:args.viewers]
    n_anon = int(round(args.viewers * args.anonymous_share))
    result: dict = {"target": name}
    rng = random.Random(args.seed)
    spec = {"url": f"ws://127.0.0.1:{server.port}/ws/v1/streams/{seed['stream_id']}/?surface=watch",
            "origin": f"http://127.0.0.1:{server.port}", "cookie_name": seed["cookie_name"],
            "client": args.client, "generator": GENERATOR}
    gens = Generators(procs, spec)
    groups = {"server": server.workers, "loadgen": gens.psutil_procs}
    if name == "aula":
        groups.update(backing)
    window = CpuWindow(groups)
    try:
        time.sleep(1.0)  # generator processes import websockets/uvloop
        rss_before = rss_bytes(server.workers())
        result["rss_before_mb"] = round(rss_before / 2**20, 1)

        # Viewer index -> process, round-robin; the last n_anon viewers are anonymous (no cookie); the first
        # --observers of each process record timelines and never leave.
        owner, per_proc, signed_in = {}, [[] for _ in range(procs)], set()
        for i, v in enumerate(viewers):
            p = i % procs
            owner[i] = p
            anonymous = i >= len(viewers) - n_anon
            if not anonymous:
                signed_in.add(i)
            per_proc[p].append([i, None if anonymous else v["id"], "" if anonymous else v["key"],
                                i < procs * args.observers])

        storm, joined = run_storm(gens, window, per_proc, args, name)
        result["storm"] = storm
        time.sleep(args.settle)
        rss_after = rss_bytes(server.workers())
        result["rss_after_mb"] = round(rss_after / 2**20, 1)
        result["rss_per_connection_kb"] = round((rss_after - rss_before) / 1024 / max(len(joined), 1), 1)
        if args.idle > 0:
            # What holding the sockets costs with no traffic (re-checks, the stream's window ticker, heartbeats):
            # subtracted from the chat phase for a per-delivery figure net of it.
            window.start()
            time.sleep(args.idle)
            result["idle"] = window.stop()
        result["viewers_after_storm"] = viewer_count_check(gens, len(joined), len(joined), storm["start_at"],
                                                           storm["t_done"], args.viewers_interval)

        present = [c[0] for c in joined]
        talkers = [i for i in present if i in signed_in]
        if not talkers:
            raise RuntimeError(f"no signed-in viewer connected\n{server.log_tail()}")
        rng.shuffle(talkers)
        wait_for_quiet(min(args.quiet_wait, 20))
        result["reactions"] = run_reactions(gens, window, talkers, owner, args, name,
                                            live_counters if name == "aula" else None)
        time.sleep(args.settle)
        chat_senders = talkers[:max(1, min(args.senders, len(talkers)))]
        wait_for_quiet(min(args.quiet_wait, 20))
        result["chat"] = chat = run_chat(gens, window, chat_senders, owner, args, name, len(present))
        if "idle" in result:
            idle_rate = result["idle"]["cpu_s"]["server"] / result["idle"]["seconds"]
            net = chat["cpu"]["cpu_s"]["server"] - idle_rate * chat["cpu"]["seconds"]
            chat["idle_server_cpu_pct"] = round(100 * idle_rate, 1)
            chat["server_cpu_us_per_delivery_net_of_idle"] = round(1e6 * max(net, 0.0) / max(chat["deliveries"], 1), 2)

        observers = {i for i in present if i < procs * args.observers}
        candidates = [i for i in present if i not in observers]
        rng.shuffle(candidates)
        gone = candidates[:int(len(present) * args.leave_share)]
        leaving = [[i for i in gone if owner[i] == p] for p in range(procs)]
        leave_start = time.time()
        t_done = run_leave(gens, leaving, args, name)
        time.sleep(args.settle)
        result["viewers_after_leave"] = viewer_count_check(gens, len(present) - len(gone), len(joined),
                                                           leave_start, t_done, args.viewers_interval)
        result["viewers_after_leave"]["left"] = len(gone)

        replies = gens.ask([{"cmd": "close"}] * procs, 120)
        closed, errors = collections.Counter(), collections.Counter()
        for r in replies:
            closed.update(r["closed_by_server_before_end"])
            errors.update(r["errors"])
        result["closed_by_server_before_end"] = dict(closed)
        result["error_frames"] = dict(errors)  # by error code, over the whole run
    finally:
        gens.stop()
    return result


# --- the run -------------------------------------------------------------------------------------------

def live_counter_reader(seed: dict):
    """Sum of the stream's per-second reaction counters (streaming.live, fields rx.<emoji>) in a time range:
    what the server itself counted, to hold the viewers' sums against."""
    info = seed.get("live_counters")
    if not info:
        return None

    def read(t0: float, t1: float) -> dict:
        import redis

        client = redis.Redis.from_url(info["url"])
        try:
            pipe = client.pipeline(transaction=False)
            seconds = list(range(int(t0), int(t1) + 1))
            for s in seconds:
                pipe.hgetall(f"{info['prefix']}:s{s}")
            counts: collections.Counter[str] = collections.Counter()
            for raw in pipe.execute():
                for k, v in raw.items():
                    k = k.decode()
                    if k.startswith("rx."):
                        counts[k[3:]] += int(float(v))
            return {"total": sum(counts.values()), "by_emoji": dict(counts)}
        finally:
            client.close()
    return read


def run(args) -> dict:
    nofile = raise_nofile()
    # Per process: a generator holds its share of the client ends, a server worker (at worst) every server
    # end; the limit applies to each process, not to the machine.
    need = args.viewers + 500
    if nofile < need:
        raise SystemExit(f"open-file limit {nofile} is below the {need} this run needs")
    summary = {"args": vars(args), "machine": machine_info(), "nofile": nofile,
               "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    app = Path(args.app_dir).resolve()
    summary["app"] = app_revision(app)
    with backing_services(persistent=False) as extra, tempfile.TemporaryDirectory(prefix="aula-streams-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, **extra, "AULA_ENV": "development", "DJANGO_DEBUG": "false",
               "AULA_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "config.settings",
               "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(app), str(ROOT)]))}
        env.pop("PYTEST_XDIST_WORKER", None)
        log(f"migrating ({app})")
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=app, check=True)
        log(f"seeding {args.viewers} viewers")
        seed_path = tmp / "seed.json"
        subprocess.run([PY, "-m", "benchmarks.stream_seed", "--viewers", str(args.viewers), "--out", str(seed_path)],
                       env=env, cwd=app, check=True)
        seed = json.loads(seed_path.read_text())
        summary["seed_seconds"] = seed["seed_seconds"]
        summary["stream_settings"] = {k: seed.get(k) for k in ("window_ms", "chat_fanout_per_s",
                                                                "reactions_per_viewer_s")}
        args.window_ms = args.window_ms or seed.get("window_ms") or 500
        _check_rates(args, seed)
        backing = backing_processes(env)
        results = []
        for target in args.targets:
            port = free_port()
            background = None
            if target == "aula":
                server_env = {**env, "AULA_WS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
                              **dict(item.split("=", 1) for item in args.server_env)}
                argv = web_argv("127.0.0.1", port, args.workers)
                summary["aula_server_command"] = " ".join(argv[1:])
                if args.celery:
                    background = Background(celery_processes(tmp / "beat", loglevel="WARNING"), server_env, app, tmp)
                server = Server(argv, server_env, port, tmp / "aula.log", health=True, cwd=app)
            else:
                argv = [PY, "-m", "benchmarks.bare_stream_server", "--port", str(port),
                        "--window-ms", str(args.window_ms), "--viewers-every", str(args.viewers_interval)]
                server = Server(argv, env, port, tmp / "bare.log", health=False)
            log(f"{target} listening on 127.0.0.1:{port} (pid {server.proc.pid})")
            try:
                busy = wait_for_quiet(args.quiet_wait)
                groups = {**backing, "celery": background.processes} if background is not None else backing
                result = run_target(target, server, seed, args, groups, live_counter_reader(seed))
                result["machine_busy_before"] = busy
                results.append(result)
            finally:
                server.stop()
                if background is not None:
                    background.stop()
                tail, errors = server.log_tail(), server.exceptions()
            results[-1]["server_exceptions"] = errors
            if tail.strip():
                results[-1]["server_log_tail"] = tail[-4000:]
        summary["results"] = results
    by = {r["target"]: r for r in results}
    if "aula" in by and "bare" in by:
        a, b = by["aula"]["chat"], by["bare"]["chat"]
        summary["aula_vs_bare"] = {
            "aula_deliveries_per_core_s": a["server_deliveries_per_cpu_s"],
            "bare_deliveries_per_core_s": b["server_deliveries_per_cpu_s"],
            "aula_cpu_us_per_delivery": a["server_cpu_us_per_delivery"],
            "bare_cpu_us_per_delivery": b["server_cpu_us_per_delivery"],
            "ratio": round(a["server_deliveries_per_cpu_s"] / max(b["server_deliveries_per_cpu_s"], 1), 3),
        }
        if a.get("server_cpu_us_per_delivery_net_of_idle") and b.get("server_cpu_us_per_delivery_net_of_idle"):
            summary["aula_vs_bare"]["ratio_net_of_idle"] = round(
                b["server_cpu_us_per_delivery_net_of_idle"] / a["server_cpu_us_per_delivery_net_of_idle"], 3)
    summary["targets"] = targets_met(summary)
    return summary


def _check_rates(args, seed: dict) -> None:
    """Say so when the offered load crosses a limit of the stream room (then the run measures the limit)."""
    notes = []
    signed = args.viewers - int(round(args.viewers * args.anonymous_share))
    per_viewer = args.reactions_per_second / max(signed, 1)
    if seed.get("reactions_per_viewer_s") and per_viewer > seed["reactions_per_viewer_s"]:
        notes.append(f"{per_viewer:.2f} reactions/s per viewer is above the room's limit of "
                     f"{seed['reactions_per_viewer_s']}/s")
    if seed.get("chat_fanout_per_s") and args.chat_rate > seed["chat_fanout_per_s"]:
        notes.append(f"chat at {args.chat_rate}/s is above AULA_STREAM_CHAT_FANOUT_PER_SEC="
                     f"{seed['chat_fanout_per_s']}: viewers get chat.sampled notices for the rest")
    for note in notes:
        log(f"note: {note}")
    args.notes = notes


# Targets of issue 7, each a check on the Aula result (None when the phase did not run).
def targets_met(summary: dict) -> dict:
    aula = next((r for r in summary["results"] if r["target"] == "aula"), None)
    if aula is None:
        return {}

    def get(fn):
        try:
            return fn()
        except (KeyError, TypeError):
            return None

    chat_p95 = get(lambda: aula["chat"]["latency"]["p95_ms"])
    rx_p95 = get(lambda: aula["reactions"]["latency"]["could_include"]["p95_ms"])
    # Error frames cover rejected reactions and chat sends too; plus tracebacks, failed connects and sockets
    # the server closed before the end.
    errors = get(lambda: sum(aula["server_exceptions"].values()) + sum(aula["error_frames"].values())
                 + sum(aula["storm"]["failures"].values()) + sum(aula["closed_by_server_before_end"].values()))
    ratio = get(lambda: summary["aula_vs_bare"]["ratio"])
    return {
        "connect_success_ge_99_5_pct": get(lambda: aula["storm"]["success_pct"] >= 99.5),
        "reaction_latency_p95_lt_1500_ms": None if rx_p95 is None else rx_p95 < 1500,
        "reactions_exact_at_every_viewer": get(lambda: aula["reactions"]["exact_viewers"]
                                               == aula["reactions"]["receivers"]),
        "viewer_count_after_storm": get(lambda: aula["viewers_after_storm"]["met"]),
        "viewer_count_after_leave": get(lambda: aula["viewers_after_leave"]["met"]),
        "chat_p95_lt_250_ms": None if chat_p95 is None else chat_p95 < 250,
        "chat_delivered_ge_99_9_pct": get(lambda: aula["chat"]["delivered_pct"] >= 99.9),
        "rss_per_connection_le_40_kb": get(lambda: aula["rss_per_connection_kb"] <= 40),
        "zero_errors": None if errors is None else errors == 0,
        "aula_vs_bare_ge_0_5": None if ratio is None else ratio >= 0.5,
    }


ROWS = [
    ("connect: success %", lambda r: r["storm"]["success_pct"]),
    ("connect: all connected (s)", lambda r: r["storm"]["all_connected_s"]),
    ("connect: time to connect p50 / p95 (s)", lambda r: f"{r['storm']['p50_s']} / {r['storm']['p95_s']}"),
    ("connect: server CPU per connect (ms)", lambda r: r["storm"]["server_cpu_ms_per_connect"]),
    ("viewer count right after storm / after leave (s to converge)",
     lambda r: f"{r['viewers_after_storm']['converged_after_s']} / {r['viewers_after_leave']['converged_after_s']}"),
    ("reactions: accepted of sent", lambda r: f"{r['reactions']['accepted']} of {r['reactions']['sent']}"),
    ("reactions: viewers whose deltas add up exactly",
     lambda r: f"{r['reactions']['exact_viewers']} of {r['reactions']['receivers']}"),
    ("reactions: server's own count (rx.* counters)",
     lambda r: r["reactions"].get("server_counted", {}).get("total", "–")),
    ("reactions: send → delta p50 / p95 (ms)",
     lambda r: f"{r['reactions']['latency']['could_include'].get('p50_ms')} / "
               f"{r['reactions']['latency']['could_include'].get('p95_ms')}"),
    ("reactions: by running count p95 (ms)", lambda r: r["reactions"]["latency"]["by_count"].get("p95_ms")),
    ("reactions: server CPU µs / frame delivered", lambda r: r["reactions"]["server_cpu_us_per_frame"]),
    ("chat latency p50 / p95 / p99 (ms)",
     lambda r: f"{r['chat']['latency'].get('p50_ms')} / {r['chat']['latency'].get('p95_ms')} / "
               f"{r['chat']['latency'].get('p99_ms')}"),
    ("chat delivered % (within drain / eventually)",
     lambda r: f"{r['chat']['delivered_pct']} / {r['chat'].get('eventually_delivered_pct')}"),
    ("chat deliveries/s achieved", lambda r: r["chat"]["deliveries_per_s"]),
    ("chat: server CPU µs / delivery", lambda r: r["chat"]["server_cpu_us_per_delivery"]),
    ("chat: server CPU µs / delivery, net of idle", lambda r: r["chat"].get("server_cpu_us_per_delivery_net_of_idle")),
    ("idle server CPU with N open (% of a core)", lambda r: r["chat"].get("idle_server_cpu_pct")),
    ("chat: server CPU µs / frame (all frames)", lambda r: r["chat"]["server_cpu_us_per_frame"]),
    ("chat: deliveries per server CPU-second", lambda r: r["chat"]["server_deliveries_per_cpu_s"]),
    ("chat: machine busy % / other processes (cores)",
     lambda r: f"{r['chat']['cpu']['machine_busy_pct']} / {r['chat']['cpu']['other_processes_cores']}"),
    ("server RSS per connection (KiB)", lambda r: r["rss_per_connection_kb"]),
    ("error frames / server exceptions",
     lambda r: f"{sum(r.get('error_frames', {}).values())} / {sum(r.get('server_exceptions', {}).values())}"),
]


def markdown(summary: dict) -> str:
    a = summary["args"]
    lines = [f"### {a['viewers']} viewers, {a['reactions_per_second']} reactions/s, chat {a['chat_rate']}/s, "
             f"{a['duration']} s per phase, uvicorn --workers {a['workers']}, {a['procs']} load generators", ""]
    results = summary["results"]
    lines.append("| measure | " + " | ".join(r["target"] for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    lines += [f"| {label} | " + " | ".join(cell(fn, r) for r in results) + " |" for label, fn in ROWS]
    if "aula_vs_bare" in summary:
        v = summary["aula_vs_bare"]
        lines += ["", f"Aula / bare chat deliveries per server CPU-second: **{v['ratio']}** "
                      f"({v['aula_deliveries_per_core_s']} vs {v['bare_deliveries_per_core_s']})"]
    if summary.get("targets"):
        lines += ["", "Targets: " + ", ".join(f"{k} {'✓' if v else ('–' if v is None else '✗')}"
                                             for k, v in summary["targets"].items())]
    return "\n".join(lines)


def runs_table(paths: list[str]) -> str:
    """One markdown table from several runs' JSON summaries: a column per run and target."""
    columns, notes = [], []
    for path in paths:
        summary = json.loads(Path(path).read_text())
        a = summary["args"]
        for result in summary["results"]:
            columns.append((f"{result['target']} ({a['viewers']}, w{a['workers']})", result))
        if "aula_vs_bare" in summary:
            notes.append(f"- {a['viewers']} viewers, `--workers {a['workers']}`: Aula / bare chat deliveries per "
                         f"server CPU-second = **{summary['aula_vs_bare']['ratio']}**")
    lines = ["| measure | " + " | ".join(name for name, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cell(fn, r) for _, r in columns) + " |" for label, fn in ROWS]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--table"]:
        print(runs_table(argv[1:]))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.streams", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewers", type=int, default=300)
    p.add_argument("--reactions-per-second", type=float, default=200.0, help="aggregate, from signed-in viewers")
    p.add_argument("--chat-rate", type=float, default=10.0, help="chat messages per second, stream-wide")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of reactions, then seconds of chat")
    p.add_argument("--workers", type=int, default=1, help="uvicorn --workers")
    p.add_argument("--baseline", action="store_true", help="also run the bare websockets stream room")
    p.add_argument("--targets", help="aula, bare or both (comma-separated); overrides --baseline")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes")
    p.add_argument("--senders", type=int, default=20, help="viewers who send the chat messages")
    p.add_argument("--anonymous-share", type=float, default=0.0,
                   help="share of viewers that watch without signing in (they receive, never send)")
    p.add_argument("--observers", type=int, default=3,
                   help="viewers per generator that record full timelines (latency) and never leave")
    p.add_argument("--emojis", default="fire,heart,clap,laugh", help="reactions sent, round-robin")
    p.add_argument("--window-ms", type=int, help="reaction batch window of the bare room "
                                                   "(default: Aula's AULA_STREAM_REACTION_WINDOW_MS)")
    p.add_argument("--viewers-interval", type=float, default=1.0, help="viewers frames are at most this often")
    p.add_argument("--leave-share", type=float, default=0.2, help="share of viewers that leave at the end")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between phases")
    p.add_argument("--idle", type=float, default=10.0,
                   help="seconds of idle measurement (sockets open, no traffic) after the storm")
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for deliveries after the last send")
    p.add_argument("--client", choices=["sansio", "asyncio"], default="sansio")
    p.add_argument("--no-celery", dest="celery", action="store_false",
                   help="do not start the Celery worker and beat next to the web server")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="wait up to this long for other work on the machine to stop before each target")
    p.add_argument("--app-dir", default=str(ROOT), help="the Aula checkout to serve (default: this one)")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the Aula server (what-if experiments), repeatable")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="JSON summary path (default: benchmarks/measurements/streams-<viewers>-<commit>.json)")
    args = p.parse_args(argv)
    args.targets = ([t.strip() for t in args.targets.split(",") if t.strip()] if args.targets
                    else ["aula", "bare"] if args.baseline else ["aula"])
    args.emojis = [e.strip() for e in args.emojis.split(",") if e.strip()]
    if not 1 <= args.viewers <= 20000 or not 0 < args.duration <= 600:
        p.error("viewers 1..20000, duration 0..600 s")
    if not 0 < args.reactions_per_second <= 50000 or not 0 < args.chat_rate <= 1000 or not args.emojis:
        p.error("reactions-per-second 0..50000, chat-rate 0..1000, at least one emoji")
    if not 0 <= args.anonymous_share < 1 or not 0 <= args.leave_share < 1:
        p.error("--anonymous-share and --leave-share are shares below 1")
    summary = run_locked(run, args)
    out = save_summary(summary, args, "streams", markdown)
    print(out.read_text())
    print(out.with_suffix(".md").read_text(), file=sys.stderr)
    return 0


def run_locked(run_fn, args) -> dict:
    """Run a benchmark while holding LOCK (other engineers' test runs wait while it exists)."""
    mine = str(os.getpid())
    if LOCK.exists():
        log(f"note: {LOCK} already exists (another benchmark?); running anyway")
    else:
        LOCK.write_text(mine)
    try:
        return run_fn(args)
    finally:
        with contextlib.suppress(OSError):
            if LOCK.read_text() == mine:
                LOCK.unlink()


def save_summary(summary: dict, args, name: str, to_markdown) -> Path:
    """benchmarks/measurements/<name>-<viewers>-<commit>.json (or --out) and its .md table; returns the path."""
    commit = (summary["app"].get("commit") or "unknown")[:7]
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "measurements" / f"{name}-{args.viewers}-{commit}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    out.with_suffix(".md").write_text(to_markdown(summary) + "\n")
    log(f"JSON: {out}")
    return out


if __name__ == "__main__":
    sys.exit(main())
