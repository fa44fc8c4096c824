"""The analytics flusher dies (SIGKILL) and stays down for 5 minutes while events keep coming at a steady,
bounded rate: nothing is lost up to the buffer bound, and once a worker is back the backlog is flushed once —
rollup totals equal the events produced. With a small bound, stored + overflow == produced, exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from analytics import buffer, selectors
from analytics.models import Rollup

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
OUTAGE = 300.0  # seconds: the five minutes
RATE = 200  # events per second during the outage


def start_worker(tmp_path: Path, name: str, extra_env: dict | None = None) -> subprocess.Popen:
    db = connection.settings_dict
    env = {**os.environ, "AULA_ENV": "test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "AULA_ANALYTICS_CLAIM_IDLE_SECONDS": "2", **(extra_env or {})}
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "analytics", "-P", "solo",
                             "-n", f"{name}@%h", "-l", "INFO"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def beat_ticks(stop: threading.Event) -> None:
    """Stands in for beat: queue a flush every AULA_ANALYTICS_FLUSH_SECONDS (no worker: they wait)."""
    from analytics import tasks

    while not stop.wait(settings.AULA_ANALYTICS_FLUSH_SECONDS):
        tasks.flush.apply_async(expires=settings.AULA_ANALYTICS_FLUSH_SECONDS * 5)


def produce(seconds: float, rate: int, stop: threading.Event, counter: list[int]) -> None:
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds and not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        for _ in range(due - sent):
            buffer.record("reaction", scope="stream", scope_id=9, n=1, country="FR", segment="member", emoji="fire")
        counter[0] += due - sent
        sent = due
        time.sleep(0.01)
    buffer.flush_now()


def rollup_total() -> int:
    window = min(settings.AULA_ANALYTICS_WINDOWS)
    return Rollup.objects.filter(window_seconds=window, scope_id=9).aggregate(n=Sum("count"))["n"] or 0


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


def run_outage(tmp_path: Path, outage: float) -> tuple[int, int]:
    worker = start_worker(tmp_path, "flusher-1")
    stop, produced = threading.Event(), [0]
    ticker = threading.Thread(target=beat_ticks, args=(stop,), daemon=True)
    ticker.start()
    try:
        produce(5, RATE, stop, produced)  # the worker flushes while it lives
        assert wait_for(lambda: rollup_total() == produced[0], 60), "the live worker did not flush"
        os.killpg(worker.pid, signal.SIGKILL)  # mid-stream: possibly between a commit and its XACK
        worker.wait(10)
        produce(outage, RATE, stop, produced)
        lag = selectors.flush_lag()
        assert lag > outage * 0.8  # the outage is visible as flush lag
        worker = start_worker(tmp_path, "flusher-2")
        overflow = sum(selectors.overflow_counts().values())
        assert wait_for(lambda: rollup_total() + overflow == produced[0], 180), (rollup_total(), overflow,
                                                                                produced[0])
        time.sleep(2 * settings.AULA_ANALYTICS_FLUSH_SECONDS + 2)  # later flushes (and re-claims) add nothing
        assert rollup_total() + overflow == produced[0]
        return produced[0], overflow
    finally:
        stop.set()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


@pytest.mark.timeout(600)
def test_a_five_minute_flusher_outage_loses_nothing_within_the_bound(tmp_path):
    produced, overflow = run_outage(tmp_path, OUTAGE)
    assert overflow == 0 and produced >= RATE * OUTAGE * 0.9
    assert rollup_total() == produced


def test_past_a_small_bound_overflow_is_counted_exactly(tmp_path, settings):
    settings.AULA_ANALYTICS_BUFFER_MAX = 5000  # ~25 s of the outage's rate: the rest is overflow
    produced, overflow = run_outage(tmp_path, 40.0)  # the bound is what matters here, not the five minutes
    assert overflow > 0
    assert rollup_total() + overflow == produced
