"""Celery wiring: queues, the beat schedule, actor propagation, and a real worker process."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import types

import pytest
from django.conf import settings
from django.utils import timezone

from tests.conftest import ROOT


def test_every_periodic_job_names_its_queue_and_expiry():
    from config.celery import app

    app.loader.import_default_modules()
    queues = {q.name for q in settings.CELERY_TASK_QUEUES}
    assert {"deadlines", "default", "bulk"} <= queues
    for name, job in settings.CELERY_BEAT_SCHEDULE.items():
        assert job["task"] in app.tasks, name
        assert job["options"]["queue"] in queues, name
        assert job["options"]["expires"] > 0, name


@pytest.mark.django_db
def test_actor_travels_from_request_context_to_task(world):
    from auditlog.context import auditlog_value, set_actor

    from config import celery as celery_wiring
    from config.observability import request_id_var

    headers: dict = {}
    token = request_id_var.set("req-7")
    try:
        with set_actor(world.staff_a):
            celery_wiring._propagate_context(headers=headers)
    finally:
        request_id_var.reset(token)
    assert headers == {"aula_actor_id": world.staff_a.pk, "aula_request_id": "req-7"}

    request = types.SimpleNamespace(aula_actor_id=world.staff_a.pk, aula_request_id="req-7")
    task = types.SimpleNamespace(request=request)
    celery_wiring._enter_context(task_id="t1", task=task)
    try:
        assert auditlog_value.get()["actor"] == world.staff_a
        assert request_id_var.get() == "req-7"
    finally:
        celery_wiring._exit_context(task_id="t1")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_queued_tasks():
    from django.contrib.sessions.models import Session
    from django.db import connection

    from classrooms.tasks import sessions_purge

    Session.objects.create(session_key="x" * 32, session_data="", expire_date=timezone.now() - dt.timedelta(days=1))
    Session.objects.create(session_key="y" * 32, session_data="", expire_date=timezone.now() + dt.timedelta(days=1))
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "deadlines,default,bulk,analytics",
         "--pool", "solo", "-l", "WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    try:
        sessions_purge.delay()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Session.objects.filter(session_key="x" * 32).exists():
            time.sleep(0.2)
        assert not Session.objects.filter(session_key="x" * 32).exists()
        assert Session.objects.filter(session_key="y" * 32).exists()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
