"""The creator dashboard in a real browser (a phone) against a real uvicorn process: the charts draw from the
snapshot and move when the live counters change; a viewer is refused the page."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from streaming import live
from streaming import services as streaming_services
from streaming.models import Stream
from tests import factories
from tests.e2e.browser import browser, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 15000
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def test_dashboard_charts_draw_and_follow_the_live_counters(server_factory):
    creator, viewer = factories.user("creator"), factories.user("viewer")
    channel = streaming_services.channel_upsert(owner=creator, slug="studio", title="Studio <i>one</i>")
    stream = streaming_services.stream_upsert(channel=channel, title="Live <b>session</b>")
    stream.status = Stream.Status.LIVE
    stream.save()
    live.incr(stream.pk, at=time.time() - 10, join=2, chat=3, sentiment_sum=1.5, sentiment_n=3, **{"rx.🔥": 4})
    live.gauges_set(stream.pk, viewers=7, peak=9, held=1)
    server = server_factory(kind="uvicorn", extra_env={"AULA_STREAM_DASHBOARD_TICK_SECONDS": "1"})
    url = f"{server.origin}/streams/{stream.pk}/dashboard/"

    with browser() as b:
        context = b.new_context(**PHONE)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sign_in(page, server.origin, creator.email, factories.PASSWORD)
        page.goto(url)
        expect(page.get_by_test_id("connection-state")).to_have_attribute("data-state", "live")
        expect(page.get_by_test_id("dash-title")).to_have_text("Live <b>session</b>")  # inert text
        expect(page.get_by_test_id("stat-viewers")).to_have_text("7")
        expect(page.get_by_test_id("stat-peak")).to_have_text("9")
        expect(page.get_by_test_id("stat-held")).to_have_text("1")
        activity = page.get_by_test_id("chart-activity")
        expect(activity.locator("canvas")).to_have_count(1)
        expect(activity).to_have_attribute("data-last", re.compile(r"^2,0,3$"))  # joins, leaves, chat per minute
        expect(page.get_by_test_id("chart-reactions")).to_have_attribute("data-last", "0")
        expect(page.get_by_test_id("reactions-empty")).to_be_hidden()
        expect(page.get_by_test_id("stat-sentiment")).not_to_have_text("–")
        updates_before = int(activity.get_attribute("data-updates"))

        live.incr(stream.pk, chat=5, leave=1)
        live.gauges_set(stream.pk, viewers=11, peak=11)

        expect(page.get_by_test_id("stat-viewers")).to_have_text("11")
        expect(activity).to_have_attribute("data-last", re.compile(r"^2,1,8$"))
        assert int(activity.get_attribute("data-updates")) > updates_before
        expect(page.get_by_test_id("chart-viewers")).to_have_attribute("data-last", "11")
        # Usable on a phone: nothing wider than the screen.
        assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth + 1")
        assert errors == []
        context.close()

        other = b.new_context()
        page = other.new_page()
        sign_in(page, server.origin, viewer.email, factories.PASSWORD)
        assert page.goto(url).status == 403
        other.close()
