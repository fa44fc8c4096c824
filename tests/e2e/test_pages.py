"""A real browser against a real uvicorn process: sign in, see your sessions, join one over a WebSocket."""

from __future__ import annotations

import pytest

from classrooms import services
from tests import factories
from tests.e2e.browser import browser, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_student_signs_in_and_joins_a_live_session(world, server_factory):
    server = server_factory(kind="uvicorn")
    with browser() as b:
        page = b.new_page()
        sign_in(page, server.origin, world.student_a.email, factories.PASSWORD)
        links = page.get_by_test_id("session-link")
        assert links.all_inner_texts() == ["Live A"]  # only their own school's, own course's session
        links.first.click()
        state = page.get_by_test_id("connection-state")
        state.filter(has_text="Connected").wait_for(timeout=15000)
        assert page.title().startswith("Live A")


def test_user_text_is_rendered_inert(world, server_factory):
    hostile = '<img src=x onerror="document.title=\'pwned\'">'
    services.user_upsert(email=world.student_a.email, first_name="Eve", display_name=hostile,
                         date_of_birth=world.student_a.date_of_birth)
    server = server_factory(kind="uvicorn")
    with browser() as b:
        page = b.new_page()
        sign_in(page, server.origin, world.student_a.email, factories.PASSWORD)
        assert page.locator(".who").inner_text() == hostile  # shown as text
        assert page.locator("header img").count() == 0
        assert page.title() != "pwned"


def test_other_schools_session_page_is_not_found(world, server_factory):
    server = server_factory(kind="uvicorn")
    with browser() as b:
        page = b.new_page()
        sign_in(page, server.origin, world.student_a.email, factories.PASSWORD)
        response = page.goto(f"{server.origin}/sessions/{world.session_c.pk}/")
        assert response.status == 404
