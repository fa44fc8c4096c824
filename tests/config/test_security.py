"""The security baseline: deploy checks, session rotation and staff timeouts, cookie flags, CSP and HSTS,
sign-in throttling, and user text that stays inert in pages, the admin and CSV exports."""

from __future__ import annotations

import csv
import io
import secrets
import threading
import time

import pytest
from django.conf import settings
from django.contrib.sessions.backends.cached_db import SessionStore
from django.test import Client
from django.urls import reverse

from classrooms import services
from classrooms.auth import _throttle_keys, count_failure
from config.security import LOGIN_AT, SEEN_AT
from tests import factories
from tests.config.test_settings import FERNET_KEY, run_django

PRODUCTION = {"AULA_ENV": "production", "DJANGO_SECRET_KEY": secrets.token_urlsafe(60), "AULA_SECRET_KEYS": FERNET_KEY,
              "DJANGO_ALLOWED_HOSTS": "aula.example", "AULA_WS_ALLOWED_ORIGINS": "https://aula.example"}


# --- deploy checks ------------------------------------------------------------------------------------------

def test_check_deploy_with_production_settings_reports_nothing():
    result = run_django(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)" in result.stdout


_HEADERS = """
from django.test import Client, override_settings
from django.conf import settings
# No collectstatic in the test run: plain static storage instead of the manifest (headers are the point).
storages = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
with override_settings(STORAGES=storages):
    r = Client().get("/accounts/login/", secure=True, HTTP_HOST="aula.example")
print("STATUS", r.status_code)
for name in ("Strict-Transport-Security", "Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
             "X-Frame-Options", "Cross-Origin-Opener-Policy"):
    print("H", name, "=", r.get(name))
for name in ("SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SECURE",
             "SECURE_SSL_REDIRECT"):
    print("S", name, "=", getattr(settings, name))
print("COOKIE", r.cookies["csrftoken"].output())
"""


def test_production_responses_carry_hsts_csp_and_secure_cookies():
    result = run_django(PRODUCTION, "shell", "-c", _HEADERS)
    out = result.stdout
    assert "STATUS 200" in out, out + result.stderr
    assert "H Strict-Transport-Security = max-age=31536000; includeSubDomains; preload" in out
    csp = next(line for line in out.splitlines() if line.startswith("H Content-Security-Policy"))
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "connect-src 'self' wss://aula.example" in csp and "unsafe-inline" not in csp
    for line in ("H X-Content-Type-Options = nosniff", "H X-Frame-Options = DENY", "H Referrer-Policy = same-origin",
                 "S SESSION_COOKIE_SECURE = True", "S SESSION_COOKIE_HTTPONLY = True",
                 "S SESSION_COOKIE_SAMESITE = Lax", "S CSRF_COOKIE_SECURE = True", "S SECURE_SSL_REDIRECT = True"):
        assert line in out, line
    cookie = next(line for line in out.splitlines() if line.startswith("COOKIE"))
    assert "Secure" in cookie and "SameSite=Lax" in cookie


def test_websocket_checks_flag_insecure_origins_old_daphne_and_unbounded_frames(settings, monkeypatch):
    from config import checks

    settings.AULA_WS_ALLOWED_ORIGINS = ["https://aula.example"]
    assert checks.websocket_security() == []

    settings.AULA_WS_ALLOWED_ORIGINS = ["http://aula.example", "https://aula.example/app", "https://*.example"]
    assert [i.id for i in checks.websocket_security()] == ["aula.E002"] * 3
    settings.AULA_WS_ALLOWED_ORIGINS = []
    assert "aula.E001" in {i.id for i in checks.websocket_security()}
    settings.AULA_WS_ALLOWED_ORIGINS = ["https://aula.example"]

    monkeypatch.setattr(checks, "version", lambda name: "4.2.1" if name == "daphne" else "9")
    assert [i.id for i in checks.websocket_security()] == ["aula.E003"]
    monkeypatch.setattr(checks, "version", lambda name: "4.2.2")
    assert checks.websocket_security() == []

    settings.AULA_WS_SERVER_MAX_BYTES = 64 * 1024 * 1024
    assert "aula.W001" in {i.id for i in checks.websocket_security()}
    settings.AULA_WS_SERVER_MAX_BYTES = 1024
    settings.AULA_WS_MAX_MESSAGE_BYTES = 65536
    assert "aula.W002" in {i.id for i in checks.websocket_security()}


def test_operations_guide_documents_wss_and_a_tls_terminator():
    from tests.conftest import ROOT

    guide = (ROOT / "docs" / "operations.md").read_text()
    assert "wss://" in guide and "proxy_set_header Upgrade" in guide and "reverse_proxy" in guide


# --- sessions ------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_session_key_changes_at_sign_in(world):
    client = Client()
    before = client.session
    before["planted"] = "by an attacker"
    before.save()
    planted_key = before.session_key
    client.cookies[settings.SESSION_COOKIE_NAME] = planted_key
    response = client.post(reverse("login"), {"username": world.student_a.email, "password": factories.PASSWORD})
    assert response.status_code == 302
    new_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != planted_key
    assert not SessionStore().exists(planted_key)  # the old id is worthless
    assert client.get(reverse("home")).status_code == 200


def _age_session(client, **seconds_ago) -> None:
    session = client.session
    now = time.time()
    for key, ago in seconds_ago.items():
        session[key] = now - ago
    session.save()


@pytest.mark.django_db
def test_staff_are_signed_out_after_the_idle_timeout(world):
    client = Client()
    client.post(reverse("login"), {"username": world.staff_a.email, "password": factories.PASSWORD})
    assert client.session[LOGIN_AT] and client.session[SEEN_AT]
    assert client.get(reverse("admin:index")).status_code == 200
    _age_session(client, **{SEEN_AT: settings.AULA_STAFF_IDLE_SECONDS - 30})
    assert client.get(reverse("admin:index")).status_code == 200  # still within the idle period
    _age_session(client, **{SEEN_AT: settings.AULA_STAFF_IDLE_SECONDS + 5})
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("admin:index")).status_code == 302  # stays signed out


@pytest.mark.django_db
def test_staff_are_signed_out_after_the_absolute_timeout_even_when_active(world):
    client = Client()
    client.post(reverse("login"), {"username": world.staff_a.email, "password": factories.PASSWORD})
    _age_session(client, **{LOGIN_AT: settings.AULA_STAFF_MAX_SESSION_SECONDS + 5, SEEN_AT: 1})
    response = client.get(reverse("home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_students_keep_the_ordinary_session_age(world):
    client = Client()
    client.post(reverse("login"), {"username": world.student_a.email, "password": factories.PASSWORD})
    _age_session(client, **{LOGIN_AT: settings.AULA_STAFF_MAX_SESSION_SECONDS + 5,
                            SEEN_AT: settings.AULA_STAFF_IDLE_SECONDS + 5})
    assert client.get(reverse("home")).status_code == 200


@pytest.mark.django_db
def test_pages_carry_the_content_security_policy():
    response = Client().get(reverse("login"))
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "connect-src 'self' ws://localhost:8000 ws://127.0.0.1:8000" in csp


# --- sign-in throttling -----------------------------------------------------------------------------------------

def _sign_in(client, username, password, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


@pytest.mark.django_db
def test_sign_in_is_throttled_per_account(world, settings):
    settings.AULA_LOGIN_FAILURES_PER_ACCOUNT = 3
    client = Client()
    for _ in range(3):
        assert _sign_in(client, world.student_a.email, "wrong-password").status_code == 200
    refused = _sign_in(client, world.student_a.email, factories.PASSWORD)  # even the right password
    assert refused.status_code == 429 and int(refused["Retry-After"]) == settings.AULA_LOGIN_WINDOW_SECONDS
    assert "Too many sign-in attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    # The same account by its username is the same account; another account is not affected.
    assert _sign_in(Client(REMOTE_ADDR="10.0.0.9"), "STUDENT_A", factories.PASSWORD).status_code == 429
    assert _sign_in(client, world.teacher_a.email, factories.PASSWORD).status_code == 302


@pytest.mark.django_db
def test_sign_in_is_throttled_per_address_across_accounts(world, settings):
    settings.AULA_LOGIN_FAILURES_PER_IP = 4
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for i in range(4):
        assert _sign_in(attacker, f"nobody{i}@example.test", "guess").status_code == 200
    assert _sign_in(attacker, world.student_a.email, factories.PASSWORD).status_code == 429
    assert _sign_in(Client(REMOTE_ADDR="198.51.100.1"), world.student_a.email, factories.PASSWORD).status_code == 302


@pytest.mark.django_db
def test_the_admin_sign_in_shares_the_limits(world, settings):
    settings.AULA_LOGIN_FAILURES_PER_ACCOUNT = 2
    client = Client()
    for _ in range(2):
        client.post(reverse("admin:login"), {"username": world.staff_a.email, "password": "nope"})
    response = client.post(reverse("admin:login"), {"username": world.staff_a.email, "password": factories.PASSWORD})
    assert response.status_code == 200 and "Too many sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_failure_counters_are_atomic_under_concurrency():
    from django.core.cache import cache

    key = "login-fail:test:racer"
    threads = [threading.Thread(target=lambda: [count_failure(key) for _ in range(10)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get(key) == 80


@pytest.mark.django_db
def test_no_account_name_becomes_a_cache_key(world):
    from django.test import RequestFactory

    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="192.0.2.1")
    by_email = _throttle_keys(request, world.student_a.email)[0][0]
    assert by_email == _throttle_keys(request, "Student_A")[0][0] == f"login-fail:acct:u{world.student_a.pk}"
    unknown = _throttle_keys(request, "someone@example.test")[0][0]
    assert "someone" not in unknown and "example" not in unknown


# --- injection stays inert ---------------------------------------------------------------------------------------

HOSTILE = '=HYPERLINK("x")<script>alert("pwned")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def hostile_student(world):
    from classrooms.models import User

    student = factories.user("mallory", age=14)
    services.user_upsert(email=student.email, first_name="M", display_name=HOSTILE,
                         date_of_birth=student.date_of_birth)
    factories.enroll(world.course_a, student)
    services.session_start(session=world.session_a, actor=world.teacher_a)
    services.chat_message_post(session=world.session_a, author=student, body=HOSTILE)
    services.session_end(session=world.session_a, actor=world.teacher_a)
    now = time.time()
    services.attendance_interval_record(session_id=world.session_a.pk, user_id=student.pk, conn_id="c-mal",
                                        joined_at=now - 100, left_at=now)
    services.attendance_compute(session=world.session_a)
    return User.objects.get(pk=student.pk)


def _inert(html: str) -> None:
    assert "<script>alert(" not in html and "<img src=x onerror" not in html
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html


@pytest.mark.django_db
def test_a_hostile_display_name_is_inert_in_a_page(client, world, hostile_student):
    client.force_login(world.teacher_a)
    _inert(client.get(reverse("session-attendance", args=[world.session_a.pk])).content.decode())
    client.force_login(hostile_student)  # their own name in the page header
    _inert(client.get(reverse("home")).content.decode())


@pytest.mark.django_db
def test_a_hostile_display_name_is_inert_in_the_admin(client, world, hostile_student):
    client.force_login(world.staff_a)
    changelist = client.get(reverse("admin:classrooms_user_changelist"), {"q": "mallory"}).content.decode()
    _inert(changelist)
    change = client.get(reverse("admin:classrooms_user_change", args=[hostile_student.pk])).content.decode()
    assert "<script>alert(" not in change and "&lt;script&gt;" in change
    enrollments = client.get(reverse("admin:classrooms_enrollment_changelist")).content.decode()
    _inert(enrollments)


@pytest.mark.django_db
def test_a_hostile_display_name_is_inert_in_a_csv_export(client, world, hostile_student):
    client.force_login(world.teacher_a)
    response = client.get(reverse("session-attendance-csv", args=[world.session_a.pk]))
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    cell = next(row[0] for row in rows[1:] if row[1] == "mallory")
    assert cell == "'" + HOSTILE  # a quote in front: the spreadsheet shows text, never runs a formula
    assert response["Cache-Control"] == "no-store"


def test_every_csv_export_goes_through_the_one_helper():
    """No module writes CSV with the csv module directly except config/exports.py."""
    from tests.conftest import ROOT

    offenders = []
    for path in ROOT.glob("**/*.py"):
        rel = path.relative_to(ROOT).as_posix()
        # moderation/data/ holds the classifier's training-set generator: it writes the project's own data file.
        if rel.startswith((".venv/", ".tools/", "tests/", "benchmarks/", "moderation/data/")) or \
                rel == "config/exports.py":
            continue
        text = path.read_text()
        if "csv.writer(" in text or "csv.DictWriter(" in text or "text/csv" in text:
            offenders.append(rel)
    assert offenders == []


@pytest.mark.django_db(transaction=True)
async def test_the_staff_timeout_also_holds_on_the_async_request_path(world):
    """Under ASGI the middleware chain runs async: the same rule, checked in the worker thread pool."""
    from channels.db import database_sync_to_async
    from django.test import AsyncClient

    client = AsyncClient()
    await database_sync_to_async(client.force_login)(world.staff_a)

    def age():
        session = SessionStore(client.cookies[settings.SESSION_COOKIE_NAME].value)
        session[LOGIN_AT] = time.time()
        session[SEEN_AT] = time.time() - settings.AULA_STAFF_IDLE_SECONDS - 5
        session.save()

    assert (await client.get(reverse("home"))).status_code == 200
    await database_sync_to_async(age)()
    response = await client.get(reverse("home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
