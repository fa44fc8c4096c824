"""Board and notes exports (classrooms/collab_export.py) from documents built with pycrdt in the docs/collab.md
schema. Pure functions: no database."""

from __future__ import annotations

import functools
import io
import re
import zlib

import pytest
from PIL import Image
from pycrdt import Array, Doc, Map, Text

from classrooms import collab_export
from classrooms.collab_export import board_pdf, board_png, notes_markdown, notes_pdf, read_board, read_notes

# --- a small reader for the PDFs fpdf2 writes (classic xref, Flate streams): pages, operators, text, links ---

_OBJ_RE = re.compile(rb"(\d+) 0 obj(.*?)endobj", re.S)
_STREAM_RE = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
_TEXT_OP_RE = re.compile(rb"/(F\d+) [\d.]+ Tf|\(((?:\\.|[^\\)])*)\) Tj", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(raw: bytes) -> bytes:
    def sub(match: re.Match) -> bytes:
        body = match.group(1)
        if body[:1].isdigit():
            return bytes([int(body, 8)])
        return _ESCAPES.get(body, body)

    return re.sub(rb"\\([0-7]{1,3}|.)", sub, raw, flags=re.S)


class PdfDoc:
    def __init__(self, data: bytes) -> None:
        assert data.startswith(b"%PDF-")
        self.objects = {int(m.group(1)): m.group(2) for m in _OBJ_RE.finditer(data)}

    def stream(self, number: int) -> bytes:
        obj = self.objects[number]
        raw = _STREAM_RE.search(obj).group(1)
        return zlib.decompress(raw) if b"/FlateDecode" in obj else raw

    def _ref(self, obj: bytes, key: bytes) -> int | None:
        match = re.search(rb"/" + key + rb" (\d+) 0 R", obj)
        return int(match.group(1)) if match else None

    def _dict(self, obj: bytes, key: bytes) -> bytes:
        """The inline dictionary under `key`, or the referenced object's body."""
        match = re.search(rb"/" + key + rb"\s*<<(.*?)>>", obj, re.S)
        if match:
            return match.group(1)
        ref = self._ref(obj, key)
        return self.objects[ref] if ref is not None else b""

    def pages(self) -> list[int]:
        root = next(body for body in self.objects.values() if re.search(rb"/Type /Pages\b", body))
        kids = re.search(rb"/Kids \[(.*?)\]", root, re.S).group(1)
        return [int(n) for n in re.findall(rb"(\d+) 0 R", kids)]

    def content(self, page: int) -> bytes:
        return self.stream(self._ref(self.objects[page], b"Contents"))

    def _fonts(self, page: int) -> dict[str, dict[int, str] | None]:
        resources = self._dict(self.objects[page], b"Resources")
        fonts: dict[str, dict[int, str] | None] = {}
        for name, number in re.findall(rb"/(F\d+) (\d+) 0 R", self._dict(resources, b"Font")):
            cmap_ref = self._ref(self.objects[int(number)], b"ToUnicode")
            fonts[name.decode()] = self._cmap(cmap_ref) if cmap_ref else None
        return fonts

    def _cmap(self, number: int) -> dict[int, str]:
        text = self.stream(number).decode("latin-1")
        mapping: dict[int, str] = {}
        for block in re.findall(r"beginbfchar(.*?)endbfchar", text, re.S):
            for code, uni in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                mapping[int(code, 16)] = bytes.fromhex(uni).decode("utf-16-be")
        for block in re.findall(r"beginbfrange(.*?)endbfrange", text, re.S):
            for lo, hi, start in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                for offset in range(int(hi, 16) - int(lo, 16) + 1):
                    mapping[int(lo, 16) + offset] = chr(int(start, 16) + offset)
        return mapping

    def text(self, page: int) -> list[str]:
        """The strings shown on a page, in drawing order."""
        fonts = self._fonts(page)
        cmap = None
        shown = []
        for match in _TEXT_OP_RE.finditer(self.content(page)):
            if match.group(1):
                cmap = fonts[match.group(1).decode()]
                continue
            raw = _unescape(match.group(2))
            if cmap is None:  # a core font: one byte per character, Latin-1
                shown.append(raw.decode("latin-1"))
            else:
                shown.append(
                    "".join(cmap.get(int.from_bytes(raw[i : i + 2], "big"), "\ufffd") for i in range(0, len(raw), 2))
                )
        return shown

    def links(self) -> list[str]:
        body = b"".join(self.objects.values())
        return [_unescape(m).decode("latin-1") for m in re.findall(rb"/URI \(((?:\\.|[^\\)])*)\)", body, re.S)]


def pdf_colour(hex_colour: str, op: str) -> bytes:
    """The operator fpdf2 writes for a colour (e.g. "0.898 0.2235 0.2078 RG")."""
    parts = []
    for i in (1, 3, 5):
        value = int(hex_colour[i : i + 2], 16) / 255
        parts.append("0" if value == 0 else "1" if value == 1 else f"{value:.4f}".rstrip("0"))
    return f"{' '.join(parts)} {op}".encode()


# --- documents in the schema ---

RED, BLUE, GREEN, PURPLE = "#e53935", "#1e88e5", "#43a047", "#8e24aa"


def board_doc(pages: list[tuple[str, str]], elements: list[dict]) -> Doc:
    doc = Doc()
    with doc.transaction():
        order = doc.get("pages", type=Array)
        meta = doc.get("pagemeta", type=Map)
        store = doc.get("elements", type=Map)
        order.extend([page for page, _ in pages])
        for page, title in pages:
            meta[page] = Map({"title": title})
        for element in elements:
            fields = dict(element)
            if "points" in fields:
                fields["points"] = Array([float(v) for v in fields["points"]])
            if "text" in fields:
                fields["text"] = Text(fields["text"])
            store[fields["id"]] = Map(fields)
    return doc


def el(id: str, type: str, page: str = "p1", z: float = 1, **fields) -> dict:
    return {"id": id, "type": type, "page": page, "z": z, "author": 7, **fields}


def png_bytes(colour: tuple[int, int, int], size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def every_type_board() -> Doc:
    """Three pages, stored out of id order, with every element type and Unicode text."""
    return board_doc(
        [("p1", "Kräfte"), ("p3", "Übung 2"), ("p2", "Ответы ✓")],
        [
            el("1-1", "pen", color=RED, width=10, points=[100, 450, 800, 450, 1500, 450]),
            el("1-2", "arrow", z=2, color=BLUE, width=4, x=100, y=100, w=400, h=0),
            el("1-3", "rect", z=3, color="#000000", width=3, fill=GREEN, x=100, y=600, w=300, h=200),
            el("1-4", "ellipse", z=4, color=PURPLE, width=3, fill="", x=900, y=800, w=-300, h=-200),
            el("1-5", "text", z=5, color="#212121", size=32, x=900, y=100, w=500, h=0, text="Grüße, Привет ✓ Δx"),
            el("1-6", "line", page="p3", color=GREEN, width=8, x=100, y=200, w=1400, h=0),
            el("1-7", "sticky", page="p2", color="#000000", size=24, x=100, y=100, w=300, h=300, text="Haftnotiz ✎"),
            el("1-8", "image", page="p2", z=2, x=500, y=100, w=400, h=300, src="/sessions/1/collab/assets/9/"),
            el("1-9", "image", page="p2", z=3, x=1000, y=100, w=400, h=300, src="/sessions/1/collab/assets/404/"),
        ],
    )


def loader(src: str) -> bytes | None:
    return png_bytes((0, 0, 255)) if src.endswith("/9/") else None


@functools.lru_cache(maxsize=8)
def decoded(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def pixel(png: bytes, x: int, y: int) -> tuple[int, int, int]:
    return decoded(png).getpixel((x, y))


def close_to(actual, expected, tolerance=40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


WHITE = (255, 255, 255)
unicode_font = pytest.mark.skipif(not collab_export.font_files(), reason="no DejaVu TTF on this machine")


# --- board → PDF ---


@unicode_font
def test_board_pdf_has_one_page_per_board_page_in_order_with_header_and_unicode_text():
    pdf = PdfDoc(board_pdf(every_type_board().get_update(), title="Physik 10b", subtitle="12. März", load_image=loader))
    pages = pdf.pages()
    assert len(pages) == 3
    texts = [pdf.text(page) for page in pages]
    assert texts[0][:2] == ["page 1 of 3", "Physik 10b — 12. März · Kräfte"]
    assert texts[1][:2] == ["page 2 of 3", "Physik 10b — 12. März · Übung 2"]  # `pages` order, not id order
    assert texts[2][:2] == ["page 3 of 3", "Physik 10b — 12. März · Ответы ✓"]
    assert "Grüße, Привет ✓ Δx" in texts[0]
    assert "Haftnotiz ✎" in texts[2]


@unicode_font
def test_board_pdf_draws_each_page_s_own_elements_as_vectors():
    pdf = PdfDoc(board_pdf(every_type_board().get_update(), title="T", load_image=loader))
    first, second, third = (pdf.content(page) for page in pdf.pages())
    # the pen stroke: a polyline of three points in its colour, and nothing of it on the other pages
    assert pdf_colour(RED, "RG") in first and pdf_colour(RED, "RG") not in second + third
    stroke = first[first.index(pdf_colour(RED, "RG")) :]
    assert re.match(rb"[\d. ]+RG\n[\d.]+ w\n[\d.]+ [\d.]+ m\n[\d.]+ [\d.]+ l\n[\d.]+ [\d.]+ l\n S", stroke)
    assert pdf_colour(BLUE, "rg") in first  # the arrow's filled head
    assert pdf_colour(GREEN, "rg") in first and b" re B" in first  # the filled rectangle (stroke and fill)
    assert pdf_colour(PURPLE, "RG") in first and b" c S" in first  # the ellipse (Bézier curves, no fill)
    assert pdf_colour(GREEN, "RG") in second  # the line on the second page
    assert pdf_colour("#fff59d", "rg") in third  # the sticky's default fill
    assert b"/I1 Do" in third or re.search(rb"/I\d+ Do", third)  # the image that loaded
    assert pdf_colour("#f0f0f0", "rg") in third  # the placeholder of the one that did not


def test_board_pdf_draws_in_z_order():
    doc = board_doc(
        [("p1", "")],
        [
            el("b-1", "rect", z=5, color=BLUE, fill=BLUE, x=0, y=0, w=100, h=100),
            el("a-1", "rect", z=9, color=RED, fill=RED, x=50, y=50, w=100, h=100),
            el("c-1", "rect", z=1, color=GREEN, fill=GREEN, x=20, y=20, w=100, h=100),
        ],
    )
    pdf = PdfDoc(board_pdf(doc.get_update(), title="z"))
    content = pdf.content(pdf.pages()[0])
    positions = [content.index(pdf_colour(colour, "rg")) for colour in (GREEN, BLUE, RED)]
    assert positions == sorted(positions)
    png = board_png(doc.get_update())
    assert close_to(pixel(png, 75, 75), (0xE5, 0x39, 0x35))  # red (z 9) over blue (z 5) where they overlap
    assert close_to(pixel(png, 30, 30), (0x1E, 0x88, 0xE5))  # blue over green


def test_board_pdf_without_a_unicode_font_falls_back_to_latin_1(monkeypatch):
    monkeypatch.setattr(collab_export, "font_files", lambda: {})
    doc = board_doc([("p1", "Привет")], [el("1-1", "text", x=10, y=10, size=30, text="Grüße Привет")])
    pdf = PdfDoc(board_pdf(doc.get_update(), title="Ärger ✓"))
    texts = pdf.text(pdf.pages()[0])
    assert texts[:2] == ["page 1 of 1", "Ärger ? · ??????"]
    assert "Grüße ??????" in texts


def test_empty_board_exports_its_first_page():
    pdf = PdfDoc(board_pdf(b"", title="Leer"))
    assert len(pdf.pages()) == 1
    png = Image.open(io.BytesIO(board_png(Doc().get_update())))
    assert png.size == (1600, 900)
    assert png.getextrema() == ((255, 255), (255, 255), (255, 255))


# --- board → PNG ---


def test_board_png_renders_the_first_page_at_the_right_size_with_its_elements():
    state = every_type_board().get_update()
    png = board_png(state, load_image=loader)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1600, 900)
    assert close_to(pixel(png, 800, 450), (0xE5, 0x39, 0x35))  # on the pen stroke
    assert pixel(png, 800, 447) != WHITE  # 10 units wide: 3 above the centre line is still ink
    assert pixel(png, 800, 460) == WHITE  # 10 below is paper
    assert close_to(pixel(png, 250, 700), (0x43, 0xA0, 0x47))  # inside the filled rectangle
    assert pixel(png, 750, 700) == WHITE  # inside the unfilled ellipse (drawn right to left, bottom to top)
    assert close_to(pixel(png, 601, 700), (0x8E, 0x24, 0xAA), 80)  # on the ellipse's outline
    dark = [pixel(png, x, y) for x in range(900, 1400, 4) for y in range(100, 150, 2)]
    assert any(sum(p) < 300 for p in dark)  # the text was drawn


def test_board_png_of_another_page_with_images_and_placeholders():
    state = every_type_board().get_update()
    png = board_png(state, page_id="p2", load_image=loader)
    assert pixel(png, 800, 450) == WHITE  # the first page's stroke is not on this page
    assert close_to(pixel(png, 150, 350), (0xFF, 0xF5, 0x9D))  # sticky fill
    assert close_to(pixel(png, 700, 250), (0, 0, 255))  # the loaded image, stretched to its box
    assert close_to(pixel(png, 1100, 150), (0xF0, 0xF0, 0xF0), 10)  # placeholder for the missing one
    line = board_png(state, page_id="p3")
    assert close_to(pixel(line, 800, 200), (0x43, 0xA0, 0x47))
    assert board_png(state, page_id="nope") == board_png(state)  # an unknown page id (user input): the first page


def test_board_png_scale_is_applied_and_clamped():
    state = every_type_board().get_update()
    half = Image.open(io.BytesIO(board_png(state, scale=0.5)))
    assert half.size == (800, 450)
    assert close_to(half.convert("RGB").getpixel((400, 225)), (0xE5, 0x39, 0x35))
    assert Image.open(io.BytesIO(board_png(state, scale=0.0001))).size == (160, 90)
    assert Image.open(io.BytesIO(board_png(state, scale=float("nan")))).size == (1600, 900)


def test_board_png_is_anti_aliased():
    doc = board_doc([("p1", "")], [el("1-1", "pen", color="#000000", width=6, points=[100, 100, 1500, 800])])
    image = Image.open(io.BytesIO(board_png(doc.get_update()))).convert("L")
    greys = {grey for grey, count in enumerate(image.histogram()) if count}
    assert min(greys) < 60 and any(60 < g < 200 for g in greys)  # edge pixels are blended


# --- hostile documents ---


def hostile_board() -> Doc:
    doc = Doc()
    with doc.transaction():
        pages = doc.get("pages", type=Array)
        pages.extend(["p1", 42, None, "p1", {"x": 1}, "p2"])
        meta = doc.get("pagemeta", type=Map)
        meta["p1"] = "not a map"
        meta["p2"] = Map({"title": Text("T" * 5000 + "\x00\x07")})
        store = doc.get("elements", type=Map)
        store["junk"] = "a string, not a map"
        store["num"] = 12
        store["alien"] = Map({"type": "script", "page": "p1"})
        store["nopage"] = Map({"type": "rect", "x": 1})
        store["orphan"] = Map({"type": "rect", "page": "p9", "x": 1, "y": 1, "w": 10, "h": 10})
        store["bad"] = Map(
            {
                "type": "rect",
                "page": "p1",
                "x": float("nan"),
                "y": float("-inf"),
                "w": 1e308,
                "h": 2**62,
                "width": 1e9,
                "color": "red; background:url(x)",
                "fill": "#12345",
                "z": "top",
            }
        )
        store["pen"] = Map(
            {
                "type": "pen",
                "page": "p1",
                "color": "#GGGGGG",
                "width": -5,
                "points": Array([10.0, 10.0, "x", 5.0, True, 3.0, float("nan"), 1.0, 20.0, 20.0, 30.0]),
            }
        )
        # a plain JSON list rather than a Y.Array: both arrive from browsers, and pycrdt builds long Y.Arrays slowly
        store["long"] = Map({"type": "pen", "page": "p2", "points": [float(i % 1600) for i in range(40_000)]})
        store["text"] = Map({"type": "text", "page": "p1", "text": 123, "size": 1e9, "x": 1, "y": 1})
        store["sticky"] = Map({"type": "sticky", "page": "p1", "text": Text("ü" * 50_000), "w": 1e12, "h": -1e12})
        store["img"] = Map({"type": "image", "page": "p2", "src": ["list"], "x": 0, "y": 0, "w": 10, "h": 10})
    return doc


def test_hostile_values_are_ignored_clamped_or_replaced():
    board = read_board(hostile_board().get_update())
    assert board.pages == ["p1", "p2"]
    assert board.titles["p1"] == "" and board.titles["p2"] == "T" * collab_export.MAX_TITLE_CHARS
    ids = {e.id for page in board.elements.values() for e in page}
    assert ids == {"bad", "pen", "long", "text", "sticky", "img"}
    by_id = {e.id: e for page in board.elements.values() for e in page}
    bad = by_id["bad"]
    assert (bad.x, bad.y, bad.w, bad.h) == (0.0, 0.0, collab_export.COORD_LIMIT, collab_export.COORD_LIMIT)
    assert bad.width == collab_export.MAX_WIDTH and bad.color == (0, 0, 0) and bad.fill is None and bad.z == 0
    pen = by_id["pen"]
    assert pen.points == ((10.0, 10.0), (20.0, 20.0))  # pairs with a non-number or NaN are dropped
    assert pen.width == collab_export.MIN_WIDTH and pen.color == (0, 0, 0)
    assert len(by_id["long"].points) == collab_export.MAX_POINTS_PER_STROKE
    assert by_id["text"].text == "" and by_id["text"].size == collab_export.MAX_FONT
    assert len(by_id["sticky"].text) == collab_export.MAX_TEXT_CHARS
    assert by_id["img"].src == ""


def test_hostile_documents_still_export_in_every_format():
    state = hostile_board().get_update()
    pdf = PdfDoc(board_pdf(state, title="x" * 10_000, subtitle="\x00", load_image=lambda src: b"not an image"))
    assert len(pdf.pages()) == 2
    png = Image.open(io.BytesIO(board_png(state, page_id="p2", load_image=lambda src: 1 / 0)))
    assert png.size == (1600, 900)


def test_text_budget_bounds_the_layout_work(monkeypatch):
    monkeypatch.setattr(collab_export, "MAX_TOTAL_TEXT_CHARS", 250)
    doc = board_doc(
        [("p1", "")], [el(f"1-{i}", "sticky", z=i, x=i, y=i, w=300, h=300, text="x" * 100) for i in range(5)]
    )
    board = read_board(doc.get_update())
    assert board.truncated and sum(len(e.text) for e in board.elements["p1"]) == 250


def test_element_and_point_caps_bound_the_work(monkeypatch):
    monkeypatch.setattr(collab_export, "MAX_ELEMENTS", 10)
    monkeypatch.setattr(collab_export, "MAX_TOTAL_POINTS", 25)
    doc = board_doc(
        [("p1", "")],
        [el(f"1-{i}", "pen", z=i, points=[i, i, i + 5, i + 5, i + 9, i + 9, i, i + 9]) for i in range(30)],
    )
    board = read_board(doc.get_update())
    assert board.truncated
    points = sum(len(e.points) for e in board.elements["p1"])
    assert len(board.elements["p1"]) <= 10 and points <= 25 + 4


def test_image_loader_results_are_checked_and_cached(monkeypatch):
    calls = []

    def load(src):
        calls.append(src)
        return {"/a/": png_bytes((255, 0, 0)), "/big/": b"x" * 100}.get(src)

    doc = board_doc(
        [("p1", "")],
        [
            el("1-1", "image", x=0, y=0, w=100, h=100, src="/a/"),
            el("1-2", "image", z=2, x=200, y=0, w=100, h=100, src="/a/"),
            el("1-3", "image", z=3, x=400, y=0, w=100, h=100, src="/big/"),
        ],
    )
    png = board_png(doc.get_update(), load_image=load)
    assert calls == ["/a/", "/big/"]  # each source loaded once
    assert close_to(pixel(png, 50, 50), (255, 0, 0)) and close_to(pixel(png, 250, 50), (255, 0, 0))
    assert close_to(pixel(png, 420, 50), (0xF0, 0xF0, 0xF0), 10)  # undecodable bytes: placeholder
    monkeypatch.setattr(collab_export, "MAX_IMAGE_PIXELS", 100)  # 40 × 30 is now too many pixels
    assert close_to(pixel(board_png(doc.get_update(), load_image=load), 20, 50), (0xF0, 0xF0, 0xF0), 10)


def test_wrap_text_breaks_on_words_and_inside_long_words():
    measure = len  # one unit per character
    assert collab_export.wrap_text("aaa bbb ccc", 7, measure) == ["aaa bbb", "ccc"]
    assert collab_export.wrap_text("abcdefghij", 4, measure) == ["abcd", "efgh", "ij"]
    assert collab_export.wrap_text("a\n\nb", 4, measure) == ["a", "", "b"]
    assert collab_export.wrap_text("no wrap at all", None, measure) == ["no wrap at all"]


# --- notes ---

KEYS = ("bold", "italic", "strike", "underline", "code", "link", "header", "list", "indent", "blockquote", "code-block")


def notes_doc(ops: list[tuple[str, dict]]) -> Doc:
    """A notes document typed run by run as Quill would (each run's attributes set, the others cleared)."""
    doc = Doc()
    body = doc.get("body", type=Text)
    position = 0
    for text, attrs in ops:
        body.insert(position, text, {key: attrs.get(key) for key in KEYS})
        position += len(text.encode())  # pycrdt indexes this text in UTF-8 bytes
    return doc


NOTES = [
    ("Wöchentliche Notizen", {}),
    ("\n", {"header": 1}),
    ("Some ", {}),
    ("bold", {"bold": True}),
    (" and ", {}),
    ("both", {"bold": True, "italic": True}),
    (" text ", {"italic": True}),
    ("gone", {"strike": True}),
    ("\n", {}),
    ("see ", {}),
    ("the *docs*", {"link": "https://example.com/a b(c)"}),
    (" and ", {}),
    ("bad", {"link": "javascript:alert(1)"}),
    ("\n", {}),
    ("Section", {}),
    ("\n", {"header": 2}),
    ("first", {}),
    ("\n", {"list": "ordered"}),
    ("second", {}),
    ("\n", {"list": "ordered"}),
    ("nested", {}),
    ("\n", {"list": "bullet", "indent": 1}),
    ("third", {}),
    ("\n", {"list": "ordered"}),
    ("done", {}),
    ("\n", {"list": "checked"}),
    ("open", {}),
    ("\n", {"list": "unchecked"}),
    ("quoted", {}),
    ("\n", {"blockquote": True}),
    ("more", {}),
    ("\n", {"blockquote": True}),
    ("def f():", {}),
    ("\n", {"code-block": "python"}),
    ("    return `x` * 2", {}),
    ("\n", {"code-block": "python"}),
    ("# not a heading 1. * [x](y) <b> & _u_ ~s~ | \\", {}),
    ("\n", {}),
    ("\n", {}),
    ("1. not a list", {}),
    ("\n", {}),
    ("- nor this", {}),
    ("\n", {}),
    ("use ", {}),
    ("x = `1`", {"code": True}),
    (" ünïcødé ✓", {"underline": True}),
    ("\n", {}),
]

NOTES_MARKDOWN = """\
# Wöchentliche Notizen

Some **bold** and ***both*** *text* ~~gone~~

see [the \\*docs\\*](https://example.com/a%20b%28c%29) and bad

## Section

1. first
2. second
    - nested
3. third
- [x] done
- [ ] open

> quoted
>
> more

```python
def f():
    return `x` * 2
```

\\# not a heading 1. \\* \\[x\\](y) \\<b\\> \\& \\_u\\_ \\~s\\~ \\| \\\\

1\\. not a list

\\- nor this

use `` x = `1` `` ünïcødé ✓
"""


def test_notes_markdown_exact_output():
    assert notes_markdown(notes_doc(NOTES).get_update()) == NOTES_MARKDOWN


def test_notes_markdown_keeps_emphasis_delimiters_off_whitespace():
    doc = notes_doc([("a", {}), (" bold ", {"bold": True}), ("b", {}), ("\n", {})])
    assert notes_markdown(doc.get_update()) == "a **bold** b\n"
    doc = notes_doc([("x", {"bold": True}), (" ", {}), ("y", {"bold": True}), ("\n", {})])
    assert notes_markdown(doc.get_update()) == "**x y**\n"


def test_notes_markdown_code_fence_outgrows_backticks_in_the_code():
    doc = notes_doc([("```", {}), ("\n", {"code-block": True}), ("````", {}), ("\n", {"code-block": "evil lang`"})])
    assert notes_markdown(doc.get_update()) == "`````\n```\n````\n`````\n"


def test_notes_markdown_of_empty_and_hostile_notes():
    assert notes_markdown(Doc().get_update()) == ""
    doc = notes_doc(
        [("x", {"header": 99, "list": "<script>", "indent": float("inf"), "link": 5}), ("\n", {"header": "1"})]
    )
    assert notes_markdown(doc.get_update()) == "x\n"
    lines = read_notes(doc.get_update())
    assert lines[0].header == 0 and lines[0].list == "" and lines[0].indent == 0


def test_notes_pdf_keeps_text_links_and_pages():
    pdf = PdfDoc(notes_pdf(notes_doc(NOTES).get_update(), title="Notizen ✓"))
    text = pdf.text(pdf.pages()[0])
    heading = "Notizen ✓" if collab_export.font_files() else "Notizen ?"
    assert text[:2] == [heading, "Wöchentliche Notizen"]
    assert "def f():" in text and "    return `x` * 2" in text
    assert pdf.links() == ["https://example.com/a b(c)"]  # the javascript: link is plain text
    long = notes_doc([(f"line {i}", {}) if i % 2 == 0 else ("\n", {}) for i in range(400)])
    assert len(PdfDoc(notes_pdf(long.get_update(), title="Lang")).pages()) >= 3
