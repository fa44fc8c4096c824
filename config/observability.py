"""Request ids and user ids carried through logs for HTTP, WebSocket and Celery paths.

Only ids go into log records: never names, emails, message bodies or tokens.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

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


class _DualMiddleware:
    """Sync and async capable: config.http.ThreadedASGIHandler runs the sync chain in a pool thread for
    sync views and Django's async chain for async views (one sync-only middleware would put the async
    chain back on Django's one sync thread per process)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return self.call(request)

    def call(self, request):
        raise NotImplementedError

    async def __acall__(self, request):
        raise NotImplementedError


class RequestContextMiddleware(_DualMiddleware):
    """Sets the request id for the request's logs and echoes it in the X-Request-ID header."""

    def _enter(self, request):
        rid = new_request_id(request.headers.get("X-Request-ID"))
        request.request_id = rid
        return rid, request_id_var.set(rid), user_id_var.set("-")

    @staticmethod
    def _leave(tokens) -> None:
        request_id_var.reset(tokens[1])
        user_id_var.reset(tokens[2])

    def call(self, request):
        tokens = self._enter(request)
        try:
            response = self.get_response(request)
        finally:
            self._leave(tokens)
        response["X-Request-ID"] = tokens[0]
        return response

    async def __acall__(self, request):
        tokens = self._enter(request)
        try:
            response = await self.get_response(request)
        finally:
            self._leave(tokens)
        response["X-Request-ID"] = tokens[0]
        return response


def _resolve_user(request):
    from django.contrib.auth import get_user

    return get_user(request)


class UserContextMiddleware(_DualMiddleware):
    """After authentication: the user id (never the name) joins the log context.

    Under ASGI the user is loaded here, once, in the worker thread pool (session + user row), and set on the
    request as a plain object: later middleware (the audit actor) and views read it without database work
    on Django's shared sync thread."""

    def call(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            user_id_var.set(str(user.pk))
        return self.get_response(request)

    async def __acall__(self, request):
        from config.realtime.transport import db_call

        if hasattr(request, "session"):
            user = await db_call(_resolve_user)(request)
            request.user = request._cached_user = request._acached_user = user
            if user.is_authenticated:
                user_id_var.set(str(user.pk))
        return await self.get_response(request)
