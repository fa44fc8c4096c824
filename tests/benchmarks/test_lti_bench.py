"""The LTI benchmark (benchmarks/lti.py) run whole at a minimal size, so that it cannot rot: its own PostgreSQL,
Redis, uvicorn and Celery processes and the mock LMS, every phase. What it checks is what the benchmark itself
must get right: every launch lands, the token-cache switch really reaches the Celery workers (a token per score
without the cache), and every score arrives at the LMS exactly once, also when the LMS answers 500s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.lti import storm_figures

ROOT = Path(__file__).resolve().parent.parent.parent


def test_storm_figures_count_errors_apart_and_time_only_the_successes():
    results = [{"steps": {"a": 0.1}, "total": 0.1, "done_at": 11.0},
               {"steps": {"a": 0.3}, "total": 0.3, "done_at": 12.5},
               {"error": "launch:403", "steps": {}, "total": 5.0, "done_at": 13.0}]
    got = storm_figures(results, start_at=10.0)
    assert (got["requests"], got["succeeded"], got["errors"]) == (3, 2, {"launch:403": 1})
    assert got["latency_ms"]["max"] == 300.0 and got["steps_ms"]["a"]["n"] == 2
    assert got["all_done_s"] == 3.0


def test_the_lti_benchmark_runs_end_to_end_at_minimal_size(tmp_path):
    out = tmp_path / "lti.json"
    # Its own throwaway PostgreSQL and Redis (the test run's are for the tests), and no xdist worker number.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PYTEST_XDIST_WORKER")}
    env["AULA_LMS_GRADE_BACKOFF_SECONDS"] = "2"  # the injected 500's retry comes after 2 s, not 30
    proc = subprocess.run([sys.executable, "-m", "benchmarks.lti", "--students", "3", "--scores", "20", "--env",
                           "test", "--procs", "1", "--timeout", "60", "--grade-timeout", "240", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(out.read_text())

    for phase in ("password_baseline", "lti_first_launch", "lti_returning"):
        assert summary[phase]["succeeded"] == 3 and not summary[phase]["errors"], summary[phase]
    assert summary["lti_first_launch"]["lms_auth_requests"] == 3
    # The first launches made the accounts; the returning ones reused them.
    assert summary["lti_accounts"] == {"identities": 3, "class_enrollments": 3, "launch_rows": 6}
    assert summary["lti_first_launch"]["roster_syncs"] >= 1

    cached, off = summary["grades_cached"], summary["grades_token_cache_off"]
    assert cached["every_score_once"] and cached["delivered"] == 20
    assert 1 <= cached["token_requests"] <= 2  # one per worker slot that missed the cache at once, at most
    assert off["every_score_once"] and off["token_requests"] == 20  # the import hook reached the workers

    failing = summary["grades_with_failures"]
    assert failing["lms_injected_500s"] == 1 and failing["lms_score_posts"] == 21
    assert failing["every_score_once"] and failing["lms_scores_stored"] == 20
    assert summary["lms_server_errors"] == []
