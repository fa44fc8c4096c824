"""Shared fixtures. Tests run against the real PostgreSQL and Redis that `make test` provides."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from config.devservers import free_port
from tests import factories

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_redis():
    """Each test starts with empty Aula Redis databases of this xdist worker."""
    for url in {settings.REDIS_CACHE_URL, settings.REDIS_REALTIME_URL, settings.REDIS_BROKER_URL, settings.REDIS_ANALYTICS_URL}:
        redis.Redis.from_url(url).flushdb()
    yield


@pytest.fixture(scope="session", autouse=True)
def _classifier_loaded():
    """The moderation classifier loaded once per test process (a server loads it in the background and
    screens with patterns only meanwhile; tests want its verdicts from the first message)."""
    from moderation import pipeline

    pipeline._load()
    yield


@pytest.fixture(autouse=True)
def _moderation_caches():
    """Pattern lists and policies are cached per process for a few seconds: each test starts fresh, with
    the classifier's circuit breaker closed."""
    from moderation import patterns, pipeline, selectors

    patterns.forget_cache()
    selectors.forget_policies()
    pipeline.breaker.close()
    yield


@pytest.fixture
def world(db):
    return factories.World()


def wait_http(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("server did not become healthy")


class ServerProcess:
    """A real ASGI server process (uvicorn or daphne) on a free port, using the test database."""

    def __init__(self, kind: str = "uvicorn", workers: int = 1, extra_env: dict | None = None):
        from django.db import connection

        self.kind = kind
        self.port = free_port()
        db = connection.settings_dict
        env = {**os.environ,
               "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               "AULA_WS_ALLOWED_ORIGINS": f"http://127.0.0.1:{self.port},http://localhost:{self.port}",
               "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
               "AULA_SOCKET_RECHECK_SECONDS": "2",
               **(extra_env or {})}
        if kind == "uvicorn":
            from config.devservers import uvicorn_tuning_args

            argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", str(workers), *uvicorn_tuning_args()]
        else:
            argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
        try:
            wait_http(self.port, self.proc)
            time.sleep(0.2)
            if self.proc.poll() is not None:  # it lost the port: whatever answered is not ours
                raise RuntimeError(f"server on port {self.port} exited with {self.proc.returncode}")
        except Exception:
            self.stop()
            raise

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def kill(self) -> None:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_factory(transactional_db):
    started: list[ServerProcess] = []

    def make(**kwargs) -> ServerProcess:
        s = ServerProcess(**kwargs)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def login_cookie(client_or_user, password: str = factories.PASSWORD) -> str:
    """A real session cookie for a user (via Django's login), for sockets and browsers."""
    from django.test import Client

    c = Client()
    assert c.login(username=client_or_user.email, password=password)
    return c.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup, django_db_blocker):
    """Connections opened in worker threads (database_sync_to_async) outlive the tests; end them so the
    test database can be dropped cleanly."""
    yield
    with django_db_blocker.unblock():
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
