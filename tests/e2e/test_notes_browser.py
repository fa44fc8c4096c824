"""The shared notes in real browsers: a teacher and a student on one real uvicorn process.

Two browser contexts (two people, two cookies) open the same session page and write in the notes at the same
time; each test checks what both of them see: both texts on both screens, each person's caret on the other's
screen where that person is writing, the authorship view naming both writers with the right text for each,
a notes lock that makes the student's editor read-only with the reason (and refuses, visibly, what the student
wrote offline meanwhile), and the history slider showing an
earlier saved version and going back to live. Waits are on locators (Playwright's `expect`) or on the database,
not sleeps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time

import pytest
from playwright.sync_api import expect

from classrooms import collab_export, collab_services, selectors, services
from classrooms.models import CollabCheckpoint, CollabDocument
from tests.e2e.browser import SessionPage, browser, db

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 15000
LAPTOP = {"viewport": {"width": 1280, "height": 900}}
TABLET = {"viewport": {"width": 1024, "height": 768}}


class Writer(SessionPage):
    """One signed-in browser context on the session page, with the notes loaded."""

    def __init__(self, b, server, user, session, **context_args):
        super().__init__(b, server, user, session, wait_ms=WAIT_MS, **context_args)
        self.wait_can_write(True)

    @property
    def text(self):
        return self.tid("notes-text")

    def wait_can_write(self, allowed: bool) -> None:
        state = self.tid("notes-edit-state")
        expect(state).to_have_attribute("data-allowed", "true" if allowed else "false")
        if allowed:
            expect(state).to_have_text("You can write.")  # connected and the document loaded
        expect(self.text).to_have_attribute("contenteditable", "true" if allowed else "false")

    def lines(self):
        return self.text.locator("p")


def stored_notes(session) -> str:
    document = CollabDocument.objects.get(session=session, kind="notes")
    return collab_export.notes_markdown(selectors.collab_state(document))


def wait_stored(session, needle: str) -> None:
    """Until the server has stored the notes with `needle` in them (what a history version is made from)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while needle not in db(stored_notes, session):
        assert time.monotonic() < deadline, f"{needle!r} never stored"
        time.sleep(0.1)


def compact(document) -> CollabCheckpoint:
    return db(collab_services.document_compact, document_id=document.pk)


def lock_notes(world, locked: bool) -> None:
    db(services.feature_lock, session=world.session_a, actor=world.teacher_a, feature="notes", locked=locked)


@contextlib.contextmanager
def notes_room(world, server_factory):
    server = server_factory(kind="uvicorn")
    with browser() as b:
        teacher = Writer(b, server, world.teacher_a, world.session_a, **LAPTOP)
        student = Writer(b, server, world.student_a, world.session_a, **TABLET)
        yield server, b, teacher, student
        for person in (teacher, student):
            assert person.errors == [], person.errors


def test_two_people_write_at_once_and_both_see_both_texts(world, server_factory):
    with notes_room(world, server_factory) as (server, b, teacher, student):
        for person in (teacher, student):  # the include renders as a card, its template comment does not show
            expect(person.page.locator("main")).not_to_contain_text("{#")
            expect(person.page.locator("main")).not_to_contain_text("{%")

        # Two lines to write into, one each.
        teacher.text.click()
        teacher.page.keyboard.type("Agenda:")
        teacher.page.keyboard.press("Enter")
        teacher.page.keyboard.type("Questions:")
        expect(student.lines()).to_have_text(["Agenda:", "Questions:"])
        teacher.page.keyboard.press("Control+Home")
        teacher.page.keyboard.press("End")
        student.text.click()
        student.page.keyboard.press("Control+End")

        # Both type at the same time, word by word in turns: each one's words land where that person writes.
        mine = ["chapter", "one", "<img src=x onerror=alert(1)>", "recap"]
        theirs = ["what", "about", "chapter", "two?"]
        for t_word, s_word in zip(mine, theirs, strict=True):
            teacher.page.keyboard.type(" " + t_word)
            student.page.keyboard.type(" " + s_word)
        first = "Agenda: " + " ".join(mine)
        second = "Questions: " + " ".join(theirs)
        for person in (teacher, student):
            expect(person.lines()).to_have_text([first, second])
            expect(person.text.locator("img")).to_have_count(0)  # typed markup stays text

        # Each sees the other's caret, with the other's name, where the other is writing.
        for me, other, index in ((teacher, student, len(first) + 1 + len(second)), (student, teacher, len(first))):
            caret = me.page.locator(f"[data-testid=notes-cursor][data-user-id='{other.user.pk}']")
            expect(caret).to_have_count(1)
            expect(caret.locator(".ql-cursor-name")).to_have_text(other.user.public_name)
            me.page.wait_for_function(
                "([uid, index]) => { const c = aulaNotes.cursors.cursors().find(c => c.id === String(uid));"
                " return c && c.range && c.range.index === index && c.range.length === 0; }",
                arg=[other.user.pk, index])

        # Authorship: two authors in the legend, each run of text coloured as its writer's.
        teacher.tid("notes-authorship-toggle").click()
        expect(teacher.tid("notes-authorship-toggle")).to_have_attribute("aria-pressed", "true")
        expect(teacher.tid("notes-editor-wrap")).to_be_hidden()
        legend = teacher.tid("notes-authorship-legend").get_by_test_id("notes-author")
        expect(legend).to_have_count(2)
        expect(teacher.tid("notes-authorship-legend")).to_contain_text(world.teacher_a.public_name)
        expect(teacher.tid("notes-authorship-legend")).to_contain_text(world.student_a.public_name)
        view = teacher.tid("notes-authorship-text")
        runs = {}
        for uid in (world.teacher_a.pk, world.student_a.pk):
            runs[uid] = "".join(view.locator(f".notes-run[data-user-id='{uid}']").all_text_contents())
        assert runs[world.student_a.pk] == " " + " ".join(theirs)
        assert runs[world.teacher_a.pk] == f"Agenda: {' '.join(mine)}\nQuestions:"
        expect(view.locator("img")).to_have_count(0)
        colours = view.locator(".notes-run").evaluate_all(
            "spans => [...new Set(spans.map(s => s.dataset.userId + ' ' + s.style.getPropertyValue('--author')))]")
        assert len(colours) == 2 and len({c.split()[1] for c in colours}) == 2, colours
        # The colours are a view: nothing was written into the shared document.
        assert teacher.page.evaluate("() => aulaNotes.ytext.toDelta().every(op => !op.attributes)")

        # A late joiner gets the notes from the server; hiding authorship gives the editor back.
        late = Writer(b, server, world.student_a, world.session_a, **TABLET)
        expect(late.lines()).to_have_text([first, second])
        assert late.errors == []
        teacher.tid("notes-authorship-toggle").click()
        expect(teacher.tid("notes-authorship")).to_be_hidden()
        teacher.wait_can_write(True)


def test_locked_notes_are_read_only_with_the_reason(world, server_factory):
    with notes_room(world, server_factory) as (server, b, teacher, student):
        student.text.click()
        student.page.keyboard.type("My idea")
        expect(teacher.lines()).to_have_text(["My idea"])

        # The teacher's lock goes through the one write path (what the console's socket calls), and reaches the
        # notes socket of every server process at once.
        lock_notes(world, True)
        student.wait_can_write(False)
        expect(student.tid("notes-edit-state")).to_contain_text("Read-only")
        expect(student.tid("notes-edit-state")).to_contain_text("turned off notes")
        student.text.click(force=True)
        student.page.keyboard.type(" more")
        expect(student.lines()).to_have_text(["My idea"])
        teacher.wait_can_write(True)  # the teacher still writes, and the student sees it
        teacher.text.click()
        teacher.page.keyboard.press("Control+End")
        teacher.page.keyboard.type(" (teacher)")
        expect(student.lines()).to_have_text(["My idea (teacher)"])

        lock_notes(world, False)
        student.wait_can_write(True)
        student.text.click()
        student.page.keyboard.press("Control+End")
        student.page.keyboard.type("!")
        expect(teacher.lines()).to_have_text(["My idea (teacher)!"])

        # Locked while the student is offline: what they write meanwhile is refused when they come back, they
        # are told, and their editor goes back to the class's copy (and to read-only).
        student.context.set_offline(True)
        student.page.evaluate("() => aulaCollab.socket.ws && aulaCollab.socket.ws.close()")
        lock_notes(world, True)
        student.page.keyboard.type(" offline")
        expect(student.lines()).to_have_text(["My idea (teacher)! offline"])  # on the student's screen for now
        student.context.set_offline(False)
        notice = student.tid("notes-notice")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("not added")
        expect(notice).to_have_attribute("data-code", "locked")
        expect(student.lines()).to_have_text(["My idea (teacher)!"])
        student.wait_can_write(False)
        teacher.page.reload()
        teacher.wait_can_write(True)
        expect(teacher.lines()).to_have_text(["My idea (teacher)!"])
        assert "offline" not in db(stored_notes, world.session_a)


def test_history_slider_shows_an_earlier_version_then_back_to_live(world, server_factory):
    with notes_room(world, server_factory) as (server, b, teacher, student):
        document = db(CollabDocument.objects.get, session=world.session_a, kind="notes")
        student.text.click()
        student.page.keyboard.type("First draft")
        wait_stored(world.session_a, "First draft")
        older = compact(document)
        # A version is kept per minute: this one is from two minutes ago, so the next compaction adds one.
        db(CollabCheckpoint.objects.filter(pk=older.pk).update, created_at=older.created_at - dt.timedelta(minutes=2))
        student.page.keyboard.type(" and the fix")
        wait_stored(world.session_a, "First draft and the fix")
        newer = compact(document)
        assert newer.pk != older.pk
        student.page.keyboard.type(", live")  # after the last version: only the live notes have it
        expect(teacher.lines()).to_have_text(["First draft and the fix, live"])

        teacher.tid("notes-history-open").click()
        history = teacher.tid("notes-history")
        expect(history).to_be_visible()
        expect(teacher.tid("notes-editor-wrap")).to_be_hidden()
        slider = history.get_by_test_id("history-slider")
        expect(slider).to_have_attribute("max", "1")
        expect(slider).to_have_value("1")
        shown = history.get_by_test_id("notes-history-text").locator(".ql-editor")
        expect(shown).to_have_text("First draft and the fix")
        expect(history.get_by_test_id("history-when")).to_contain_text("2 of 2")
        expect(history.get_by_test_id("history-view")).to_have_attribute("data-version-id", str(newer.pk))
        expect(shown).to_have_attribute("contenteditable", "false")

        slider.focus()
        teacher.page.keyboard.press("Home")
        expect(history.get_by_test_id("history-view")).to_have_attribute("data-version-id", str(older.pk))
        expect(shown).to_have_text("First draft")
        expect(history.get_by_test_id("history-when")).to_contain_text("1 of 2")

        # The version shown is a copy: the live notes kept going meanwhile, for both.
        student.page.keyboard.type(" again")
        expect(student.lines()).to_have_text(["First draft and the fix, live again"])
        expect(shown).to_have_text("First draft")

        history.get_by_test_id("history-live").click()
        expect(history).to_be_hidden()
        expect(teacher.lines()).to_have_text(["First draft and the fix, live again"])
        teacher.wait_can_write(True)
