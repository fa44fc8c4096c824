"""HTTP security middleware: the Content Security Policy header, and idle and absolute session timeouts
for staff (the people who can open the admin)."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.signals import user_logged_in
from django.contrib.auth.views import redirect_to_login

from config.observability import _DualMiddleware

logger = logging.getLogger("aula.security")

LOGIN_AT = "_aula_login_at"
SEEN_AT = "_aula_seen_at"
_SEEN_RESOLUTION = 60  # seconds: "last seen" is written at most once a minute (one session save, not one per hit)


class ContentSecurityPolicyMiddleware(_DualMiddleware):
    """Adds settings.AULA_CSP to every response that does not set its own policy."""

    def _apply(self, response):
        header = "Content-Security-Policy-Report-Only" if settings.AULA_CSP_REPORT_ONLY else "Content-Security-Policy"
        if "Content-Security-Policy" not in response and "Content-Security-Policy-Report-Only" not in response:
            response[header] = settings.AULA_CSP
        return response

    def call(self, request):
        return self._apply(self.get_response(request))

    async def __acall__(self, request):
        return self._apply(await self.get_response(request))


def _stamp_login(sender, request, user, **kwargs) -> None:
    # Django has already given the session a new key (login() cycles it): start both clocks.
    now = time.time()
    request.session[LOGIN_AT] = now
    request.session[SEEN_AT] = now


user_logged_in.connect(_stamp_login, dispatch_uid="aula-stamp-login")


def session_timeout_reason(request, now: float | None = None) -> str | None:
    """Sync: "idle" or "absolute" when a staff member's session has run out (and sign them out), else None."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_staff:
        return None
    now = time.time() if now is None else now
    session = request.session
    login_at, seen_at = session.get(LOGIN_AT), session.get(SEEN_AT)
    if login_at is None:  # signed in before this rule existed, or by another path: the clocks start now
        session[LOGIN_AT] = session[SEEN_AT] = now
        return None
    if now - login_at > settings.AULA_STAFF_MAX_SESSION_SECONDS:
        reason = "absolute"
    elif seen_at is not None and now - seen_at > settings.AULA_STAFF_IDLE_SECONDS:
        reason = "idle"
    else:
        if seen_at is None or now - seen_at >= _SEEN_RESOLUTION:
            session[SEEN_AT] = now
        return None
    logger.info("staff session ended reason=%s user=%s", reason, user.pk)
    logout(request)  # flushes the session: its sockets are closed by their next re-check
    return reason


_TIMEOUT_TEXT = {
    "idle": "You were signed out after a period of inactivity. Please sign in again.",
    "absolute": "Your session reached its maximum length. Please sign in again.",
}


def _expired_response(request, reason: str):
    if request.path.startswith("/api/"):
        from config.api import json_error

        return json_error("session_expired", _TIMEOUT_TEXT[reason], 401)
    messages.info(request, _TIMEOUT_TEXT[reason])
    return redirect_to_login(request.get_full_path())


class StaffSessionTimeoutMiddleware(_DualMiddleware):
    """Idle (AULA_STAFF_IDLE_SECONDS) and absolute (AULA_STAFF_MAX_SESSION_SECONDS) timeouts for staff.

    Students and teachers keep the ordinary session age: a teacher in a two-hour class sends no requests."""

    def call(self, request):
        reason = session_timeout_reason(request)
        if reason is not None:
            return _expired_response(request, reason)
        return self.get_response(request)

    async def __acall__(self, request):
        user = getattr(request, "user", None)
        # Only staff pay the thread hop (the session is already loaded by UserContextMiddleware).
        if user is not None and user.is_authenticated and user.is_staff:
            from config.realtime.transport import db_call

            reason = await db_call(session_timeout_reason)(request)
            if reason is not None:
                return _expired_response(request, reason)
        return await self.get_response(request)
