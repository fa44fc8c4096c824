"""The live review queue in a real browser against a real uvicorn process: two teachers of one class have the
queue open; one claims a held message and the other sees it claimed without reloading; one decides it and the
row disappears from both pages. The message's markup and bidi override stay inert text."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from classrooms import services as class_services
from classrooms.models import ChatMessage, Role
from moderation.models import ModerationItem, PatternList, PatternRule
from tests import factories
from tests.e2e.browser import browser, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 15000
TEXT = "you zorblax <b>bold</b><script>alert(1)</script> \u202eesrever"


def held_message(world) -> ModerationItem:
    """A student's class chat message held by the school's pattern list, through the real write path."""
    rules = PatternList.objects.create(institution=world.school_a, name="Held words", action="hold")
    PatternRule.objects.create(pattern_list=rules, kind="term", pattern="zorblax")
    message = class_services.chat_message_post(session=world.session_a, author=world.student_a, body=TEXT)
    assert message.status == ChatMessage.Status.HELD
    return ModerationItem.objects.get(object_id=str(message.pk))


def test_two_moderators_see_claims_and_decisions_live(server_factory, world):
    second = factories.user("teacher_two")
    factories.enroll(world.course_a, second, Role.TEACHER)
    item = held_message(world)
    server = server_factory(kind="uvicorn")
    url = f"{server.origin}/moderation/queue/"

    with browser() as b:
        pages, errors = [], []
        for person in (world.teacher_a, second):
            context = b.new_context()
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            sign_in(page, server.origin, person.email, factories.PASSWORD)
            page.goto(url)
            expect(page.get_by_test_id("connection-state")).to_have_attribute("data-state", "live")
            pages.append(page)
        one, two = pages
        rows = [p.locator(f"li[data-item-id='{item.pk}']") for p in pages]
        for page, row in zip(pages, rows, strict=True):
            expect(row).to_have_count(1)
            expect(row.get_by_test_id("row-text")).to_have_text(TEXT.strip())  # inert text, not markup
            expect(row.locator("b, script")).to_have_count(0)
            expect(page.get_by_test_id("count-open")).to_have_text("1")

        rows[0].get_by_test_id("claim").click()
        expect(rows[0].get_by_test_id("row-status")).to_have_text("Claimed by you")
        # The other page learns it live: claimed by the first teacher, no decision form for them any more.
        expect(rows[1].get_by_test_id("row-claimed-by")).to_have_text(world.teacher_a.public_name)
        expect(rows[1].get_by_test_id("decide")).to_have_count(0)
        expect(two.get_by_test_id("count-claimed")).to_have_text("1")

        rows[0].get_by_test_id("decision").select_option("remove")
        rows[0].get_by_test_id("note").fill("Not kind.")
        rows[0].get_by_test_id("decide").click()
        for page, row in zip(pages, rows, strict=True):
            expect(row).to_have_count(0)
            expect(page.get_by_test_id("count-total")).to_have_text("0")
            expect(page.get_by_test_id("queue-empty")).to_be_visible()
        assert errors == []

    item.refresh_from_db()
    assert item.status == "decided" and item.decision == "remove" and item.decided_by_id == world.teacher_a.pk
    assert ChatMessage.objects.get(pk=int(item.object_id)).status == ChatMessage.Status.REJECTED
