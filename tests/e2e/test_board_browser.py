"""The shared whiteboard in real browsers: a teacher and a student on one real uvicorn process.

Two browser contexts (two people, two cookies) open the same session page and draw on the board; each test
checks what both of them see: strokes drawn at the same time reach both screens with the same ids, each
person's cursor shows on the other's screen with their name, a late joiner gets the board from the server,
and a stroke drawn into a board the teacher locked meanwhile is refused with a visible notice and taken off
the student's screen (it never reaches the teacher). Waits are on locators (Playwright's `expect`), not sleeps.
"""

from __future__ import annotations

import contextlib

import pytest
from playwright.sync_api import expect

from classrooms import selectors
from classrooms.models import CollabDocument
from tests.e2e.browser import SessionPage, browser

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 15000
LAPTOP = {"viewport": {"width": 1280, "height": 900}}
TABLET = {"viewport": {"width": 1024, "height": 768}}
PEN = "[data-testid=board-element][data-type=pen]"


class Drawer(SessionPage):
    """One signed-in browser context on the session page, with the board in view."""

    def __init__(self, b, server, user, session, **context_args):
        super().__init__(b, server, user, session, wait_ms=WAIT_MS, **context_args)
        self.wait_can_draw(True)

    def wait_can_draw(self, allowed: bool) -> None:
        expect(self.tid("board-edit-state")).to_have_attribute("data-allowed", "true" if allowed else "false",
                                                               timeout=WAIT_MS)

    def pens(self):
        return self.page.locator(PEN)

    def pen_ids(self) -> set[str]:
        return set(self.pens().evaluate_all("nodes => nodes.map(n => n.dataset.elementId)"))

    def begin(self, fx: float, fy: float) -> None:
        """Press the mouse at a point given as fractions of the board's on-screen size."""
        self.tid("board-svg").scroll_into_view_if_needed()
        self.box = self.tid("board-svg").bounding_box()
        self.page.mouse.move(*self._at(fx, fy))
        self.page.mouse.down()

    def move(self, fx: float, fy: float) -> None:
        self.page.mouse.move(*self._at(fx, fy), steps=4)

    def end(self) -> None:
        self.page.mouse.up()

    def stroke(self, points: list[tuple[float, float]]) -> None:
        self.begin(*points[0])
        for p in points[1:]:
            self.move(*p)
        self.end()

    def _at(self, fx: float, fy: float) -> tuple[float, float]:
        return self.box["x"] + self.box["width"] * fx, self.box["y"] + self.box["height"] * fy


@contextlib.contextmanager
def board_room(world, server_factory):
    server = server_factory(kind="uvicorn")
    with browser() as b:
        teacher = Drawer(b, server, world.teacher_a, world.session_a, **LAPTOP)
        student = Drawer(b, server, world.student_a, world.session_a, **TABLET)
        yield server, b, teacher, student
        for person in (teacher, student):
            assert person.errors == [], person.errors


def test_two_people_draw_at_once_and_both_see_both_strokes(world, server_factory):
    with board_room(world, server_factory) as (server, b, teacher, student):
        expect(teacher.tid("board-tool-pen")).to_have_attribute("aria-pressed", "true")
        expect(student.tid("board-tool-pen")).to_have_attribute("aria-pressed", "true")

        # Both hold their pen down and move in turns: two strokes in progress at the same time.
        teacher.begin(0.2, 0.2)
        student.begin(0.2, 0.7)
        for i in range(1, 9):
            teacher.move(0.2 + i * 0.05, 0.2 + (i % 2) * 0.05)
            student.move(0.2 + i * 0.05, 0.7 - (i % 2) * 0.05)
        teacher.end()
        student.end()

        for person in (teacher, student):
            expect(person.pens()).to_have_count(2)
        assert teacher.pen_ids() == student.pen_ids()
        authors = {teacher.page.locator(f"{PEN}[data-element-id='{i}']").get_attribute("data-author")
                   for i in teacher.pen_ids()}
        assert authors == {str(world.teacher_a.pk), str(world.student_a.pk)}
        # Each stroke is a smoothed path through all its points, the same on both screens.
        for author, other in ((teacher, student), (student, teacher)):
            mine = author.page.locator(f"{PEN}[data-author='{author.user.pk}'] path")
            d = mine.get_attribute("d")
            assert d.count("Q") >= 20, d
            expect(other.page.locator(f"{PEN}[data-author='{author.user.pk}'] path")).to_have_attribute("d", d)

        # Each sees the other's cursor, labelled with the other's name.
        remote = teacher.page.locator(f"[data-testid=board-cursor][data-user-id='{world.student_a.pk}']")
        expect(remote).to_be_visible()
        expect(remote).to_contain_text(world.student_a.public_name)
        expect(student.page.locator(f"[data-testid=board-cursor][data-user-id='{world.teacher_a.pk}']")).to_be_visible()

        # Undo is per person: the student's Ctrl+Z takes back the student's stroke only, on both screens.
        student.tid("board-svg").focus()
        student.page.keyboard.press("Control+z")
        for person in (teacher, student):
            expect(person.pens()).to_have_count(1)
            expect(person.page.locator(f"{PEN}[data-author='{world.teacher_a.pk}']")).to_have_count(1)
        student.page.keyboard.press("Control+Shift+z")
        for person in (teacher, student):
            expect(person.pens()).to_have_count(2)

        # A late joiner (a fresh page for the student) gets both strokes from the server.
        late = Drawer(b, server, world.student_a, world.session_a, **TABLET)
        expect(late.pens()).to_have_count(2)
        drawn = teacher.pen_ids()
        assert late.pen_ids() == drawn
        assert late.errors == []
    # And they are stored, with their authors (read after the browser's event loop has stopped).
    pens = stored_pens(world)
    assert set(pens) == drawn
    assert sorted(pens.values()) == sorted([world.teacher_a.pk, world.student_a.pk])


def stored_pens(world) -> dict[str, int]:
    """The pen strokes of the session's stored board: element id → author."""
    from pycrdt import Doc, Map

    document = CollabDocument.objects.get(session=world.session_a, kind="board")
    doc = Doc()
    doc.apply_update(selectors.collab_state(document))
    elements = doc.get("elements", type=Map)
    return {key: int(el.get("author")) for key, el in elements.items() if el.get("type") == "pen"}


def test_locked_board_refuses_the_students_stroke_with_a_notice(world, server_factory):
    with board_room(world, server_factory) as (server, b, teacher, student):
        student.stroke([(0.3, 0.3), (0.4, 0.35), (0.5, 0.3)])
        expect(teacher.pens()).to_have_count(1)
        kept = student.pen_ids()

        # Locked while the student is here: the drawing tools turn off and say why.
        expect(teacher.page.get_by_test_id("session-controls")).to_be_visible()
        lock = teacher.page.get_by_test_id("class-lock-whiteboard")
        lock.check()
        student.wait_can_draw(False)
        expect(student.tid("board-edit-state")).to_contain_text("turned off whiteboard")
        expect(student.tid("board-tool-pen")).to_be_disabled()
        lock.uncheck()
        student.wait_can_draw(True)

        # Locked while the student is offline: what they draw meanwhile is refused when they come back.
        student.context.set_offline(True)
        student.page.evaluate("() => aulaCollab.socket.ws && aulaCollab.socket.ws.close()")
        lock.check()
        student.stroke([(0.3, 0.6), (0.45, 0.7), (0.6, 0.6), (0.7, 0.7)])
        expect(student.pens()).to_have_count(2)  # on the student's screen for now
        student.context.set_offline(False)

        notice = student.tid("board-notice")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("not added")
        expect(notice).to_have_attribute("data-code", "locked")
        expect(student.pens()).to_have_count(1)  # the refused stroke is gone
        assert student.pen_ids() == kept
        student.wait_can_draw(False)
        expect(student.tid("board-edit-state")).to_contain_text("turned off whiteboard")

        # The teacher never saw it, and a fresh look at the board has only the first stroke.
        assert teacher.pen_ids() == kept
        teacher.page.reload()
        teacher.wait_can_draw(True)
        expect(teacher.pens()).to_have_count(1)
        assert teacher.pen_ids() == kept
    assert set(stored_pens(world)) == kept  # the refused stroke never reached the stored board


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 60, 60)).save(out, "PNG")
    return out.getvalue()


def test_shapes_notes_images_pages_and_following_the_presenter(world, server_factory):
    hostile = "<img src=x onerror=alert(1)> note"
    with board_room(world, server_factory) as (server, b, teacher, student):
        t, s = teacher, student
        for tool, points in (("line", [(0.1, 0.1), (0.3, 0.3)]), ("arrow", [(0.35, 0.1), (0.5, 0.3)]),
                             ("rect", [(0.55, 0.1), (0.7, 0.3)]), ("ellipse", [(0.75, 0.1), (0.95, 0.3)])):
            t.tid(f"board-tool-{tool}").click()
            t.stroke(points)
            expect(s.page.locator(f"[data-testid=board-element][data-type={tool}]")).to_have_count(1)

        # A sticky note's text is typed live into the shared document and shown as text, never as markup.
        t.tid("board-tool-sticky").click()
        t.begin(0.6, 0.6)
        t.end()
        expect(t.tid("board-text-editor")).to_be_focused()
        t.page.keyboard.type(hostile)
        t.page.keyboard.press("Escape")
        sticky = s.page.locator("[data-testid=board-element][data-type=sticky]")
        expect(sticky).to_have_text(hostile)
        assert s.tid("board-svg").locator("img").count() == 0

        # A course image: uploaded by the teacher, placed on the board, served to the student.
        t.tid("board-tool-image").click()
        expect(t.tid("board-upload")).to_be_visible()
        t.tid("board-upload-file").set_input_files(files=[{"name": "red.png", "mimeType": "image/png",
                                                           "buffer": _png(300, 200)}])
        t.tid("board-upload-send").click()
        image = s.page.locator("[data-testid=board-element][data-type=image] image")
        expect(image).to_have_count(1)
        assert image.get_attribute("href").startswith(f"/sessions/{world.session_a.pk}/collab/assets/")
        assert image.evaluate("n => fetch(n.getAttribute('href')).then(r => r.headers.get('content-type'))") \
            == "image/png"

        # The student erases their own stroke but not the teacher's rectangle.
        s.stroke([(0.1, 0.8), (0.3, 0.85), (0.4, 0.8)])
        expect(t.pens()).to_have_count(1)
        s.tid("board-tool-eraser").click()
        s.stroke([(0.2, 0.75), (0.2, 0.9)])
        expect(t.pens()).to_have_count(0)
        s.stroke([(0.55, 0.2), (0.7, 0.2)])  # across the rectangle's edges
        s.tid("board-tool-pen").click()
        s.stroke([(0.1, 0.5), (0.2, 0.5)])  # a later edit that would carry the rectangle's deletion
        expect(t.pens()).to_have_count(1)
        expect(t.page.locator("[data-testid=board-element][data-type=rect]")).to_have_count(1)

        # What the teacher selects is outlined in the teacher's colour on the student's screen.
        t.tid("board-tool-select").click()
        t.begin(0.55, 0.2)  # on the rectangle's left edge
        t.end()
        rect_id = t.page.locator("[data-testid=board-element][data-type=rect]").get_attribute("data-element-id")
        expect(t.page.locator(f"[data-testid=board-selection][data-element-id='{rect_id}']")).to_have_count(1)
        expect(s.page.locator(f"[data-testid=board-remote-selection][data-element-id='{rect_id}']"
                              f"[data-user-id='{world.teacher_a.pk}']")).to_have_count(1)

        # The teacher presents: the student follows to a new page and the teacher's zoom.
        t.tid("board-present").click()
        t.tid("board-page-add").click()
        expect(s.page.locator("[data-testid=board-page]")).to_have_count(2)
        expect(s.page.locator("[data-testid=board-page][aria-current=page]")).to_have_text("Page 2")
        expect(s.tid("board-follow-note")).to_contain_text(f"Following {world.teacher_a.public_name}")
        t.tid("board-zoom-in").click()
        expect(s.tid("board-zoom-fit")).to_have_text(t.tid("board-zoom-fit").inner_text())
        t.tid("board-tool-pen").click()
        t.stroke([(0.3, 0.3), (0.5, 0.4)])
        expect(s.pens()).to_have_count(1)  # page 2 holds only the teacher's new stroke
        # Zooming on their own stops following; the teacher's next page change no longer moves the student.
        s.tid("board-zoom-out").click()
        expect(s.tid("board-follow")).to_have_attribute("aria-pressed", "false")
        t.page.locator("[data-testid=board-page]").first.click()
        expect(t.page.locator("[data-testid=board-page][aria-current=page]")).to_have_text("Page 1")
        s.page.wait_for_timeout(500)
        expect(s.page.locator("[data-testid=board-page][aria-current=page]")).to_have_text("Page 2")
