"""Request ids and user ids carried through logs for HTTP, WebSocket and Celery paths.

Only ids go into log records: never names, emails, message bodies or tokens.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("aula_request_id", default="-")
user_id_var: ContextVar[str] = ContextVar("aula_user_id", default="-")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def new_request_id(incoming: str | None = None) -> str:
    """Accept a caller's X-Request-ID only if it is a short safe token (it lands in logs)."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.user_id = user_id_var.get()
        return True


class RequestContextMiddleware:
    """Sets the request id for the request's logs and echoes it in the X-Request-ID header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        rid = new_request_id(request.headers.get("X-Request-ID"))
        request.request_id = rid
        token = request_id_var.set(rid)
        user_token = user_id_var.set("-")
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
            user_id_var.reset(user_token)
        response["X-Request-ID"] = rid
        return response


class UserContextMiddleware:
    """After authentication: the user id (never the name) joins the log context."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            user_id_var.set(str(user.pk))
        return self.get_response(request)
