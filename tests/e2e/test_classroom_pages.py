"""The live classroom in real browsers: a teacher (laptop) and a student (phone) on one real uvicorn process.

Each test opens two browser contexts (two people, two cookies) on the same session page and checks what
each of them sees when the other acts: chat, polls, hands, locks, removal, reconnects, the end of the class
and its attendance. Waits are on locators (Playwright's auto-retrying `expect`), not sleeps.
"""

from __future__ import annotations

import contextlib
import json
import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from classrooms.models import AttendanceRecord
from tests import factories
from tests.e2e.browser import browser, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 15000
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
LAPTOP = {"viewport": {"width": 1280, "height": 900}}


class Person:
    """One signed-in browser context on the session page, recording what a test must never see."""

    def __init__(self, b, server, user, session, fake_clock: bool = False, **context_args):
        self.server = server
        self.user = user
        self.context = b.new_context(**context_args)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        if fake_clock:
            self.page.clock.install()  # time still flows; a test may jump it forward
        self.sockets: list[str] = []
        self.received: list[str] = []  # types of the frames the page's sockets received
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        page = self.page
        page.on("websocket", self._socket)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)
        page.on("request", self._request)
        sign_in(page, server.origin, user.email, factories.PASSWORD)
        page.goto(f"{server.origin}/sessions/{session.pk}/")
        self.expect_state("live")

    def _socket(self, ws) -> None:
        if "/ws/v1/sessions/" not in ws.url or "/collab/" in ws.url:
            return  # the home page's live-notices socket, and the board and notes socket, are not the class room
        self.sockets.append(ws.url)
        ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)["type"]))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _request(self, request) -> None:
        if not request.url.startswith((self.server.origin, self.server.ws_base, "data:")):
            self.foreign.append(request.url)

    def tid(self, test_id: str):
        return self.page.get_by_test_id(test_id)

    def expect_state(self, state: str) -> None:
        expect(self.tid("connection-state")).to_have_attribute("data-state", state, timeout=WAIT_MS)

    def chat(self, text: str) -> None:
        self.tid("chat-input").fill(text)
        self.tid("chat-input").press("Enter")

    def messages(self, text: str | None = None):
        items = self.tid("chat-list").get_by_test_id("chat-message")
        return items.filter(has=self.page.locator(".msg-body", has_text=text)) if text else items

    def roster_row(self, user):
        return self.page.locator(f"[data-testid=roster-row][data-user-id='{user.pk}']")

    def check_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs  # no script ever ran an alert()
        assert self.foreign == [], self.foreign  # no request leaves the server (vendored assets only)


@contextlib.contextmanager
def classroom(world, server_factory, student_clock: bool = False):
    server = server_factory(kind="uvicorn")
    with browser() as b:
        teacher = Person(b, server, world.teacher_a, world.session_a, **LAPTOP)
        student = Person(b, server, world.student_a, world.session_a, fake_clock=student_clock, **PHONE)
        yield teacher, student
        for person in (teacher, student):
            person.check_clean()


def test_chat_both_ways_hostile_text_inert_and_presence(world, server_factory):
    hostile = "<img src=x onerror=alert(1)>"
    with classroom(world, server_factory, student_clock=True) as (teacher, student):
        expect(teacher.tid("session-controls")).to_be_visible()
        expect(student.tid("session-controls")).to_have_count(0)  # the console is never rendered for students

        student.chat("Hello from the student")
        expect(teacher.messages("Hello from the student")).to_have_count(1)
        expect(student.messages("Hello from the student")).to_have_count(1)

        teacher.chat(hostile)
        body = student.messages(hostile).locator(".msg-body")
        expect(body).to_have_text(hostile)  # shown as text, character for character
        assert student.tid("chat-list").locator("img").count() == 0
        assert teacher.tid("chat-list").locator("img").count() == 0
        expect(student.tid("announcer")).to_contain_text("Teacher_A")  # new messages reach screen readers

        # The teacher sees the student in the roster, active; a hidden tab turns them "away".
        row = teacher.roster_row(world.student_a)
        expect(row.get_by_test_id("presence-state")).to_have_text("active")
        student.page.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
            document.dispatchEvent(new Event('visibilitychange'));
        }""")
        expect(row.get_by_test_id("presence-state")).to_have_text("away")
        student.page.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'visible'});
            document.dispatchEvent(new Event('visibilitychange'));
        }""")
        expect(row.get_by_test_id("presence-state")).to_have_text("active")
        expect(student.tid("presence-count")).to_have_text("2")

        # Three minutes without keyboard, mouse or touch: idle. Any input: active again.
        student.page.clock.fast_forward("03:05")
        expect(row.get_by_test_id("presence-state")).to_have_text("idle")
        student.tid("chat-input").focus()
        student.page.keyboard.press("Shift")
        expect(row.get_by_test_id("presence-state")).to_have_text("active")
        assert len(student.sockets) == 1  # the same connection throughout: the jump did not look like a dead socket

        # Five messages per five seconds: one more in a burst says "slow down" and gives the text back. The
        # limit counts in fixed windows, so a burst may straddle two: sent one by one, each answered (shown or
        # refused) before the next, the refusal comes by the eleventh at the latest.
        slow = student.tid("chat-note").filter(has_text="Slow down")
        for i in range(11):
            student.chat(f"burst {i}")
            expect(student.messages(f"burst {i}").or_(slow)).not_to_have_count(0)
            if slow.count():
                break
        expect(student.tid("chat-note")).to_contain_text("Slow down")
        expect(student.tid("chat-input")).to_have_value(re.compile(r"^burst \d+$"))
        expect(student.tid("chat-send")).to_be_disabled()
        expect(student.tid("chat-send")).to_be_enabled(timeout=WAIT_MS)

        # A teacher deletes a message with a reason; it disappears for everyone.
        teacher.messages("Hello from the student").get_by_test_id("chat-delete").click()
        teacher.tid("reason-input").fill("off topic")
        teacher.tid("reason-confirm").click()
        expect(student.messages("Hello from the student")).to_have_count(0)
        expect(teacher.messages("Hello from the student")).to_have_count(0)

        # A long class stays light: the page keeps at most 300 messages (the oldest are pruned). The frames
        # are fed to the client directly, as a busy room would deliver them, without 300 real sends.
        student.page.evaluate("""() => {
            for (let i = 0; i < 320; i++) {
                aulaSession._frame({type: 'chat.message', seq: aulaSession.lastSeq + 1, data: {
                    id: 1000000 + i, author: {id: 1000000, name: 'Busy'}, body: 'busy ' + i,
                    at: new Date().toISOString()}});
            }
        }""")
        expect(student.messages()).to_have_count(300)
        expect(student.messages().last.locator(".msg-body")).to_have_text("busy 319")


def test_quiz_poll_answered_by_student_with_live_results_and_verdict(world, server_factory):
    with classroom(world, server_factory) as (teacher, student):
        form = teacher.tid("poll-create")
        form.get_by_label("Question").fill("What is 2 + 2?")
        options = form.get_by_test_id("poll-option-input")
        options.nth(0).fill("3")
        options.nth(1).fill("4")
        form.get_by_test_id("poll-quiz").check()
        form.get_by_test_id("poll-option-correct").nth(1).check()
        form.get_by_test_id("poll-start").click()
        expect(teacher.tid("poll-create-note")).to_have_text("Poll started.")

        poll = student.tid("poll").filter(has_text="What is 2 + 2?")
        expect(poll).to_be_visible()
        expect(poll.get_by_test_id("poll-meta")).to_contain_text("quiz")
        poll.get_by_label("4").check()
        poll.get_by_test_id("poll-submit").click()
        expect(poll.get_by_test_id("poll-note")).to_have_text("Answered ✓")
        expect(poll.get_by_label("3")).to_be_disabled()

        teacher_poll = teacher.tid("poll").filter(has_text="What is 2 + 2?")
        expect(teacher_poll.get_by_test_id("poll-respondents")).to_have_text("1 answer")
        expect(teacher_poll.locator("[data-testid=poll-result][data-position='1']")).to_have_attribute("data-count", "1")
        expect(student.tid("poll").get_by_test_id("poll-respondents")).to_have_text("1 answer")  # results are live

        teacher_poll.get_by_test_id("poll-details-toggle").click()
        detail = teacher_poll.get_by_test_id("poll-detail-row")
        expect(detail).to_have_count(1)
        expect(detail).to_contain_text("Student_A")
        expect(detail).to_contain_text("✓ correct")

        teacher_poll.get_by_test_id("poll-close").click()
        expect(poll.get_by_test_id("poll-verdict")).to_have_text("Correct! ✓")
        expect(poll.get_by_test_id("poll-meta")).to_contain_text("closed")
        expect(teacher_poll.locator(".bar.correct")).to_contain_text("4")

        # A reload restores the same state from the snapshot: answered, closed, correct.
        student.page.reload()
        student.expect_state("live")
        poll = student.tid("poll").filter(has_text="What is 2 + 2?")
        expect(poll.get_by_test_id("poll-verdict")).to_have_text("Correct! ✓")
        expect(poll.get_by_label("4")).to_be_checked()

        # An anonymous free-text poll whose results students see only when it closes.
        form.get_by_label("Question").fill("How do you feel?")
        form.get_by_test_id("poll-kind-open").check()
        expect(form.get_by_test_id("poll-option-input").first).to_be_hidden()
        form.get_by_test_id("poll-anonymous").check()
        form.get_by_test_id("poll-results-visibility").select_option("on_close")
        form.get_by_test_id("poll-start").click()
        mood = student.tid("poll").filter(has_text="How do you feel?")
        expect(mood.get_by_test_id("poll-results")).to_have_text("Results are shown when the teacher closes the poll.")
        mood.get_by_label("Your answer").fill("<b>sleepy</b>")
        mood.get_by_test_id("poll-submit").click()
        expect(mood.get_by_test_id("poll-note")).to_have_text("Answered ✓")
        teacher_mood = teacher.tid("poll").filter(has_text="How do you feel?")
        expect(teacher_mood.locator(".poll-texts li")).to_have_text(["<b>sleepy</b>"])  # text, never markup
        expect(teacher_mood.get_by_test_id("poll-details-toggle")).to_be_hidden()  # no names to show
        expect(mood.locator(".poll-texts")).to_have_count(0)
        teacher_mood.get_by_test_id("poll-close").click()
        expect(mood.locator(".poll-texts li")).to_have_text(["<b>sleepy</b>"])
        assert student.tid("poll-list").locator("b").count() == 0


def test_hand_raise_queue_call_next_and_class_timer(world, server_factory):
    with classroom(world, server_factory) as (teacher, student):
        student.tid("hand-toggle").click()
        expect(student.tid("hand-status")).to_have_text("Your hand is up: you are number 1 in the queue.")
        expect(student.tid("hand-toggle")).to_have_attribute("aria-pressed", "true")
        expect(teacher.tid("queue-row")).to_have_text(re.compile("Student_A"))
        expect(teacher.tid("hand-count")).to_have_text("1")

        teacher.tid("call-next").click()
        expect(student.tid("hand-toggle")).to_have_attribute("aria-pressed", "false")
        expect(student.tid("hand-status")).to_have_text("The teacher called on you: go ahead!")
        expect(teacher.tid("queue-row")).to_have_count(0)
        expect(teacher.tid("last-called")).to_have_text("You called on Student_A.")

        # The class timer counts down on the server's clock on both pages.
        teacher.tid("timer-minutes").fill("2")
        teacher.tid("timer-label").fill("Group work")
        teacher.tid("timer-start").click()
        for person in (teacher, student):
            timer = person.tid("class-timer")
            expect(timer).to_contain_text("Group work:")
            expect(timer).to_contain_text(re.compile(r"[12]:\d\d"))
        left = int(student.tid("class-timer").get_attribute("data-seconds-left"))
        assert 100 <= left <= 120
        teacher.tid("timer-stop").click()
        expect(student.tid("class-timer")).to_be_hidden()

        # The teacher's connection health box (docs/observability.md); students have none.
        expect(teacher.tid("health-box")).to_be_visible()
        expect(teacher.tid("health-current")).to_contain_text(re.compile(r"\d+ \(peak \d+\)"))
        assert student.tid("health-box").count() == 0


def test_locks_and_removal(world, server_factory):
    with classroom(world, server_factory) as (teacher, student):
        student.chat("first")
        teacher.chat("second")
        expect(student.messages()).to_have_count(2)
        teacher.tid("chat-clear").click()
        teacher.tid("reason-input").fill("fresh start")
        teacher.tid("reason-confirm").click()
        expect(student.messages()).to_have_count(0)
        expect(student.tid("chat-system")).to_have_text("The teacher cleared the chat.")
        expect(teacher.messages()).to_have_count(0)

        teacher.tid("class-lock-chat").check()
        expect(student.tid("chat-input")).to_be_disabled()
        expect(student.tid("chat-note")).to_have_text("The teacher has turned off chat for the class.")
        teacher.tid("class-lock-chat").uncheck()
        expect(student.tid("chat-input")).to_be_enabled()

        row = teacher.roster_row(world.student_a)
        row.get_by_test_id("mute-chat").click()
        expect(student.tid("chat-input")).to_be_disabled()
        expect(student.tid("chat-note")).to_have_text("The teacher has muted your chat.")
        expect(row.get_by_test_id("person-flags")).to_contain_text("chat muted")
        expect(row.get_by_test_id("mute-chat")).to_have_text("Unmute chat")
        row.get_by_test_id("mute-chat").click()
        expect(student.tid("chat-input")).to_be_enabled()

        teacher.tid("class-lock-hand").check()
        expect(student.tid("hand-toggle")).to_be_disabled()
        expect(student.tid("hand-status")).to_contain_text("turned off hand raising")
        teacher.tid("class-lock-hand").uncheck()
        expect(student.tid("hand-toggle")).to_be_enabled()

        row.get_by_test_id("screen-share").click()
        expect(row.get_by_test_id("person-flags")).to_contain_text("may share screen")
        expect(row.get_by_test_id("screen-share")).to_have_text("Revoke screen share")
        row.locator("summary").click()
        row.get_by_test_id("lock-polls").check()
        expect(row.get_by_test_id("person-flags")).to_contain_text("no polls")

        sockets_before = len(student.sockets)
        row.get_by_test_id("remove").click()
        teacher.tid("reason-input").fill("disruptive")
        teacher.tid("reason-confirm").click()
        student.expect_state("closed")
        expect(student.tid("connection-state")).to_have_attribute("data-reason", "removed")
        expect(student.tid("room-banner")).to_contain_text("You were removed from this session")
        expect(student.tid("chat-input")).to_be_disabled()
        expect(row.get_by_test_id("remove")).to_have_text("Readmit")
        # It does not reconnect: no new socket is opened after the 4408 close.
        student.page.wait_for_timeout(2500)
        assert len(student.sockets) == sockets_before
        student.expect_state("closed")

        # A reload does not let them back in; readmitting does.
        student.page.reload()
        expect(student.tid("room-banner")).to_contain_text("You were removed from this session")
        expect(student.tid("chat-input")).to_have_count(0)
        row.get_by_test_id("remove").click()
        expect(row.get_by_test_id("remove")).to_have_text("Remove")
        student.page.reload()
        student.expect_state("live")


def test_reconnect_resumes_and_shows_each_message_once(world, server_factory):
    with classroom(world, server_factory) as (teacher, student):
        teacher.chat("before the drop")
        expect(student.messages("before the drop")).to_have_count(1)
        first_socket = len(student.sockets)

        student.context.set_offline(True)
        student.page.evaluate("() => aulaSession.ws && aulaSession.ws.close()")
        student.expect_state("reconnecting")
        expect(student.tid("connection-state")).to_have_text("Reconnecting…")

        teacher.chat("while you were away 1")
        teacher.chat("while you were away 2")
        expect(teacher.messages("while you were away 2")).to_have_count(1)
        student.chat("typed while offline")
        expect(student.tid("chat-pending")).to_contain_text("waiting for the connection")

        student.context.set_offline(False)
        student.expect_state("live")
        for text in ("before the drop", "while you were away 1", "while you were away 2", "typed while offline"):
            expect(student.messages(text)).to_have_count(1)
            expect(teacher.messages(text)).to_have_count(1)
        expect(student.tid("chat-pending")).to_have_count(0)
        resumed = [u for u in student.sockets[first_socket:] if "resume=" in u]
        assert resumed, student.sockets
        query = parse_qs(urlparse(resumed[-1]).query)
        assert int(query["last_seq"][0]) >= 1 and query["resume"][0]
        # The server replayed the missed events (no second snapshot) and said so.
        assert student.received.count("snapshot") == 1 and "resume.done" in student.received

        # The order is the room's order, and a second drop (socket killed by script) also recovers.
        bodies = student.messages().locator(".msg-body").all_inner_texts()
        assert bodies.index("before the drop") < bodies.index("while you were away 1") < bodies.index(
            "while you were away 2")
        student.page.evaluate("() => aulaSession.ws.close()")
        teacher.chat("after the second drop")
        student.expect_state("live")
        expect(student.messages("after the second drop")).to_have_count(1)
        expect(student.messages()).to_have_count(5)


def test_end_session_then_attendance_page_and_csv(world, server_factory):
    with classroom(world, server_factory) as (teacher, student):
        teacher.tid("session-start").click()
        expect(student.tid("session-status")).to_have_text("Live")
        student.chat("present!")
        expect(teacher.messages("present!")).to_have_count(1)

        teacher.tid("session-end").click()
        teacher.tid("reason-confirm").click()
        for person in (teacher, student):
            person.expect_state("closed")
            expect(person.tid("connection-state")).to_have_attribute("data-reason", "ended")
            expect(person.tid("room-banner")).to_contain_text("The session has ended.")

        page = teacher.page
        page.get_by_role("link", name="See the attendance").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Attendance: Live A")
        page.get_by_test_id("attendance-recompute").click()
        expect(page.get_by_role("status")).to_contain_text("Attendance recomputed for 1 student(s).")
        row = page.get_by_test_id("attendance-row")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("Student_A")
        expect(row.locator("td").nth(7)).to_have_text("1")  # one chat message
        with page.expect_download() as download:
            page.get_by_test_id("attendance-csv").click()
        text = open(download.value.path(), encoding="utf-8-sig").read()
        assert text.splitlines()[0].startswith('"student","username","status"')
        assert '"Student_A","student_a"' in text

        # The home page links the ended session's attendance for the teacher only.
        page.goto(f"{teacher.server.origin}/")
        expect(page.get_by_test_id("attendance-link")).to_have_count(1)
        student.page.goto(f"{teacher.server.origin}/")
        expect(student.page.get_by_test_id("attendance-link")).to_have_count(0)
    assert AttendanceRecord.objects.filter(session=world.session_a).count() == 1  # after the browser's event loop


def test_held_message_pending_for_its_author_only_then_approved_and_a_report(world, server_factory):
    """Moderation on the class page: a message the school's list holds is "pending review" for its author
    and invisible to the class; the teacher is told (no text) and approves it from the review queue page;
    then it reaches everyone and stops being pending. A classmate reports a message from its "Report" button."""
    from moderation.models import ModerationItem, PatternList, PatternRule

    rules = PatternList.objects.create(institution=world.school_a, name="Held words", action="hold")
    PatternRule.objects.create(pattern_list=rules, kind="term", pattern="zorblax")
    classmate = factories.user("classmate_e2e", age=14)
    factories.enroll(world.course_a, classmate)
    server = server_factory(kind="uvicorn")
    with browser() as b:
        teacher = Person(b, server, world.teacher_a, world.session_a, **LAPTOP)
        student = Person(b, server, world.student_a, world.session_a, **PHONE)
        other = Person(b, server, classmate, world.session_a, **PHONE)
        student.chat("you z0rbl4x")
        pending = student.tid("chat-list").get_by_test_id("chat-held")
        expect(pending).to_have_count(1)
        expect(pending).to_contain_text("pending review")
        expect(teacher.tid("chat-list")).to_contain_text("held for review")  # the teacher's notice, no text
        expect(other.messages("you z0rbl4x")).to_have_count(0)

        queue = teacher.context.new_page()
        queue.set_default_timeout(WAIT_MS)
        queue.goto(f"{server.origin}/moderation/queue/")
        row = queue.get_by_test_id("queue-row").filter(has_text="you z0rbl4x")
        expect(row).to_have_count(1)
        row.get_by_test_id("decision").select_option("approve")
        row.get_by_test_id("decide").click()
        expect(row).to_have_count(0)
        expect(other.messages("you z0rbl4x")).to_have_count(1)
        expect(student.messages("you z0rbl4x")).to_have_count(1)
        expect(pending).to_have_count(0)

        student.chat("see you at the library")
        message = other.messages("see you at the library")
        expect(message).to_have_count(1)
        message.get_by_test_id("chat-report").click()
        other.tid("reason-input").fill("felt unkind")
        other.tid("reason-confirm").click()
        expect(other.tid("chat-list")).to_contain_text("a moderator will look at it")
        for person in (teacher, student, other):
            person.check_clean()
    reported = ModerationItem.objects.get(reason="reported")
    assert reported.report_count == 1 and reported.text == "see you at the library"
