"""HTTP under ASGI without the one-thread-per-process queue: sync views that run in the worker thread pool.

Under an ASGI server Django runs every synchronous view in ONE thread per process (`thread_sensitive`),
so a burst of requests to a view that waits on the database is served one at a time: measured as a start
stampede of 2,000 students taking 15–30 s with timeouts. A view wrapped in `in_thread_pool` is an async
view that runs the same synchronous code in the thread pool the sockets use (`db_call`), many at once, each
thread with its own database connection, as a threaded WSGI server would. It needs the middleware chain to
be async-capable (config.observability), otherwise Django wraps the whole chain in that one thread again.
"""

from __future__ import annotations

import functools

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from auditlog.cid import set_cid
from auditlog.context import set_extra_data
from auditlog.middleware import AuditlogMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware

from config.realtime.transport import db_call


def in_thread_pool(view):
    """Serve a synchronous view (decorators included: login_required, require_POST...) in parallel threads.

    The view must not rely on thread affinity (nothing in Django's request path does). Tests that call it
    through the sync test client need committed data (`django_db(transaction=True)`): the view runs on
    another thread's database connection."""

    @functools.wraps(view)
    async def run(request, *args, **kwargs):
        return await db_call(view)(request, *args, **kwargs)

    return run


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
