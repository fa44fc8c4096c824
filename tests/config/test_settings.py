"""Start-up configuration: bad values stop start-up with a message naming the variable; production is clean."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ROOT


def run_django(env_changes: dict[str, str | None], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AULA_", "DJANGO_"))}
    env.pop("PYTEST_XDIST_WORKER", None)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    cmd = [sys.executable, "manage.py", *args] if args else \
        [sys.executable, "-c", "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings'); django.setup()"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


FERNET_KEY = Fernet.generate_key().decode()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"AULA_ENV": "staging"}, "AULA_ENV='staging' is not one of"),
        ({"AULA_WS_MAX_MESSAGE_BYTES": "lots"}, "AULA_WS_MAX_MESSAGE_BYTES='lots' is not a whole number"),
        ({"AULA_WS_MAX_MESSAGE_BYTES": "10"}, "AULA_WS_MAX_MESSAGE_BYTES=10 is below the minimum"),
        ({"DATABASE_URL": "mysql://root@localhost/aula"}, "DATABASE_URL must be a postgres"),
        ({"AULA_ENV": "production", "DATABASE_URL": None, "DJANGO_SECRET_KEY": "k" * 60,
          "DJANGO_ALLOWED_HOSTS": "aula.example", "AULA_WS_ALLOWED_ORIGINS": "https://aula.example"},
         "DATABASE_URL is not set"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL must be a redis"),
        ({"AULA_REALTIME_REDIS_URLS": "redis://rt-a:6379/1,http://rt-b:6379"}, "AULA_REALTIME_REDIS_URLS must be a redis"),
        ({"AULA_REALTIME_REDIS_URLS": "redis://rt-a:6379/1,redis://rt-a:6379/1"}, "lists the same URL twice"),
        ({"AULA_WS_ALLOWED_ORIGINS": "https://*.example.com"}, "is not an exact origin"),
        ({"AULA_WS_ALLOWED_ORIGINS": "https://example.com/path"}, "is not an exact origin"),
        ({"AULA_LOG_LEVEL": "LOUD"}, "AULA_LOG_LEVEL='LOUD' is not one of"),
        ({"AULA_ENV": "production"}, "DJANGO_SECRET_KEY must be set"),
        ({"AULA_ENV": "production", "DJANGO_SECRET_KEY": secrets.token_urlsafe(60), "AULA_SECRET_KEYS": FERNET_KEY,
          "DJANGO_ALLOWED_HOSTS": "aula.example", "AULA_WS_ALLOWED_ORIGINS": "http://aula.example"},
         "must be https:// in production"),
        ({"AULA_ENV": "production", "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
          "DJANGO_ALLOWED_HOSTS": "aula.example", "AULA_WS_ALLOWED_ORIGINS": "https://aula.example"},
         "AULA_SECRET_KEYS must be set in production"),
    ],
)
def test_bad_configuration_stops_startup_with_a_clear_message(changes, needle):
    result = run_django(changes)
    assert result.returncode != 0
    assert needle in result.stderr
    # The message names the problem; it never echoes a connection string with credentials.
    assert "Traceback" in result.stderr or "ImproperlyConfigured" in result.stderr


def test_production_profile_passes_check_deploy():
    result = run_django(
        {"AULA_ENV": "production", "DJANGO_SECRET_KEY": secrets.token_urlsafe(60), "AULA_SECRET_KEYS": FERNET_KEY,
         "DJANGO_ALLOWED_HOSTS": "aula.example", "AULA_WS_ALLOWED_ORIGINS": "https://aula.example"},
        "check", "--deploy", "--fail-level", "WARNING",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_deploy_check_flags_an_insecure_websocket_origin(settings):
    from config.checks import websocket_security

    settings.AULA_WS_ALLOWED_ORIGINS = ["http://aula.example", "https://*.example"]
    ids = {issue.id for issue in websocket_security()}
    assert "aula.E002" in ids
    settings.AULA_WS_ALLOWED_ORIGINS = ["https://aula.example"]
    assert websocket_security() == []


def test_migrations_are_complete():
    result = run_django({}, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
