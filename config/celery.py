"""The Celery app. Queues and the beat schedule are in settings (CELERY_TASK_QUEUES, CELERY_BEAT_SCHEDULE).

The auditlog actor and the request id travel with a task in its headers, so a change made by a task
queued from a request is attributed to the user who caused it.
"""

from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("aula")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_ACTOR_HEADER = "aula_actor_id"
_REQUEST_HEADER = "aula_request_id"


@signals.before_task_publish.connect
def _propagate_context(headers=None, **_):
    from auditlog.context import auditlog_value

    from config.observability import request_id_var

    if headers is None:
        return
    try:
        actor = auditlog_value.get().get("actor")
    except LookupError:
        actor = None
    if actor is not None and getattr(actor, "pk", None):
        headers[_ACTOR_HEADER] = actor.pk
    headers[_REQUEST_HEADER] = request_id_var.get()


_task_contexts: dict[str, object] = {}


@signals.task_prerun.connect
def _enter_context(task_id=None, task=None, **_):
    from auditlog.context import set_actor

    from config.observability import request_id_var, user_id_var

    request = task.request
    # Custom publish headers surface as attributes of the task request (message protocol 2).
    actor_id = getattr(request, _ACTOR_HEADER, None)
    request_id_var.set(str(getattr(request, _REQUEST_HEADER, None) or task_id))
    actor = None
    if actor_id:
        from classrooms.models import User

        actor = User.objects.filter(pk=actor_id).first()
        user_id_var.set(str(actor_id))
    cm = set_actor(actor)
    cm.__enter__()
    _task_contexts[task_id] = cm


@signals.task_postrun.connect
def _exit_context(task_id=None, **_):
    cm = _task_contexts.pop(task_id, None)
    if cm is not None:
        cm.__exit__(None, None, None)
