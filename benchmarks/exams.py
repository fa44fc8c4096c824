"""Exam week on this machine: a start stampede, an autosave storm and a deadline wave, measured end to end.

    .venv/bin/python -m benchmarks.exams --students 2000 --close-in 200 --autosave 60 --stampede 10 --wave-timeout 90

Starts throwaway PostgreSQL and Redis (embedded), then the same processes as `make run` (config/devservers.py:
uvicorn with `--workers`, a Celery worker for `deadlines`, one for `default,bulk`, and beat), seeds one exam whose close falls `--close-in` seconds
after seeding (every attempt's deadline is that close: N deadlines in the same second), then:

1. start stampede: every student POSTs Start within `--stampede` seconds (real HTTP, session + CSRF);
2. attempt sockets: every student opens the attempt socket, spread over the same `--stampede` window (the
   attempt page opens it right after its Start), until the snapshot arrives;
3. autosave storm: `--settle` seconds later every student saves an answer every `--every` seconds for
   `--autosave` seconds; latency is from the send to the server's ack (the ack comes after commit);
4. deadline wave: after the close, the database is read until every attempt is finalised; the lag of
   each finalisation behind its deadline is reported, then (the bulk queue) until every submitted attempt
   is graded and notified.

Load generators run in separate processes on loopback; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


# --- load generator processes ----------------------------------------------------------------------------

async def _start_one(port: int, key: str, exam: int, csrf: str) -> tuple[float, int | None, str]:
    t0 = time.time()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        body = f"csrfmiddlewaretoken={csrf}"
        req = (f"POST /exams/{exam}/start/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Origin: http://127.0.0.1:{port}\r\nCookie: sessionid={key}; csrftoken={csrf}\r\n"
               f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n{body}")
        writer.write(req.encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.read(4096), 30)
        writer.close()
        text = head.decode(errors="replace")
        status = text.split(" ", 2)[1] if " " in text else "?"
        attempt = None
        for line in text.split("\r\n"):
            if line.lower().startswith("location:") and "/attempts/" in line:
                attempt = int(line.rsplit("/attempts/", 1)[1].strip("/ "))
        return time.time() - t0, attempt, status
    except Exception as exc:  # a failure is a measurement, not a crash
        return time.time() - t0, None, type(exc).__name__


async def _stampede(spec: dict) -> dict:
    port, exam, window = spec["port"], spec["exam"], spec["window"]
    start_at = spec["start_at"]
    csrf = secrets.token_hex(16)

    async def one(student):
        await asyncio.sleep(max(start_at + random.uniform(0, window) - time.time(), 0))
        return student["id"], *await _start_one(port, student["key"], exam, csrf)

    results = await asyncio.gather(*[one(s) for s in spec["students"]])
    return {"starts": [{"student": sid, "latency": lat, "attempt": att, "status": st}
                       for sid, lat, att, st in results], "finished_at": time.time()}


async def _storm(spec: dict) -> dict:
    import websockets

    port, every, until = spec["port"], spec["every"], spec["until"]
    connect_from, connect_window, saves_from = spec["connect_from"], spec["connect_window"], spec["saves_from"]
    latencies: list[float] = []
    connects: list[float] = []
    errors: dict[str, int] = {}
    acked = 0

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def student(s):
        nonlocal acked
        # Each attempt page opens its socket right after its Start, so the sockets connect spread over the
        # stampede's window; saves are measured once every socket had its chance to connect.
        await asyncio.sleep(max(connect_from + random.uniform(0, connect_window) - time.time(), 0))
        t0 = time.time()
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/v1/attempts/{s['attempt']}/",
                                          origin=f"http://127.0.0.1:{port}", open_timeout=30, compression=None,
                                          additional_headers={"Cookie": f"sessionid={s['key']}"})
        except Exception as exc:
            err(f"connect:{type(exc).__name__}")
            return
        try:
            snap = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if snap.get("type") != "snapshot":
                err(f"first-frame:{snap.get('type')}")
                return
            connects.append(time.time() - t0)
            await asyncio.sleep(max(saves_from + random.uniform(0, every) - time.time(), 0))
            version = 0
            while time.time() < until:
                version += 1
                q = spec["questions"][version % len(spec["questions"])]
                sent = time.time()
                await ws.send(json.dumps({"type": "answer.save", "ref": f"v{version}", "question_id": q,
                                          "value": f"answer {version}", "version": version}))
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if frame["type"] in ("ack", "error") and frame["data"].get("ref") == f"v{version}":
                        break
                if frame["type"] == "error":
                    err(f"error:{frame['data']['code']}")
                else:
                    latencies.append(time.time() - sent)
                    acked += 1
                await asyncio.sleep(max(sent + every - time.time(), 0))
        except Exception as exc:
            err(f"socket:{type(exc).__name__}")
        finally:
            await ws.close()

    await asyncio.gather(*[student(s) for s in spec["students"]])
    return {"latencies": latencies, "connects": connects, "errors": errors, "acked": acked}


def _worker(conn, kind: str, spec: dict) -> None:
    raise_nofile()
    cpu = time.process_time()
    result = asyncio.run(_stampede(spec) if kind == "stampede" else _storm(spec))
    result["cpu_s"] = time.process_time() - cpu
    conn.send(result)
    conn.close()


def fan_out(kind: str, spec: dict, students: list[dict], procs: int) -> list[dict]:
    pipes, workers = [], []
    for i in range(procs):
        parent, child = mp.Pipe()
        p = mp.Process(target=_worker, args=(child, kind, {**spec, "students": students[i::procs]}))
        p.start()
        pipes.append(parent)
        workers.append(p)
    results = [pipe.recv() for pipe in pipes]
    for p in workers:
        p.join(30)
    return results


# --- harness -------------------------------------------------------------------------------------------

def sql(env: dict, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)) as c:
        return c.execute(query).fetchall()


class _CpuMeter:
    """Where the machine's CPU went during one phase: seconds of CPU per part (web workers, Celery,
    PostgreSQL, Redis, the load generators) and how busy the whole machine was."""

    def __init__(self, procs: list[subprocess.Popen], datadir_hint: str):
        self.procs, self.hint = procs, datadir_hint
        self.redis_port = (os.environ.get("AULA_BENCH_REDIS_URL") or "").rsplit(":", 1)[-1].split("/")[0]
        self.start = self._read()

    def _read(self) -> dict:
        import psutil

        parts = {"web": 0.0, "celery": 0.0, "postgres": 0.0, "redis": 0.0}

        def tree(pid: int) -> list:
            try:
                root = psutil.Process(pid)
                return [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return []

        def cpu(p) -> float:
            try:
                t = p.cpu_times()
                return t.user + t.system
            except psutil.Error:
                return 0.0

        parts["web"] = sum(cpu(p) for p in tree(self.procs[0].pid))
        parts["celery"] = sum(cpu(p) for proc in self.procs[1:] for p in tree(proc.pid))
        for p in psutil.process_iter(["name", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["name"] == "postgres" and (self.hint in cmd or self._embedded_parent(p)):
                parts["postgres"] += cpu(p)
            elif "redis-server" in cmd and (self.hint in cmd or f":{self.redis_port} " in cmd + " "):
                parts["redis"] += cpu(p)
        times = psutil.cpu_times()
        parts["_busy"] = sum(times) - times.idle - getattr(times, "iowait", 0)
        parts["_all"] = sum(times)
        parts["_at"] = time.time()
        return parts

    @staticmethod
    def _embedded_parent(p) -> bool:
        try:
            return "pgdata" in " ".join(p.parent().cmdline())
        except Exception:
            return False

    def stop(self, loadgen_s: float) -> dict:
        end = self._read()
        out = {k: round(end[k] - self.start[k], 1) for k in ("web", "celery", "postgres", "redis")}
        out["loadgen"] = round(loadgen_s, 1)
        out["seconds"] = round(end["_at"] - self.start["_at"], 1)
        out["machine_busy_pct"] = round(100 * (end["_busy"] - self.start["_busy"]) /
                                        max(end["_all"] - self.start["_all"], 1e-9), 1)
        return out


class _Profile:
    """Optional evidence (`--py-spy`): GIL-holding py-spy samples of the web workers during one phase."""

    def __init__(self, args, web: subprocess.Popen, phase: str):
        self.procs: list[subprocess.Popen] = []
        if not args.py_spy:
            return
        import psutil

        out = Path(args.profile_dir)
        out.mkdir(parents=True, exist_ok=True)
        kids = [p for p in psutil.Process(web.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
        for i, proc in enumerate(kids or [psutil.Process(web.pid)]):
            self.procs.append(subprocess.Popen(
                [args.py_spy, "record", "--gil", "-p", str(proc.pid), "-r", "200", "--nonblocking", "-f", "raw",
                 "-o", str(out / f"exams-{args.students}-{phase}-web-{i}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        import signal

        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _load_phases(args, port: int, seed: dict, procs: list[subprocess.Popen], extra_hint: str) -> dict:
    """Phases 1–3 against whatever serves `port` (Aula, or the bare baseline app)."""
    summary: dict = {}
    # 1. start stampede
    t0 = time.time() + 1
    profile = _Profile(args, procs[0], "stampede")
    meter = _CpuMeter(procs, extra_hint)
    parts = fan_out("stampede", {"port": port, "exam": seed["exam"], "window": args.stampede,
                                 "start_at": t0}, seed["students"], args.procs)
    profile.stop()
    summary.setdefault("cpu_s", {})["stampede"] = meter.stop(sum(p["cpu_s"] for p in parts))
    starts = [s for p in parts for s in p["starts"]]
    ok = [s for s in starts if s["attempt"]]
    summary["stampede"] = {
        "window_s": args.stampede, "requests": len(starts), "succeeded": len(ok),
        "success_rate": round(len(ok) / max(len(starts), 1), 4),
        "all_done_after_s": round(max(p["finished_at"] for p in parts) - t0, 2),
        "latency_ms": {"p50": ms(pct([s["latency"] for s in ok], 50)),
                       "p95": ms(pct([s["latency"] for s in ok], 95)),
                       "p99": ms(pct([s["latency"] for s in ok], 99))},
        "failures": sorted({s["status"] for s in starts if not s["attempt"]}),
    }
    if args.stampede_only:
        return summary
    by_student = {s["student"]: s["attempt"] for s in ok}
    storm_students = [{**s, "attempt": by_student[s["id"]]} for s in seed["students"] if s["id"] in by_student]
    # 2. the attempt sockets connect (spread over the stampede's window, as they follow the Starts),
    # then the autosave storm (ends before the close)
    connect_from = time.time() + 1
    saves_from = connect_from + args.stampede + args.settle
    until = min(saves_from + args.autosave, seed["closes_at"] - 5)
    profile = _Profile(args, procs[0], "autosave")
    meter = _CpuMeter(procs, extra_hint)
    parts = fan_out("storm", {"port": port, "every": args.every, "until": until,
                              "connect_from": connect_from, "connect_window": args.stampede,
                              "saves_from": saves_from, "questions": seed["questions"]},
                    storm_students, args.procs)
    profile.stop()
    summary.setdefault("cpu_s", {})["sockets_and_autosave"] = meter.stop(sum(p["cpu_s"] for p in parts))
    conn = [v for p in parts for v in p["connects"]]
    summary["connect"] = {"window_s": args.stampede, "sockets": len(storm_students), "connected": len(conn),
                          "latency_ms": {"p50": ms(pct(conn, 50)), "p95": ms(pct(conn, 95)),
                                         "max": ms(max(conn) if conn else None)}}
    lat = [v for p in parts for v in p["latencies"]]
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    summary["autosave"] = {
        "sockets": len(storm_students), "every_s": args.every, "acked": sum(p["acked"] for p in parts),
        "seconds": round(until - saves_from, 1), "rate_per_s": round(len(lat) / max(until - saves_from, 1), 1),
        "ack_ms": {"p50": ms(pct(lat, 50)), "p95": ms(pct(lat, 95)), "p99": ms(pct(lat, 99)),
                   "max": ms(max(lat) if lat else None)},
        "errors": errors,
    }
    return summary


def _bare_baseline(args, seed: dict, extra_hint: str) -> dict:
    """The same load against benchmarks.bare_exam_app under the same uvicorn command, same run."""
    from config.devservers import free_port, uvicorn_tuning_args, wait_for_port

    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.bare_exam_app:app", "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(args.workers), *uvicorn_tuning_args()]
    web = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        wait_for_port(port, 60)
        time.sleep(1)
        return _load_phases(args, port, seed, [web], extra_hint)
    finally:
        os.killpg(web.pid, 15)
        web.wait(20)


def run(args) -> dict:
    from config.devservers import backing_services, celery_processes, free_port, wait_for_port, web_argv

    raise_nofile()
    summary: dict = {"students": args.students, "web_workers": args.workers, "machine": os.cpu_count(),
                     "deadline_concurrency": int(os.environ.get("AULA_DEADLINE_CONCURRENCY") or 4)}
    extra_hint = "aula-test-"  # where backing_services puts its throwaway PostgreSQL and Redis
    with backing_services(persistent=False) as extra, tempfile.TemporaryDirectory() as tmp:
        os.environ["AULA_BENCH_REDIS_URL"] = extra.get("REDIS_URL") or os.environ.get("REDIS_URL", "")
        port = free_port()
        env = {**os.environ, **extra, "AULA_ENV": "test", "AULA_WS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
               "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "AULA_LOG_LEVEL": "WARNING"}
        env.pop("PYTEST_XDIST_WORKER", None)
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        seed_file = Path(tmp) / "seed.json"
        subprocess.run([py, "-m", "benchmarks.exam_seed", "--students", str(args.students), "--close-in",
                        str(args.close_in), "--out", str(seed_file)], cwd=ROOT, env=env, check=True)
        seed = json.loads(seed_file.read_text())
        summary["seed_seconds"] = seed["seed_seconds"]
        # Exactly the processes of `make run` / production (config/devservers.py), with quieter logs.
        specs = [("web", web_argv("127.0.0.1", port, args.workers)),
                 *celery_processes(Path(tmp) / "beat", loglevel="WARNING")]
        logdir = Path(args.logs or tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        logs = {name: open(logdir / f"{name}.log", "w")  # noqa: SIM115 - closed in the finally below
                for name, _ in specs}
        procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=logs[name], stderr=subprocess.STDOUT,
                                  start_new_session=True) for name, argv in specs]
        try:
            wait_for_port(port, 60)
            time.sleep(2)
            if args.baseline:
                summary["baseline"] = _bare_baseline(args, seed, extra_hint)
            summary.update(_load_phases(args, port, seed, procs, extra_hint))
            if args.stampede_only:
                return summary
            # 3. deadline wave
            wait_until = seed["closes_at"] + args.wave_timeout
            while time.time() < wait_until:
                left = sql(env, "SELECT count(*) FROM exams_attempt WHERE state IN ('in_progress', 'overdue')")[0][0]
                if left == 0 and time.time() > seed["closes_at"]:
                    break
                time.sleep(0.5)
            rows = sql(env, "SELECT extract(epoch FROM finalized_at - deadline), state FROM exams_attempt "
                            "WHERE started_at IS NOT NULL")
            lags = [float(r[0]) for r in rows if r[0] is not None]
            # Grading and the "submitted" notice follow the close on the bulk queue: wait for them too.
            while time.time() < wait_until and sql(env, "SELECT count(*) FROM exams_attempt WHERE state = "
                                                        "'submitted' AND max_score IS NULL")[0][0]:
                time.sleep(0.5)
            after_close = sql(env, "SELECT extract(epoch FROM max(n.created_at) - min(a.deadline)) FROM "
                                   "exams_notification n JOIN exams_attempt a ON a.id = n.attempt_id")[0][0]
            counts = sql(env, "SELECT (SELECT count(*) FROM exams_integrityevent WHERE kind = 'auto_submitted'), "
                              "(SELECT count(*) FROM exams_notification), "
                              "(SELECT count(DISTINCT attempt_id) FROM exams_notification)")[0]
            summary["deadline_wave"] = {
                "attempts": len(rows), "finalised": len(lags),
                "within_10s": sum(1 for v in lags if v <= 10),
                "lag_s": {"p50": round(statistics.median(lags), 2) if lags else None,
                          "p95": round(pct(lags, 95), 2) if lags else None,
                          "max": round(max(lags), 2) if lags else None},
                "graded_and_notified_after_s": round(float(after_close), 2) if after_close is not None else None,
                "auto_submitted_entries": counts[0], "notifications": counts[1],
                "attempts_notified": counts[2],
            }
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, 15)
                    p.wait(20)
                except Exception:
                    pass
            for f in logs.values():
                f.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exams")
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--close-in", type=float, default=180, help="seconds from seeding to the exam's close")
    parser.add_argument("--stampede", type=float, default=10, help="seconds over which everyone presses Start")
    parser.add_argument("--autosave", type=float, default=60, help="seconds of autosave storm")
    parser.add_argument("--every", type=float, default=5, help="seconds between one student's saves")
    parser.add_argument("--settle", type=float, default=5,
                        help="seconds between the end of the sockets' connect window and the first saves")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--wave-timeout", type=float, default=90)
    parser.add_argument("--baseline", action="store_true",
                        help="first run the same phases against the bare ASGI app (benchmarks/bare_exam_app.py)")
    parser.add_argument("--stampede-only", action="store_true", help="stop after the start stampede (profiling)")
    parser.add_argument("--logs", help="keep the server and worker logs in this directory")
    parser.add_argument("--py-spy", help="path to a py-spy binary: sample the web workers per phase (evidence)")
    parser.add_argument("--profile-dir", default=str(ROOT / "benchmarks" / "results" / "profiles"))
    args = parser.parse_args(argv)
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
