"""HTTP under ASGI through the production handler (config.asgi): the sync middleware chain and the view of
one request run in one thread of the HTTP pool, many requests in parallel; async views keep Django's chain.

Requests are driven at the ASGI level (scope, receive, send) against `config.asgi.application`, the object
uvicorn serves, not through Django's test client (which has its own handler)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

from config.http import ThreadedASGIHandler
from exams import services, views
from exams.models import Attempt, IntegrityEvent
from tests import factories
from tests.conftest import login_cookie
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db(transaction=True)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status_code, self.headers, self.content = status, headers, body

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]


async def asgi_request(method: str, url: str, *, cookie: str | None = None, body: bytes = b"",
                       headers: dict[str, str] | None = None, app=None) -> Response:
    """One HTTP request through the ASGI application, as uvicorn would send it."""
    from config.asgi import application

    path_, _, query = url.partition("?")
    hdrs = [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]
    if cookie:
        hdrs.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    if body:
        hdrs += [(b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path_, "raw_path": path_.encode(), "query_string": query.encode(), "root_path": "",
             "headers": hdrs, "client": ("127.0.0.1", 40000), "server": ("testserver", 80)}
    comm = ApplicationCommunicator(app or application, scope)
    await comm.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await comm.receive_output(10)
    assert start["type"] == "http.response.start", start
    content = b""
    while True:
        message = await comm.receive_output(10)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    await comm.wait(10)
    return Response(start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, content)


def test_sync_views_get_the_sync_chain_and_async_views_keep_djangos():
    handler = ThreadedASGIHandler()
    assert not iscoroutinefunction(handler._middleware_chain)  # whole chain in one pool thread
    assert iscoroutinefunction(handler.async_handler._middleware_chain)
    assert not iscoroutinefunction(views.exam_start) and not iscoroutinefunction(views.attempt_page)


# A throwaway URLconf: views that prove where and how requests run.
_barrier = threading.Barrier(3, timeout=10)


def _meet(request):
    """Answers only once three requests are inside views at the same time: served one at a time (Django's
    one sync thread per process under ASGI), the barrier breaks and this raises."""
    _barrier.wait()
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    return JsonResponse({"thread": threading.current_thread().name, "pid": pid})


def _stream(request):
    def rows():
        for part in (b"one,", b"two,", b"three"):
            yield part + threading.current_thread().name.encode()[:9] + b";"

    return StreamingHttpResponse(rows(), content_type="text/csv")


async def _async_view(request):
    return HttpResponse(f"async on {threading.current_thread().name}")


urlpatterns = [path("meet/", _meet), path("stream/", _stream), path("async/", _async_view)]


async def test_requests_to_sync_views_are_served_in_parallel_pool_threads(settings):
    settings.ROOT_URLCONF = __name__
    _barrier.reset()
    app = ThreadedASGIHandler()
    responses = await asyncio.gather(*[asgi_request("GET", "/meet/", app=app) for _ in range(3)])
    assert [r.status_code for r in responses] == [200, 200, 200]
    import json

    seen = [json.loads(r.content) for r in responses]
    assert all(s["thread"].startswith("aula-http") for s in seen)
    assert len({s["thread"] for s in seen}) == 3 and len({s["pid"] for s in seen}) == 3  # own connections
    assert all(r["X-Request-ID"] for r in responses)  # the sync chain ran (config.observability)


async def test_streaming_and_async_views_through_the_handler(settings):
    settings.ROOT_URLCONF = __name__
    app = ThreadedASGIHandler()
    streamed = await asgi_request("GET", "/stream/", app=app)
    assert streamed.status_code == 200  # produced in the pool, not on the event loop
    assert streamed.content == b"one,aula-http;two,aula-http;threeaula-http;"
    asynchronous = await asgi_request("GET", "/async/", app=app)
    assert asynchronous.status_code == 200 and asynchronous.content.startswith(b"async on ")
    assert b"aula-http" not in asynchronous.content  # on the event loop, not in the pool
    missing = await asgi_request("GET", "/nowhere/", app=app)
    assert missing.status_code == 404


async def test_readiness_is_served_by_the_async_chain():
    response = await asgi_request("GET", "/readyz/")
    assert response.status_code == 200 and b'"status": "ok"' in response.content


async def test_a_start_stampede_over_asgi_starts_each_attempt_once(world):
    ex = await database_sync_to_async(ExamWorld)(world)

    def make_class():
        students = []
        for i in range(12):
            s = factories.user(f"rush{i}", age=15)
            factories.enroll(ex.w.course_a, s)
            students.append(s)
        services.attempts_precreate(exam=ex.exam)
        return students, [login_cookie(s) for s in students]

    students, cookies = await database_sync_to_async(make_class)()

    async def press_start(cookie: str, times: int):
        return [await start_request(cookie, ex.exam.pk) for _ in range(times)]

    results = await asyncio.gather(*[press_start(c, 2) for c in cookies])
    by_student = await database_sync_to_async(lambda: {
        a.student_id: a for a in Attempt.objects.filter(exam=ex.exam, student__in=students)})()
    for student, responses in zip(students, results, strict=True):
        attempt = by_student[student.pk]
        assert attempt.state == Attempt.State.IN_PROGRESS
        for r in responses:  # pressing twice lands on the same attempt
            assert r.status_code == 302 and r["Location"] == f"/attempts/{attempt.pk}/"
            assert r["X-Request-ID"]
    started = await database_sync_to_async(
        lambda: IntegrityEvent.objects.filter(attempt__exam=ex.exam, kind="started").count())()
    assert started == 12
    page = await press_page(cookies[0], by_student[students[0].pk].pk)
    assert page.status_code == 200 and b"data-testid" in page.content
    other = await press_page(cookies[1], by_student[students[0].pk].pk)
    assert other.status_code == 404  # another student's attempt


async def start_request(cookie: str | None, exam_id: int) -> Response:
    """The Start button's form post: CSRF token in the form and the cookie, same origin."""
    token = "k" * 32
    cookies = f"csrftoken={token}" + (f"; {settings.SESSION_COOKIE_NAME}={cookie}" if cookie else "")
    return await asgi_request("POST", f"/exams/{exam_id}/start/", body=f"csrfmiddlewaretoken={token}".encode(),
                              headers={"cookie": cookies, "origin": "http://testserver"})


async def press_page(cookie: str, attempt_id: int):
    return await asgi_request("GET", f"/attempts/{attempt_id}/", cookie=cookie)


async def test_anonymous_start_over_asgi_goes_to_login(world):
    ex = await database_sync_to_async(ExamWorld)(world)
    response = await start_request(None, ex.exam.pk)
    assert response.status_code == 302 and "/login" in response["Location"]


async def test_start_without_csrf_token_is_refused(world):
    ex = await database_sync_to_async(ExamWorld)(world)
    student = await database_sync_to_async(lambda: factories.user("nocsrf", age=15))()
    await database_sync_to_async(factories.enroll)(ex.w.course_a, student)
    cookie = await database_sync_to_async(login_cookie)(student)
    response = await asgi_request("POST", f"/exams/{ex.exam.pk}/start/", cookie=cookie)
    assert response.status_code == 403
    assert not await database_sync_to_async(
        lambda: Attempt.objects.filter(student=student, state=Attempt.State.IN_PROGRESS).exists())()
