"""HTTP under ASGI without the one-thread-per-process queue: each request is served in one pool thread.

Under an ASGI server Django runs the middleware chain in async mode: every `MiddlewareMixin` middleware
(session, CSRF, auth, messages, security...) hops to Django's ONE sync thread per process for each
`process_request` / `process_response`, and every synchronous view runs on that same thread. A burst of
requests is then served one hop at a time (measured: a start stampede of 2,000 students taking 15–30 s,
and still 16–22 s with the views alone moved to a pool). `ThreadedASGIHandler` serves a request to a
synchronous view the way a threaded WSGI server does: the whole sync middleware chain and the view run in
one thread of the HTTP pool (`AULA_HTTP_THREADS`), one hop per request, each thread with its own database
connection, `request_started` / `request_finished` (Django's connection housekeeping) on that thread too.
Async views (the readiness probe) keep Django's async chain.
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from auditlog.cid import set_cid
from auditlog.context import set_extra_data
from auditlog.middleware import AuditlogMiddleware
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import Resolver404, get_resolver, set_script_prefix
from whitenoise.middleware import WhiteNoiseMiddleware

from config.realtime.transport import process_pool


def http_executor() -> ThreadPoolExecutor:
    """The process's pool for HTTP requests (AULA_HTTP_THREADS threads, one database connection each);
    separate from the sockets' pool, so a page burst never queues socket saves behind it."""
    return process_pool("aula-http", settings.AULA_HTTP_THREADS)


async def _pulled_in_pool(iterator):
    """A sync streaming body (a CSV export) is produced chunk by chunk in the pool, never on the loop."""
    loop, it, done = asyncio.get_running_loop(), iter(iterator), object()
    while (chunk := await loop.run_in_executor(http_executor(), next, it, done)) is not done:
        yield chunk


class ThreadedASGIHandler(ASGIHandler):
    """Django's ASGI handler, with synchronous views served by the sync middleware chain in one hop."""

    def __init__(self):
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.async_handler = ASGIHandler()  # Django's own async chain, for async views

    def _is_async_view(self, scope) -> bool:
        try:
            match = get_resolver().resolve(scope["path"][len(get_script_prefix(scope).rstrip("/")):] or "/")
        except Resolver404:
            return False
        return iscoroutinefunction(match.func)

    async def handle(self, scope, receive, send):
        if self._is_async_view(scope):
            return await self.async_handler.handle(scope, receive, send)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(http_executor(), contextvars.copy_context().run,
                                                  self._respond, scope, body_file)
            if response.streaming and not response.is_async:
                response.streaming_content = _pulled_in_pool(response.streaming_content)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while we were sending
            finally:
                if response.streaming:  # closed after its iterator was consumed, on a pool thread
                    await loop.run_in_executor(http_executor(), response.close)
        finally:
            body_file.close()

    def _respond(self, scope, body_file):
        # Runs in a pool thread: the sync middleware chain and the view, start to end.
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # the server chunks
        if not response.streaming:
            response.close()  # request_finished, on this thread: its database connection's housekeeping
        return response


# --- third-party middleware, made async-capable (one sync-only middleware puts the whole chain back on
# Django's one sync thread per process) ------------------------------------------------------------------

class _AsyncCapable:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None):
        super().__init__(get_response)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)


class StaticFilesMiddleware(_AsyncCapable, WhiteNoiseMiddleware):
    """WhiteNoise (static files from memory), also async-capable."""

    async def __acall__(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)


class AuditMiddleware(_AsyncCapable, AuditlogMiddleware):
    """django-auditlog's middleware (actor, remote address, correlation id), also async-capable. In the
    async chain it runs after config.observability.UserContextMiddleware has loaded the user, so reading
    the actor costs no database work."""

    async def __acall__(self, request):
        set_cid(request)
        with set_extra_data(context_data=self.get_extra_data(request)):
            return await self.get_response(request)
