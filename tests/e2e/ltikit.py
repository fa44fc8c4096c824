"""Real processes for the LMS browser tests (tests/e2e/test_lti_browser.py): Aula on uvicorn whose public URL is
its own address (the OIDC redirect and the deep-link content items carry it), and a Celery worker on the same
database and broker, so that grades reach the mock LMS the way they do in production."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

import tests.conftest
from config.devservers import free_port
from tests.conftest import ROOT

WORKER_QUEUES = "bulk,default,deadlines"
SERVER_START_SECONDS = 120


def aula_server(server_factory):
    """A uvicorn process with AULA_PUBLIC_URL = its own origin. conftest's ServerProcess picks its port itself, so
    the port is chosen first and handed to it (through the name it calls); its start is awaited longer than
    conftest's 30 s, which a loaded machine (parallel suites) exceeds."""
    port = free_port()
    wait_http = tests.conftest.wait_http
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tests.conftest, "free_port", lambda: port)
        patch.setattr(tests.conftest, "wait_http", lambda p, proc, timeout=30: wait_http(p, proc, SERVER_START_SECONDS))
        server = server_factory(kind="uvicorn", extra_env=public_env(port))
    assert server.port == port
    return server


def public_env(port: int) -> dict:
    db = connection.settings_dict
    return {"AULA_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}


class Worker:
    """`celery -A config worker` on the queues the LTI paths use (grade delivery, roster sync), solo pool, with
    the server's environment. Its log is kept for the failure message."""

    def __init__(self, log_dir: Path, port: int):
        self.log_path = log_dir / "celery-lti.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process, closed in stop()
        argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", WORKER_QUEUES, "--pool", "solo",
                "-l", "INFO", "-n", f"lti-e2e-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **public_env(port)}, start_new_session=True,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_bytes().decode("utf-8", "replace")[-chars:]

    def alive(self) -> bool:
        return self.proc.poll() is None

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
        self._log.close()


def wait_until(check, *, timeout: float, what: str, detail=lambda: ""):
    """Poll `check` (bounded) until it returns something truthy; the failure says what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}")
        time.sleep(0.25)
