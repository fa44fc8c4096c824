"""The stream watch page in real browsers against one real uvicorn process (docs/protocol.md, "Streams").

Several browser contexts (people, each with its own cookies) watch one live stream: what each of them sees
when the others chat, react, join, open a second tab, or moderate. Waits are on locators (Playwright's
auto-retrying `expect`), not sleeps; the viewer count is also checked against Redis, where it is kept.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from playwright.sync_api import expect

from config.realtime.transport import _redis
from streaming import services
from streaming.audience import _k
from streaming.models import ChannelRole
from tests import factories
from tests.e2e.browser import browser, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 15000
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
LAPTOP = {"viewport": {"width": 1280, "height": 900}}
HOSTILE = "<img src=x onerror=alert(1)>"


class Watcher:
    """One browser context (one person, or nobody signed in) on the watch page; records what must not happen."""

    def __init__(self, b, server, stream, user=None, **context_args):
        self.server, self.stream, self.user = server, stream, user
        self.context = b.new_context(**context_args)
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.pages = []
        if user is not None:
            page = self._new_page()
            sign_in(page, server.origin, user.email, factories.PASSWORD)
            page.close()
            self.pages.clear()
        self.page = self.open_tab()

    def _new_page(self):
        page = self.context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.pages.append(page)
        return page

    def open_tab(self):
        page = self._new_page()
        page.goto(f"{self.server.origin}/streams/{self.stream.pk}/")
        expect(page.get_by_test_id("connection-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
        return page

    def tid(self, test_id: str):
        return self.page.get_by_test_id(test_id)

    def chat(self, text: str) -> None:
        self.page.locator("#chat-input").fill(text)
        self.page.locator("#chat-input").press("Enter")

    def messages(self, text: str | None = None):
        items = self.tid("chat-list").get_by_test_id("chat-message")
        return items.filter(has=self.page.locator(".body", has_text=text)) if text else items

    def expect_viewers(self, n: int) -> None:
        expect(self.tid("viewer-count")).to_have_text(str(n), timeout=WAIT_MS)

    def check_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs  # no script ever ran an alert()


@pytest.fixture
def cast(db):
    creator, mod, member, viewer, other = (factories.user() for _ in range(5))
    ch = factories.channel(owner=creator)
    factories.channel_role(ch, mod, ChannelRole.Kind.MODERATOR)
    factories.channel_role(ch, member, ChannelRole.Kind.MEMBER)
    return {"creator": creator, "mod": mod, "member": member, "viewer": viewer, "other": other,
            "stream": factories.stream(ch, title="Friday live")}


def redis_viewers(stream) -> int:
    return _redis().hlen(_k(stream.pk, "vh"))


@contextlib.contextmanager
def watching(server_factory):
    server = server_factory(kind="uvicorn")
    people: list[Watcher] = []
    with browser() as b:
        def join(stream, user=None, **context_args) -> Watcher:
            w = Watcher(b, server, stream, user, **context_args)
            people.append(w)
            return w

        yield join
        for w in people:
            w.check_clean()


def test_chat_reactions_viewer_count_anonymous_and_lockdown(cast, server_factory):
    stream, mod, member, viewer, other = (cast[k] for k in ("stream", "mod", "member", "viewer", "other"))
    with watching(server_factory) as join:
        phone = join(stream, viewer, **PHONE)
        phone.expect_viewers(1)

        # Chat: sent, seen by the sender, and hostile text is shown as text, never run.
        phone.chat(HOSTILE)
        expect(phone.messages(HOSTILE).locator(".body")).to_have_text(HOSTILE)
        assert phone.tid("chat-list").locator("img").count() == 0

        # A second person joins: both see 2. A second tab of that person counts once.
        laptop = join(stream, other, **LAPTOP)
        phone.expect_viewers(2)
        laptop.expect_viewers(2)
        expect(laptop.messages(HOSTILE).locator(".body")).to_have_text(HOSTILE)  # from the snapshot
        assert laptop.tid("chat-list").locator("img").count() == 0
        second_tab = laptop.open_tab()
        expect(second_tab.get_by_test_id("viewer-count")).to_have_text("2")
        time.sleep(2.5)  # two viewer publishing seconds: a double count would have gone out by now
        expect(phone.tid("viewer-count")).to_have_text("2")
        assert redis_viewers(stream) == 2
        second_tab.close()

        # Reactions are batched: one press shows as "1 🔥 in the last second" for everyone.
        phone.tid("reaction-buttons").get_by_role("button", name="fire").click()
        expect(laptop.tid("reaction-burst")).to_have_text("1 🔥 in the last second")
        expect(phone.tid("reaction-burst")).to_have_text("1 🔥 in the last second")

        # Anonymous: sees the chat, has no input or reaction buttons, and is told to sign in.
        anon = join(stream, None, **PHONE)
        expect(anon.messages(HOSTILE).locator(".body")).to_have_text(HOSTILE)
        expect(anon.page.locator("#chat-input")).to_have_count(0)
        expect(anon.tid("reaction-buttons")).to_have_count(0)
        expect(anon.tid("sign-in-notice")).to_contain_text("Sign in to chat")
        phone.chat("live from the anonymous check")
        expect(anon.messages("live from the anonymous check")).to_have_count(1)
        anon.expect_viewers(3)

        # Lockdown: a non-member's message is "pending review" for them only, until a moderator approves it.
        moderator = join(stream, mod, **LAPTOP)
        phone.expect_viewers(4)
        moderator.tid("moderation").get_by_role("button", name="Lockdown", exact=True).click()
        expect(laptop.tid("chat-settings")).to_contain_text("lockdown")
        laptop.chat("please let me in")
        pending = laptop.messages("please let me in")
        expect(pending).to_contain_text("pending review")
        held = moderator.tid("held").locator("li", has_text="please let me in")
        expect(held).to_have_count(1)
        time.sleep(1)  # what others must not see has had time to arrive
        for w in (phone, anon):
            expect(w.messages("please let me in")).to_have_count(0)
        held.get_by_role("button", name="Approve").click()
        for w in (phone, anon, moderator):
            expect(w.messages("please let me in")).to_have_count(1)
        expect(pending).not_to_contain_text("pending review")
        expect(held).to_have_count(0)
        moderator.tid("moderation").get_by_role("button", name="Lift lockdown").click()
        expect(laptop.tid("chat-settings")).not_to_contain_text("lockdown")

        # A busy chat keeps the page light: the list is pruned to 200 (the moderator receives every message).
        for i in range(230):
            services.chat_message_post(stream=stream, author=member, body=f"flood {i}", client_ref=f"flood-{i}")
        expect(moderator.messages().last.locator(".body")).to_have_text("flood 229")
        assert moderator.messages().count() == 200
        # A viewer gets a sample of a flood (at most 20 a second per process) and a note for the rest.
        expect(phone.tid("chat-sampled")).to_contain_text("more messages flew by")
        assert phone.messages().count() <= 200


def test_phone_layout_has_chat_and_reactions_without_sideways_scroll(cast, server_factory):
    with watching(server_factory) as join:
        phone = join(cast["stream"], cast["viewer"], **PHONE)
        expect(phone.page.locator("#chat-input")).to_be_in_viewport()
        for name in ("fire", "heart", "clap"):
            expect(phone.tid("reaction-buttons").get_by_role("button", name=name)).to_be_visible()
        widths = phone.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        # A long unbroken message wraps instead of widening the page.
        phone.chat("x" * 280)
        expect(phone.messages("x" * 280)).to_have_count(1)
        widths = phone.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
