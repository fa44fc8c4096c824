"""HTTP under ASGI: the middleware chain stays async, so views in the thread pool run in parallel."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import SyncToAsync, iscoroutinefunction
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient

from exams import services, views
from exams.models import Attempt, IntegrityEvent
from tests import factories
from tests.conftest import login_cookie
from tests.exams.conftest import ExamWorld

pytestmark = pytest.mark.django_db(transaction=True)


def test_no_sync_only_middleware_puts_the_chain_back_on_one_thread():
    chain = ASGIHandler()._middleware_chain
    assert not isinstance(chain, SyncToAsync) and iscoroutinefunction(chain)
    assert iscoroutinefunction(views.exam_start) and iscoroutinefunction(views.attempt_page)


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
        client = AsyncClient()
        client.cookies[settings.SESSION_COOKIE_NAME] = cookie
        return [await client.post(f"/exams/{ex.exam.pk}/start/") for _ in range(times)]

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


async def press_page(cookie: str, attempt_id: int):
    client = AsyncClient()
    client.cookies[settings.SESSION_COOKIE_NAME] = cookie
    return await client.get(f"/attempts/{attempt_id}/")


async def test_anonymous_start_over_asgi_goes_to_login(world):
    ex = await database_sync_to_async(ExamWorld)(world)
    response = await AsyncClient().post(f"/exams/{ex.exam.pk}/start/")
    assert response.status_code == 302 and "/login" in response["Location"]
