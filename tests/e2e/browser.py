"""Playwright on Debian's Chromium (no browser download), shared by page tests."""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

CHROMIUM = os.environ.get("AULA_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def require_chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    return path


def db(fn, *args, **kwargs):
    """Run an ORM call outside Playwright's event loop (Django refuses sync queries inside one)."""
    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    path = require_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def sign_in(page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email or username").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


class SessionPage:
    """One signed-in browser context on a live session's page (the board and notes tests' participants).
    Page errors are collected in `errors`; a subclass waits for what it needs once the page is open."""

    def __init__(self, b, server, user, session, *, wait_ms: int = 15000, **context_args):
        from tests import factories

        self.user = user
        self.context = b.new_context(**context_args)
        self.page = self.context.new_page()
        self.page.set_default_timeout(wait_ms)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        sign_in(self.page, server.origin, user.email, factories.PASSWORD)
        self.page.goto(f"{server.origin}/sessions/{session.pk}/")

    def tid(self, test_id: str):
        return self.page.get_by_test_id(test_id)
