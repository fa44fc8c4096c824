"""The exam pages in a real browser against a real uvicorn process: a student takes an exam (autosave,
reload, offline, submit) while the teacher's proctor board follows, and the countdown keeps to the
server's clock when the page's clock is wrong. Waits are on locators (Playwright's `expect`), not sleeps.
"""

from __future__ import annotations

import re
import time

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from exams import services
from exams.models import Answer, Attempt
from tests import factories
from tests.e2e.browser import browser, db, sign_in
from tests.exams.conftest import ExamWorld

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 15000


def wait_until(check, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def stored(attempt_id: int, question) -> object:
    answer = db(lambda: Answer.objects.filter(attempt_id=attempt_id, question=question).first())
    return answer.value if answer else None


def open_page(b, server, user, path: str | None = None, init_script: str | None = None):
    context = b.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    if init_script:
        page.add_init_script(init_script)
    sign_in(page, server.origin, user.email, factories.PASSWORD)
    if path:
        page.goto(server.origin + path)
    return page


def question(page, q):
    return page.locator(f'[data-testid="question"][data-question-id="{q.pk}"]')


def expect_saved(page, *qs) -> None:
    for q in qs:
        expect(question(page, q).get_by_test_id("save-state")).to_have_text("Saved", timeout=WAIT_MS)


def expect_live(page) -> None:
    expect(page.get_by_test_id("connection-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def countdown_seconds(page) -> int:
    text = page.get_by_test_id("countdown-value").inner_text()
    parts = [int(p) for p in text.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def test_student_takes_the_exam_while_the_proctor_board_follows(world, server_factory):
    ex = ExamWorld(world)
    server = server_factory(kind="uvicorn")
    with browser() as b:
        board = open_page(b, server, world.teacher_a, f"/exams/{ex.exam.pk}/proctor/")
        expect_live(board)
        row = board.locator(f'[data-testid="board-row"][data-student-id="{world.student_a.pk}"]')
        expect(row.get_by_test_id("row-state")).to_have_text("Not started")

        student = open_page(b, server, world.student_a, "/exams/")
        student.get_by_test_id("start").click()
        student.wait_for_url(re.compile(r"/attempts/\d+/$"))
        attempt = db(Attempt.objects.get, exam=ex.exam, student=world.student_a)
        expect_live(student)
        expect(row.get_by_test_id("row-state")).to_have_text(re.compile("^In progress"))
        expect(row.get_by_test_id("row-conn")).to_have_text("Online")

        # Several kinds of question; each says "Saved" only once the server acknowledged it.
        question(student, ex.q_single).get_by_label("4", exact=True).check()
        question(student, ex.q_multi).get_by_label("2", exact=True).check()
        question(student, ex.q_multi).get_by_label("5", exact=True).check()
        question(student, ex.q_tf).get_by_label("True", exact=True).check()
        question(student, ex.q_num).get_by_label("Your answer (a number)").fill("3.1416")
        question(student, ex.q_short).get_by_label("Your answer").fill("Paris")
        question(student, ex.q_essay).get_by_label("Your answer").fill("Line one\n<b>not bold</b>")
        expect_saved(student, ex.q_single, ex.q_multi, ex.q_tf, ex.q_num, ex.q_short, ex.q_essay)
        assert stored(attempt.pk, ex.q_single) == [1]  # the authoring index of "4", whatever the display order
        assert stored(attempt.pk, ex.q_multi) == [0, 2]
        assert stored(attempt.pk, ex.q_tf) is True
        assert stored(attempt.pk, ex.q_num) == "3.1416"
        assert stored(attempt.pk, ex.q_essay) == "Line one\n<b>not bold</b>"

        # A reload shows the saved answers again.
        student.reload()
        expect_live(student)
        expect(question(student, ex.q_single).get_by_label("4", exact=True)).to_be_checked()
        expect(question(student, ex.q_multi).get_by_label("5", exact=True)).to_be_checked()
        expect(question(student, ex.q_multi).get_by_label("4", exact=True)).not_to_be_checked()
        expect(question(student, ex.q_tf).get_by_label("True", exact=True)).to_be_checked()
        expect(question(student, ex.q_num).get_by_label("Your answer (a number)")).to_have_value("3.1416")
        expect(question(student, ex.q_short).get_by_label("Your answer")).to_have_value("Paris")
        expect(question(student, ex.q_essay).get_by_label("Your answer")).to_have_value("Line one\n<b>not bold</b>")
        expect_saved(student, ex.q_short, ex.q_essay)
        assert student.locator(".q-prompt b").count() == 0

        # Offline: the change waits on this device, and is saved once the network is back.
        student.context.set_offline(True)
        expect(student.get_by_test_id("connection-state")).not_to_have_attribute("data-state", "live")
        short = question(student, ex.q_short)
        short.get_by_label("Your answer").fill("Lyon")
        expect(short.get_by_test_id("save-state")).to_have_attribute("data-state", "queued", timeout=WAIT_MS)
        assert stored(attempt.pk, ex.q_short) == "Paris"
        student.context.set_offline(False)
        expect_saved(student, ex.q_short)
        wait_until(lambda: stored(attempt.pk, ex.q_short) == "Lyon", what="the offline answer to be saved")
        expect_live(student)

        # Submit, with a confirmation; the text stays visible, read-only; the board sees it.
        student.get_by_test_id("submit").click()
        expect(student.get_by_test_id("submit-summary")).to_contain_text("You answered 6 of 6 questions")
        student.get_by_test_id("submit-confirm").click()
        expect(student.get_by_test_id("attempt-state")).to_contain_text("Submitted")
        short_input = question(student, ex.q_short).get_by_label("Your answer")
        expect(short_input).to_have_value("Lyon")
        expect(short_input).not_to_be_editable()
        expect(row.get_by_test_id("row-state")).to_have_text(re.compile("^Submitted"))
        db(attempt.refresh_from_db)
        assert attempt.state == Attempt.State.SUBMITTED and attempt.finish_reason == "student"
        assert stored(attempt.pk, ex.q_short) == "Lyon"
        assert student.errors == [] and board.errors == []


TWO_HOURS_AHEAD = "(() => { const real = Date.now.bind(Date); Date.now = () => real() + 2 * 3600 * 1000; })();"


def test_countdown_keeps_to_the_server_clock_when_the_page_clock_is_wrong(world, server_factory):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    server = server_factory(kind="uvicorn")
    with browser() as b:
        page = open_page(b, server, world.student_a, f"/attempts/{attempt.pk}/", init_script=TWO_HOURS_AHEAD)
        assert page.evaluate("Date.now() - new Date().getTime()") > 3600 * 1000  # the page's clock is off
        expect_live(page)
        countdown = page.get_by_test_id("countdown")
        expect(countdown).to_have_attribute("data-phase", "running")
        shown = countdown_seconds(page)
        remaining = (attempt.deadline - timezone.now()).total_seconds()
        assert abs(shown - remaining) <= 2, (shown, remaining)

        # Extra time from a teacher reaches the open page.
        db(services.extra_time_grant, attempt_id=attempt.pk, actor=world.teacher_a, minutes=10)
        expect(page.get_by_test_id("notice")).to_contain_text("10 more minutes")
        db(attempt.refresh_from_db)
        shown = countdown_seconds(page)
        remaining = (attempt.deadline - timezone.now()).total_seconds()
        assert abs(shown - remaining) <= 2, (shown, remaining)
        assert page.errors == []


def test_sequential_exam_goes_forward_only_and_warns_about_a_second_tab(world, server_factory):
    ex = ExamWorld(world, sequential=True, shuffle_questions=False)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    order = [item["question"] for item in attempt.layout]
    server = server_factory(kind="uvicorn")
    with browser() as b:
        page = open_page(b, server, world.student_a, f"/attempts/{attempt.pk}/")
        expect_live(page)
        visible = page.get_by_test_id("question").locator("visible=true")
        expect(visible).to_have_count(1)
        expect(visible).to_have_attribute("data-question-id", str(order[0]))
        expect(page.get_by_test_id("question-nav")).to_be_hidden()  # no jumping around
        visible.get_by_label("4", exact=True).check()
        page.get_by_test_id("next").click()  # the pending save goes first, then the next question is shown
        expect(visible).to_have_attribute("data-question-id", str(order[1]))
        expect(visible).to_have_count(1)
        wait_until(lambda: stored(attempt.pk, ex.q_single) == [1], what="the first answer")
        expect(question(page, ex.q_single).get_by_test_id("save-state")).to_have_text("Saved")
        visible.get_by_label("2", exact=True).check()
        expect_saved(page, ex.q_multi)

        # A reload comes back to the furthest question, not to the first.
        page.reload()
        expect_live(page)
        expect(visible).to_have_attribute("data-question-id", str(order[1]))

        # A second tab on the same attempt: both show the warning; closing it clears it.
        other = page.context.new_page()
        other.goto(f"{server.origin}/attempts/{attempt.pk}/")
        expect(other.get_by_test_id("second-tab")).to_be_visible()
        expect(page.get_by_test_id("second-tab")).to_be_visible()
        other.close()
        expect(page.get_by_test_id("second-tab")).to_be_hidden(timeout=WAIT_MS)
        assert page.errors == []


def test_answers_and_submit_go_over_http_when_the_socket_cannot_connect(world, server_factory):
    ex = ExamWorld(world)
    attempt = services.attempt_start(exam=ex.exam, student=world.student_a)
    server = server_factory(kind="uvicorn")
    with browser() as b:
        page = open_page(b, server, world.student_a)
        page.route_web_socket(re.compile(r".*/ws/.*"), lambda ws: ws.close(code=1011))  # a proxy that drops them
        page.goto(f"{server.origin}/attempts/{attempt.pk}/")
        expect(page.get_by_test_id("connection-state")).to_have_attribute("data-state", "reconnecting")
        question(page, ex.q_short).get_by_label("Your answer").fill("Rome")
        expect_saved(page, ex.q_short)
        assert stored(attempt.pk, ex.q_short) == "Rome"
        expect(page.get_by_test_id("countdown")).to_have_attribute("data-phase", "running")  # the HTTP clock
        shown = countdown_seconds(page)
        assert abs(shown - (attempt.deadline - timezone.now()).total_seconds()) <= 2
        page.get_by_test_id("submit").click()
        page.get_by_test_id("submit-confirm").click()
        expect(page.get_by_test_id("attempt-state")).to_contain_text("Submitted")
        db(attempt.refresh_from_db)
        assert attempt.state == Attempt.State.SUBMITTED
        assert page.errors == []
