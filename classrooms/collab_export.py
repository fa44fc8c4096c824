"""Exports of a session's shared board (PDF, PNG) and notes (Markdown, PDF), read from a stored pycrdt state.

The documents are written by browsers, so every value is treated as hostile: unknown element types are
ignored, numbers are clamped, colours must be `#rrggbb`, and counts (pages, elements, points, characters,
images) are capped so one document cannot make an export take unbounded memory or time. The schema is
docs/collab.md.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from fpdf import FPDF
from fpdf.enums import StrokeCapStyle, StrokeJoinStyle
from PIL import Image, ImageDraw, ImageFont
from pycrdt import Array, Doc, Map, Text

BOARD_W = 1600.0
BOARD_H = 900.0

# Caps against hostile documents. A real two-hour board stays far below them (5,000 strokes x 50 points
# is a quarter of MAX_TOTAL_POINTS).
MAX_PAGES = 200
MAX_ELEMENTS = 50_000
MAX_POINTS_PER_STROKE = 10_000
MAX_TOTAL_POINTS = 1_000_000
MAX_TEXT_CHARS = 5_000
MAX_TOTAL_TEXT_CHARS = 200_000  # laying text out is the slowest step per character
MAX_TITLE_CHARS = 200
MAX_SRC_CHARS = 1_000
MAX_IMAGES = 200
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_EDGE_PX = 2_048  # images are downscaled to this before embedding: the PDF stays small
MAX_NOTES_CHARS = 1_000_000
# Far enough outside the page that nothing visible is lost, close enough that no float overflows.
COORD_LIMIT = 10 * BOARD_W
MIN_WIDTH, MAX_WIDTH = 0.5, 200.0
MIN_FONT, MAX_FONT = 4.0, 400.0
PNG_SCALE_MIN, PNG_SCALE_MAX = 0.1, 2.0
PNG_SUPERSAMPLE = 2

ELEMENT_TYPES = frozenset({"pen", "line", "arrow", "rect", "ellipse", "text", "sticky", "image"})
STICKY_FILL = (0xFF, 0xF5, 0x9D)
BLACK = (0, 0, 0)
PLACEHOLDER = (0x9E, 0x9E, 0x9E)
_COLOUR_RE = re.compile(r"#[0-9a-fA-F]{6}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")

Colour = tuple[int, int, int]
ImageLoader = Callable[[str], "bytes | None"]


# ---------------------------------------------------------------------------------------------------------------
# Fonts: a Unicode TTF when the machine has one, otherwise the PDF core fonts limited to Latin-1.


FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
)
_FONT_FILES = {
    "": "DejaVuSans.ttf",
    "B": "DejaVuSans-Bold.ttf",
    "I": "DejaVuSans-Oblique.ttf",
    "BI": "DejaVuSans-BoldOblique.ttf",
    "mono": "DejaVuSansMono.ttf",
}


@cache
def font_files() -> dict[str, Path]:
    """The TTF files found for each style ("" regular, B, I, BI, mono); empty when the machine has none.

    No installed pip package ships a text TTF (fpdf2 and Pillow carry none), so this looks in the system font
    directories (Debian's fonts-dejavu-core) and, first, in `settings.AULA_COLLAB_FONT_DIR` when set.
    """
    dirs: list[str] = []
    try:
        from django.conf import settings

        if settings.configured and getattr(settings, "AULA_COLLAB_FONT_DIR", ""):
            dirs.append(settings.AULA_COLLAB_FONT_DIR)
    except ImportError:  # pragma: no cover - Django is always installed in Aula
        pass
    dirs.extend(FONT_DIRS)
    for directory in dirs:
        regular = Path(directory) / _FONT_FILES[""]
        if regular.is_file():
            found = {style: Path(directory) / name for style, name in _FONT_FILES.items()}
            return {style: path for style, path in found.items() if path.is_file()}
    return {}


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


class _Pdf(FPDF):
    """FPDF with Aula's fonts registered: `family` is Unicode-capable when a TTF was found."""

    def __init__(self, orientation: str, styles: Sequence[str] = ("", "B", "I", "BI")) -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        self.set_auto_page_break(False)
        self.set_creator("Aula")
        files = font_files()
        self.unicode = "" in files
        if self.unicode:
            self.family = "aula"
            for style in (style for style in styles if style != "mono"):  # parsing a TTF takes ~0.1 s
                self.add_font("aula", style, str(files.get(style, files[""])))
            self.mono = "aulamono" if "mono" in files else "aula"
            if "mono" in files and "mono" in styles:
                self.add_font("aulamono", "", str(files["mono"]))
        else:
            self.family, self.mono = "helvetica", "courier"

    def safe(self, text: str) -> str:
        return text if self.unicode else _latin1(text)


@cache
def _pil_font(size_px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    files = font_files()
    if "" in files:
        return ImageFont.truetype(str(files[""]), size_px)
    return ImageFont.load_default(size_px)  # Pillow's built-in FreeType font (Latin only)


# ---------------------------------------------------------------------------------------------------------------
# Reading values defensively.


def _number(value: Any, default: float, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range
        return hi if value > 0 else lo
    if not math.isfinite(value):
        return default
    return min(max(value, lo), hi)


def _coord(value: Any) -> float:
    return _number(value, 0.0, -COORD_LIMIT, COORD_LIMIT)


def _colour(value: Any, default: Colour | None) -> Colour | None:
    if isinstance(value, str) and _COLOUR_RE.fullmatch(value):
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    return default


def _clean_text(value: str, limit: int) -> str:
    return _CONTROL_RE.sub("", value[:limit].replace("\r\n", "\n").replace("\t", "    "))


def _string(value: Any, limit: int) -> str:
    if isinstance(value, Text):
        value = str(value)
    if not isinstance(value, str):
        return ""
    return _clean_text(value, limit)


def _load_doc(state: bytes | None) -> Doc:
    doc = Doc()
    if state:
        doc.apply_update(bytes(state))
    return doc


@dataclass(frozen=True)
class Element:
    """One board element after validation; coordinates are board units."""

    id: str
    type: str
    page: str
    z: float
    color: Colour = BLACK
    width: float = 2.0
    fill: Colour | None = None
    points: tuple[tuple[float, float], ...] = ()
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    text: str = ""
    size: float = 24.0
    src: str = ""

    def box(self) -> tuple[float, float, float, float]:
        """(left, top, width, height) with the width and height made positive (shapes drawn right to left)."""
        x0, x1 = sorted((self.x, self.x + self.w))
        y0, y1 = sorted((self.y, self.y + self.h))
        return x0, y0, x1 - x0, y1 - y0


@dataclass
class Board:
    pages: list[str]
    titles: dict[str, str]
    elements: dict[str, list[Element]] = field(default_factory=dict)  # page id → elements in z order
    truncated: bool = False


def _points(value: Any, budget: int) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list):
        return ()
    raw = value[: 2 * min(MAX_POINTS_PER_STROKE, budget)]
    numeric = bool(raw) and all(type(v) is float or type(v) is int for v in raw)  # bool is not a number here
    if numeric and min(raw) >= -COORD_LIMIT and max(raw) <= COORD_LIMIT:  # the usual stroke: no per-point work
        return tuple(zip(raw[0::2], raw[1::2], strict=False))
    out = []
    for i in range(0, len(raw) - 1, 2):
        x, y = raw[i], raw[i + 1]
        if _finite(x) and _finite(y):
            out.append((min(max(float(x), -COORD_LIMIT), COORD_LIMIT), min(max(float(y), -COORD_LIMIT), COORD_LIMIT)))
    return tuple(out)


def _finite(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))  # bool is not a number here


def _element(key: str, raw: dict[str, Any], points_budget: int) -> Element | None:
    kind = raw.get("type")
    page = raw.get("page")
    if kind not in ELEMENT_TYPES or not isinstance(page, str):
        return None
    common = {
        "id": key,
        "type": kind,
        "page": page,
        "z": _number(raw.get("z"), 0.0, -1e12, 1e12),
        "color": _colour(raw.get("color"), BLACK),
        "width": _number(raw.get("width"), 2.0, MIN_WIDTH, MAX_WIDTH),
    }
    if kind == "pen":
        points = _points(raw.get("points"), points_budget)
        return Element(**common, points=points) if points else None
    box = {name: _coord(raw.get(name)) for name in ("x", "y", "w", "h")}
    if kind in ("rect", "ellipse"):
        return Element(**common, **box, fill=_colour(raw.get("fill"), None))
    if kind in ("line", "arrow"):
        return Element(**common, **box)
    if kind in ("text", "sticky"):
        fill = _colour(raw.get("fill"), STICKY_FILL) if kind == "sticky" else None
        size = _number(raw.get("size"), 24.0 if kind == "text" else 20.0, MIN_FONT, MAX_FONT)
        return Element(**common, **box, fill=fill, size=size, text=_string(raw.get("text"), MAX_TEXT_CHARS))
    src = raw.get("src")
    return Element(**common, **box, src=src if isinstance(src, str) and len(src) <= MAX_SRC_CHARS else "")


def _json(value: Any) -> Any:
    """A shared type as plain data. yrs serialises the whole subtree to JSON in Rust, which is an order of
    magnitude faster than walking it from Python (5,000 strokes: 0.1 s instead of 3 s). A nesting too deep to
    decode gives None: no element of the schema nests more than one level."""
    if not isinstance(value, Map | Array | Text):
        return value
    try:
        return json.loads(str(value))
    except (ValueError, RecursionError):
        return None


def read_board(state: bytes | None) -> Board:
    """The board's pages (in order, with titles) and their valid elements sorted by z."""
    doc = _load_doc(state)
    pages: list[str] = []
    listed = _json(doc.get("pages", type=Array))
    for page in listed if isinstance(listed, list) else ():
        if isinstance(page, str) and page not in pages and len(page) <= MAX_TITLE_CHARS:
            pages.append(page)
            if len(pages) >= MAX_PAGES:
                break
    pages = pages or ["p1"]  # the first page exists from the start, even before anyone wrote `pages`
    titles: dict[str, str] = {}
    meta = doc.get("pagemeta", type=Map)
    for page in pages:
        entry = _json(meta.get(page))
        titles[page] = _string(entry.get("title"), MAX_TITLE_CHARS) if isinstance(entry, dict) else ""

    board = Board(pages=pages, titles=titles, elements={page: [] for page in pages})
    points_left, text_left, seen = MAX_TOTAL_POINTS, MAX_TOTAL_TEXT_CHARS, 0
    for key, raw in doc.get("elements", type=Map).items():
        seen += 1
        if seen > MAX_ELEMENTS or points_left <= 0:
            board.truncated = True
            break
        fields = _json(raw) if isinstance(raw, Map) else None
        if not isinstance(fields, dict):
            continue
        element = _element(key, fields, points_left)
        if element is None or element.page not in board.elements:
            continue
        if len(element.text) > text_left:
            board.truncated = True
            element = replace(element, text=element.text[:text_left])
        text_left -= len(element.text)
        points_left -= len(element.points)
        board.elements[element.page].append(element)
    for elements in board.elements.values():
        elements.sort(key=lambda e: (e.z, e.id))
    return board


# ---------------------------------------------------------------------------------------------------------------
# Drawing: one painter per output format; the element logic is shared so the PDF and the PNG agree.


class _Painter(Protocol):
    def polyline(self, points: Sequence[tuple[float, float]], color: Colour, width: float) -> None: ...
    def dot(self, x: float, y: float, radius: float, color: Colour) -> None: ...
    def polygon(self, points: Sequence[tuple[float, float]], color: Colour) -> None: ...
    def rect(
        self, box: tuple[float, float, float, float], stroke: Colour | None, width: float, fill: Colour | None
    ) -> None: ...
    def ellipse(
        self, box: tuple[float, float, float, float], stroke: Colour | None, width: float, fill: Colour | None
    ) -> None: ...
    def measure(self, text: str, size: float) -> float: ...
    def text_line(self, x: float, baseline: float, text: str, size: float, color: Colour) -> None: ...
    def image(self, box: tuple[float, float, float, float], image: Image.Image) -> None: ...


def wrap_text(text: str, max_width: float | None, measure: Callable[[str], float]) -> list[str]:
    """Greedy word wrap; a word wider than the line is cut between characters. None = no wrapping."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if max_width is None or measure(paragraph) <= max_width:
            lines.append(paragraph)
            continue
        current = ""
        for word in re.split(r"(?<=\s)", paragraph):  # keep the space with the word before it
            candidate = current + word
            if measure(candidate.rstrip()) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current.rstrip())
                current = ""
            while word and measure(word.rstrip()) > max_width:
                cut = 1
                while cut < len(word) and measure(word[: cut + 1]) <= max_width:
                    cut += 1
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        lines.append(current.rstrip())
    return lines


class _Images:
    """Loads each image `src` once through the caller's loader, within the caps; None when unusable."""

    def __init__(self, load_image: ImageLoader | None) -> None:
        self.load_image = load_image
        self.cache: dict[str, Image.Image | None] = {}

    def get(self, src: str) -> Image.Image | None:
        if not src or self.load_image is None:
            return None
        if src not in self.cache:
            self.cache[src] = self._load(src) if len(self.cache) < MAX_IMAGES else None
        return self.cache[src]

    def _load(self, src: str) -> Image.Image | None:
        try:
            data = self.load_image(src)
            if not isinstance(data, bytes | bytearray) or not data or len(data) > MAX_IMAGE_BYTES:
                return None
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return None
            image.draft("RGB", (IMAGE_EDGE_PX, IMAGE_EDGE_PX))  # JPEG: decode at reduced size
            image.load()
            image.thumbnail((IMAGE_EDGE_PX, IMAGE_EDGE_PX))
            return image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        except Exception:  # noqa: BLE001 - Pillow raises many unrelated types for a corrupt file; skip it
            return None


def _arrow_head(element: Element) -> list[tuple[float, float]] | None:
    length = math.hypot(element.w, element.h)
    if length < 1e-6:
        return None
    head = min(max(12.0, element.width * 4), length)
    angle = math.atan2(element.h, element.w)
    tip = (element.x + element.w, element.y + element.h)
    spread = math.radians(25)
    return [
        tip,
        (tip[0] - head * math.cos(angle - spread), tip[1] - head * math.sin(angle - spread)),
        (tip[0] - head * math.cos(angle + spread), tip[1] - head * math.sin(angle + spread)),
    ]


def _paint_text(
    painter: _Painter, element: Element, x: float, y: float, max_width: float | None, max_height: float | None
) -> None:
    size = element.size
    line_height = size * 1.25
    lines = wrap_text(element.text, max_width, lambda s: painter.measure(s, size))
    for index, line in enumerate(lines):
        top = y + index * line_height
        if max_height is not None and top + line_height > max_height + y:
            break
        if top > BOARD_H or (max_height is None and index > 500):
            break  # the rest is below the page
        if line:
            painter.text_line(x, top + size * 0.95, line, size, element.color)


def _paint_element(painter: _Painter, element: Element, images: _Images) -> None:
    kind = element.type
    if kind == "pen":
        if len(element.points) == 1:
            painter.dot(*element.points[0], element.width / 2, element.color)
        else:
            painter.polyline(element.points, element.color, element.width)
    elif kind in ("line", "arrow"):
        end = (element.x + element.w, element.y + element.h)
        painter.polyline([(element.x, element.y), end], element.color, element.width)
        head = _arrow_head(element) if kind == "arrow" else None
        if head:
            painter.polygon(head, element.color)
    elif kind == "rect":
        painter.rect(element.box(), element.color, element.width, element.fill)
    elif kind == "ellipse":
        painter.ellipse(element.box(), element.color, element.width, element.fill)
    elif kind == "text":
        width = element.box()[2]
        _paint_text(painter, element, element.x, element.y, width if width > 0 else None, None)
    elif kind == "sticky":
        x, y, w, h = element.box()
        painter.rect((x, y, w, h), None, 0, element.fill)
        pad = min(max(4.0, element.size * 0.5), w / 4, h / 4)
        if w - 2 * pad > 0 and h - 2 * pad > 0:
            _paint_text(painter, element, x + pad, y + pad, w - 2 * pad, h - 2 * pad)
    elif kind == "image":
        box = element.box()
        if box[2] <= 0 or box[3] <= 0:
            return
        image = images.get(element.src)
        if image is not None:
            painter.image(box, image)
        else:  # a small marked box where the picture was, so the page still shows that something is missing
            painter.rect(box, PLACEHOLDER, 2, (0xF0, 0xF0, 0xF0))
            x, y, w, h = box
            painter.polyline([(x, y), (x + w, y + h)], PLACEHOLDER, 1)
            painter.polyline([(x + w, y), (x, y + h)], PLACEHOLDER, 1)


def _visible(element: Element) -> bool:
    """False for elements wholly outside the page (nothing to draw; saves time on scattered boards)."""
    if element.type == "pen":
        xs = [p[0] for p in element.points]
        ys = [p[1] for p in element.points]
        lo_x, hi_x, lo_y, hi_y = min(xs), max(xs), min(ys), max(ys)
    else:
        x, y, w, h = element.box()
        lo_x, hi_x, lo_y, hi_y = x, x + w, y, y + h
        if element.type == "text":
            hi_x, hi_y = max(hi_x, BOARD_W), max(hi_y, BOARD_H)  # unbounded text may run on
    margin = element.width + 20
    return hi_x >= -margin and lo_x <= BOARD_W + margin and hi_y >= -margin and lo_y <= BOARD_H + margin


# ---------------------------------------------------------------------------------------------------------------
# Board → PDF


PDF_MARGIN = 10.0
PDF_HEADER = 10.0


class _PdfPainter:
    def __init__(self, pdf: _Pdf, left: float, top: float, scale: float) -> None:
        self.pdf, self.left, self.top, self.scale = pdf, left, top, scale

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return (self.left + x * self.scale, self.top + y * self.scale)

    def _stroke(self, color: Colour, width: float) -> None:
        self.pdf.set_draw_color(*color)
        self.pdf.set_line_width(max(width * self.scale, 0.05))

    def polyline(self, points, color, width):
        self._stroke(color, width)
        self.pdf.polyline([self._xy(x, y) for x, y in points])

    def dot(self, x, y, radius, color):
        self.pdf.set_fill_color(*color)
        r = max(radius, 0.5) * self.scale
        cx, cy = self._xy(x, y)
        self.pdf.ellipse(cx - r, cy - r, 2 * r, 2 * r, style="F")

    def polygon(self, points, color):
        self.pdf.set_fill_color(*color)
        self.pdf.polygon([self._xy(x, y) for x, y in points], style="F")

    def _shape(self, draw, box, stroke, width, fill):
        style = ("D" if stroke else "") + ("F" if fill else "")
        if not style:
            return
        if stroke:
            self._stroke(stroke, width)
        if fill:
            self.pdf.set_fill_color(*fill)
        x, y = self._xy(box[0], box[1])
        draw(x, y, box[2] * self.scale, box[3] * self.scale, style=style)

    def rect(self, box, stroke, width, fill):
        self._shape(self.pdf.rect, box, stroke, width, fill)

    def ellipse(self, box, stroke, width, fill):
        self._shape(self.pdf.ellipse, box, stroke, width, fill)

    def _font(self, size: float) -> None:
        self.pdf.set_font(self.pdf.family, "", max(size * self.scale / 0.3528, 1.0))  # mm → pt

    def measure(self, text, size):
        self._font(size)
        return self.pdf.get_string_width(self.pdf.safe(text)) / self.scale

    def text_line(self, x, baseline, text, size, color):
        self._font(size)
        self.pdf.set_text_color(*color)
        self.pdf.text(*self._xy(x, baseline), self.pdf.safe(text))

    def image(self, box, image):
        x, y = self._xy(box[0], box[1])
        self.pdf.image(image, x, y, box[2] * self.scale, box[3] * self.scale)


def board_pdf(state: bytes, *, title: str, subtitle: str = "", load_image: ImageLoader | None = None) -> bytes:
    """The board as a PDF: one landscape A4 page per board page, vector drawing, in page order."""
    board = read_board(state)
    pdf = _Pdf("L", styles=("", "B"))
    pdf.set_title(_clean_text(title, MAX_TITLE_CHARS))
    images = _Images(load_image)
    area_w = pdf.w - 2 * PDF_MARGIN
    area_h = pdf.h - 2 * PDF_MARGIN - PDF_HEADER
    scale = min(area_w / BOARD_W, area_h / BOARD_H)
    left = PDF_MARGIN + (area_w - BOARD_W * scale) / 2
    top = PDF_MARGIN + PDF_HEADER
    heading = " — ".join(
        part for part in (_clean_text(title, MAX_TITLE_CHARS), _clean_text(subtitle, MAX_TITLE_CHARS)) if part
    )
    total = len(board.pages)
    for number, page in enumerate(board.pages, start=1):
        pdf.add_page()
        _pdf_header(pdf, heading, board.titles[page], f"page {number} of {total}")
        pdf.set_draw_color(0xBD, 0xBD, 0xBD)
        pdf.set_line_width(0.2)
        pdf.rect(left, top, BOARD_W * scale, BOARD_H * scale)
        painter = _PdfPainter(pdf, left, top, scale)
        with (
            pdf.rect_clip(left, top, BOARD_W * scale, BOARD_H * scale),
            pdf.local_context(stroke_cap_style=StrokeCapStyle.ROUND, stroke_join_style=StrokeJoinStyle.ROUND),
        ):
            for element in board.elements[page]:
                if _visible(element):
                    _paint_element(painter, element, images)
    return bytes(pdf.output())


def _pdf_header(pdf: _Pdf, heading: str, page_title: str, counter: str) -> None:
    pdf.set_text_color(0x21, 0x21, 0x21)
    pdf.set_font(pdf.family, "", 10)
    counter_w = pdf.get_string_width(counter) + 2
    pdf.set_xy(pdf.w - PDF_MARGIN - counter_w, PDF_MARGIN)
    pdf.cell(counter_w, 6, counter, align="R")
    text = heading + (f" · {page_title}" if page_title and heading else page_title)
    pdf.set_font(pdf.family, "B", 11)
    text = pdf.safe(text)
    room = pdf.w - 2 * PDF_MARGIN - counter_w - 4
    while text and pdf.get_string_width(text) > room:  # long titles are cut, never wrapped over the board
        text = text[:-2] + "…" if pdf.unicode else text[:-4] + "..."
    pdf.set_xy(PDF_MARGIN, PDF_MARGIN)
    pdf.cell(room, 6, text)


# ---------------------------------------------------------------------------------------------------------------
# Board → PNG


class _PilPainter:
    def __init__(self, image: Image.Image, ppu: float) -> None:
        self.canvas = image
        self.draw = ImageDraw.Draw(image)
        self.ppu = ppu  # pixels per board unit

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return (x * self.ppu, y * self.ppu)

    def _px(self, width: float) -> int:
        return max(1, round(width * self.ppu))

    def polyline(self, points, color, width):
        px = self._px(width)
        xy = [self._xy(x, y) for x, y in points]
        # Round joins cost a pie slice per vertex; below 7 px the mitre notch they hide is invisible.
        self.draw.line(xy, fill=color, width=px, joint="curve" if px > 6 else None)
        if px > 2:  # round caps, like the browser's lineCap = "round"
            r = px / 2
            for cx, cy in (xy[0], xy[-1]):
                self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)

    def dot(self, x, y, radius, color):
        r = max(radius * self.ppu, 1.0)
        cx, cy = self._xy(x, y)
        self.draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)

    def polygon(self, points, color):
        self.draw.polygon([self._xy(x, y) for x, y in points], fill=color)

    def _bbox(self, box):
        x0, y0 = self._xy(box[0], box[1])
        x1, y1 = self._xy(box[0] + box[2], box[1] + box[3])
        return (x0, y0, max(x1, x0), max(y1, y0))

    def rect(self, box, stroke, width, fill):
        self.draw.rectangle(self._bbox(box), fill=fill, outline=stroke, width=self._px(width) if stroke else 0)

    def ellipse(self, box, stroke, width, fill):
        self.draw.ellipse(self._bbox(box), fill=fill, outline=stroke, width=self._px(width) if stroke else 0)

    def _font(self, size: float):
        return _pil_font(max(1, min(round(size * self.ppu), 2_000)))

    def measure(self, text, size):
        return self._font(size).getlength(text) / self.ppu

    def text_line(self, x, baseline, text, size, color):
        self.draw.text(self._xy(x, baseline), text, fill=color, font=self._font(size), anchor="ls")

    def image(self, box, image):
        x0, y0, x1, y1 = (round(v) for v in self._bbox(box))
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0 or w * h > 4 * self.canvas.width * self.canvas.height:
            return
        placed = image.resize((w, h))
        self.canvas.paste(placed, (x0, y0), placed if placed.mode == "RGBA" else None)


def board_png(
    state: bytes, *, page_id: str | None = None, scale: float = 1.0, load_image: ImageLoader | None = None
) -> bytes:
    """One board page as a PNG of 1600×900 × scale pixels (scale clamped to 0.1–2).

    `page_id` comes from a query string: an id that is not a page of this board gives the first page. Drawn at
    twice the size and downsampled, which is Pillow's way to anti-alias."""
    board = read_board(state)
    page = page_id if page_id in board.elements else board.pages[0]
    scale = _number(scale, 1.0, PNG_SCALE_MIN, PNG_SCALE_MAX)
    size = (max(1, round(BOARD_W * scale)), max(1, round(BOARD_H * scale)))
    canvas = Image.new("RGB", (size[0] * PNG_SUPERSAMPLE, size[1] * PNG_SUPERSAMPLE), "white")
    painter = _PilPainter(canvas, scale * PNG_SUPERSAMPLE)
    images = _Images(load_image)
    for element in board.elements[page]:
        if _visible(element):
            _paint_element(painter, element, images)
    out = io.BytesIO()
    canvas.resize(size, Image.Resampling.LANCZOS).save(out, format="PNG", compress_level=3)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Notes: Quill delta → lines of formatted runs.

INLINE_MARKS = ("link", "bold", "italic", "strike")  # outermost first; `code` is rendered as an atom
LIST_KINDS = {"bullet", "ordered", "checked", "unchecked"}
_SAFE_URL_RE = re.compile(r"(https?://|mailto:)[^\x00-\x1f\x7f]+", re.IGNORECASE)
_LANGUAGE_RE = re.compile(r"[A-Za-z0-9+#_-]{1,30}")


@dataclass(frozen=True)
class Run:
    text: str
    bold: bool = False
    italic: bool = False
    strike: bool = False
    underline: bool = False
    code: bool = False
    link: str = ""


@dataclass(frozen=True)
class Line:
    runs: tuple[Run, ...]
    header: int = 0  # 1-6
    list: str = ""  # bullet / ordered / checked / unchecked
    indent: int = 0
    quote: bool = False
    code: str | None = None  # language ("" for plain) when the line is in a code block

    @property
    def text(self) -> str:
        return "".join(run.text for run in self.runs)


def _safe_url(value: Any) -> str:
    if isinstance(value, str) and len(value) <= 2_000 and _SAFE_URL_RE.fullmatch(value.strip()):
        return value.strip()
    return ""


def _run(text: str, attrs: Any) -> Run:
    attrs = attrs if isinstance(attrs, dict) else {}
    return Run(
        text=text,
        bold=attrs.get("bold") is True,
        italic=attrs.get("italic") is True,
        strike=attrs.get("strike") is True,
        underline=attrs.get("underline") is True,
        code=attrs.get("code") is True,
        link=_safe_url(attrs.get("link")),
    )


def _line(runs: list[Run], attrs: Any) -> Line:
    attrs = attrs if isinstance(attrs, dict) else {}
    header = _number(attrs.get("header"), 0, 0, 6)  # Yjs sends 1; yrs may hand it back as 1.0
    kind = attrs.get("list")
    code = attrs.get("code-block")
    if code is True or code == "plain":
        language: str | None = ""
    elif isinstance(code, str):
        language = code if _LANGUAGE_RE.fullmatch(code) else ""
    else:
        language = None
    return Line(
        runs=tuple(runs),
        header=int(header) if header == int(header) else 0,
        list=kind if kind in LIST_KINDS else "",
        indent=int(_number(attrs.get("indent"), 0, 0, 8)),
        quote=attrs.get("blockquote") is True,
        code=language,
    )


def read_notes(state: bytes | None) -> list[Line]:
    """The notes as lines; in Quill the block format (header, list…) sits on each line's newline."""
    doc = _load_doc(state)
    lines: list[Line] = []
    runs: list[Run] = []
    budget = MAX_NOTES_CHARS
    for insert, attrs in doc.get("body", type=Text).diff():
        if not isinstance(insert, str):
            continue  # embeds (images, formulas) are not part of the schema
        insert = insert[:budget]
        budget -= len(insert)
        parts = insert.split("\n")
        for index, part in enumerate(parts):
            if part:
                runs.append(_run(_clean_text(part, len(part)), attrs))
            if index < len(parts) - 1:
                lines.append(_line(runs, attrs))
                runs = []
        if budget <= 0:
            break
    if any(run.text for run in runs):  # Quill always ends with "\n"; a hand-made doc may not
        lines.append(_line(runs, None))
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Notes → Markdown

_MD_ESCAPE_RE = re.compile(r"([\\`*_\[\]<>~|&])")
_MD_LINE_START_RE = re.compile(r"^(\s*)([#+=-]|\d+(?=[.)]))")


def _md_escape(text: str) -> str:
    return _MD_ESCAPE_RE.sub(r"\\\1", text)


def _md_escape_line_start(text: str) -> str:
    """A line may not start a heading, list or setext underline by accident."""
    match = _MD_LINE_START_RE.match(text)
    if not match:
        return text
    if match.group(2).isdigit():  # "1." → "1\."
        end = match.end()
        return text[:end] + "\\" + text[end:]
    return text[: match.start(2)] + "\\" + text[match.start(2) :]


def _md_url(url: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in " ()<>\\" else c for c in url)


def _md_code_span(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_MD_OPEN = {"link": "[", "bold": "**", "italic": "*", "strike": "~~"}


def _marks(run: Run) -> list[tuple[str, str]]:
    return [(mark, run.link if mark == "link" else "") for mark in INLINE_MARKS if getattr(run, mark)]


def _md_inline(runs: Sequence[Run]) -> str:
    """Runs → inline Markdown; marks are kept nested (a bold span may hold an italic one) and delimiters never
    touch whitespace on their inner side, which CommonMark would not accept as emphasis."""
    out: list[str] = []
    stack: list[tuple[str, str]] = []

    def close(to: int) -> None:
        if len(stack) <= to:
            return
        trailing: list[str] = []  # whitespace moves outside the closing delimiters
        while out:
            stripped = out[-1].rstrip()
            if stripped == out[-1]:
                break
            trailing.insert(0, out[-1][len(stripped) :])
            if stripped:
                out[-1] = stripped
                break
            out.pop()
        while len(stack) > to:
            mark, value = stack.pop()
            out.append(f"]({_md_url(value)})" if mark == "link" else _MD_OPEN[mark])
        out.extend(trailing)

    for run in runs:
        if not run.text:
            continue
        if not run.text.strip() and not run.code:
            out.append(run.text)  # whitespace alone cannot carry emphasis: keep the marks as they are
            continue
        wanted = _marks(run)
        keep = 0
        while keep < len(stack) and keep < len(wanted) and stack[keep] == wanted[keep]:
            keep += 1
        close(keep)
        body = _md_code_span(run.text) if run.code else _md_escape(run.text)
        opening = wanted[keep:]
        if opening and not run.code:
            lead = body[: len(body) - len(body.lstrip())]
            if lead:
                out.append(lead)
                body = body[len(lead) :]
        for mark, value in opening:
            out.append(_MD_OPEN[mark])
            stack.append((mark, value))
        out.append(body)
    close(0)
    return "".join(out)


def notes_markdown(state: bytes) -> str:
    """The notes as CommonMark (with GitHub's ~~strike~~ and task lists); user text is escaped."""
    blocks: list[str] = []  # each is one Markdown block; list items of one list are joined into one
    lines = read_notes(state)
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.code is not None:
            body: list[str] = []
            language = line.code
            while index < len(lines) and lines[index].code is not None:
                body.append(lines[index].text)
                index += 1
            text = "\n".join(body)
            longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
            fence = "`" * (longest + 1)
            blocks.append(f"{fence}{language}\n{text}\n{fence}")
            continue
        if line.list:
            items: list[str] = []
            numbers: dict[int, int] = {}
            while index < len(lines) and lines[index].list and lines[index].code is None:
                item = lines[index]
                for deeper in [level for level in numbers if level > item.indent]:
                    del numbers[deeper]  # a nested list restarts its numbering
                inline = _md_inline(item.runs)
                if item.list == "ordered":
                    numbers[item.indent] = numbers.get(item.indent, 0) + 1
                    marker = f"{numbers[item.indent]}."
                else:
                    numbers.pop(item.indent, None)
                    marker = {"bullet": "-", "checked": "- [x]", "unchecked": "- [ ]"}[item.list]
                items.append(f"{'    ' * item.indent}{marker} {inline}".rstrip())
                index += 1
            blocks.append("\n".join(items))
            continue
        if line.quote:
            quoted: list[str] = []
            while index < len(lines) and lines[index].quote and not lines[index].list and lines[index].code is None:
                inline = _md_escape_line_start(_md_inline(lines[index].runs))
                if inline:
                    quoted.append(f"> {inline}")
                index += 1
            if quoted:
                blocks.append("\n>\n".join(quoted))
            continue
        inline = _md_inline(line.runs)
        index += 1
        if not inline.strip():
            continue
        if line.header:
            blocks.append(f"{'#' * line.header} {inline}")
        else:
            blocks.append(_md_escape_line_start(inline))
    return "\n\n".join(blocks) + "\n" if blocks else ""


# ---------------------------------------------------------------------------------------------------------------
# Notes → PDF

NOTES_SIZES = {0: 11.0, 1: 20.0, 2: 16.0, 3: 14.0, 4: 12.0, 5: 11.0, 6: 11.0}


def notes_pdf(state: bytes, *, title: str) -> bytes:
    """The notes as a portrait A4 PDF keeping headings, emphasis, lists, quotes, code blocks and links."""
    lines = read_notes(state)
    pdf = _Pdf("P", styles=("", "B", "I", "BI", "mono"))
    pdf.set_title(_clean_text(title, MAX_TITLE_CHARS))
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    pdf.set_font(pdf.family, "B", 18)
    pdf.multi_cell(0, 9, pdf.safe(_clean_text(title, MAX_TITLE_CHARS)), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    numbers: dict[int, int] = {}
    previous: Line | None = None
    for line in lines:
        if not line.list or line.code is not None:
            numbers.clear()
        if line.code is not None:
            if previous is None or previous.code is None:
                pdf.ln(1)
            pdf.set_font(pdf.mono, "", 9.5)
            pdf.set_fill_color(0xF3, 0xF3, 0xF3)
            pdf.set_text_color(0x21, 0x21, 0x21)
            pdf.multi_cell(0, 5, pdf.safe(line.text) or " ", fill=True, new_x="LMARGIN", new_y="NEXT")
            previous = line
            continue
        if previous is not None and previous.code is not None:
            pdf.ln(2)
        size = NOTES_SIZES[line.header]
        height = size * 0.3528 * 1.45
        left = 20 + (8 if line.quote else 0) + 7 * line.indent
        top = pdf.get_y()
        if line.list:
            for deeper in [level for level in numbers if level > line.indent]:
                del numbers[deeper]
            if line.list == "ordered":
                numbers[line.indent] = numbers.get(line.indent, 0) + 1
                marker = f"{numbers[line.indent]}."
            else:
                marker = {"bullet": "•", "checked": "[x]", "unchecked": "[ ]"}[line.list]
                if not pdf.unicode and marker == "•":
                    marker = "-"
            pdf.set_font(pdf.family, "", size)
            pdf.set_text_color(0x21, 0x21, 0x21)
            pdf.set_xy(left, top)
            pdf.cell(7, height, marker)
            left += 7
        pdf.set_left_margin(left)
        pdf.set_xy(left, top)
        for run in line.runs:
            style = ("B" if run.bold or line.header else "") + ("I" if run.italic else "")
            style += ("S" if run.strike else "") + ("U" if run.underline or run.link else "")
            pdf.set_font(pdf.mono if run.code else pdf.family, style if not run.code else "", size)
            pdf.set_text_color(*((0x15, 0x65, 0xC0) if run.link else (0x21, 0x21, 0x21)))
            if line.quote:
                pdf.set_text_color(0x61, 0x61, 0x61)
            pdf.write(height, pdf.safe(run.text), link=run.link)
        pdf.ln(height)
        if line.quote and pdf.page_no() and pdf.get_y() > top:
            pdf.set_draw_color(0xBD, 0xBD, 0xBD)
            pdf.set_line_width(0.8)
            pdf.line(22, top, 22, pdf.get_y())
        pdf.set_left_margin(20)
        if line.header:
            pdf.ln(1.5)
        previous = line
    return bytes(pdf.output())


__all__ = [
    "Board",
    "Element",
    "Line",
    "Run",
    "board_pdf",
    "board_png",
    "font_files",
    "notes_markdown",
    "notes_pdf",
    "read_board",
    "read_notes",
    "wrap_text",
]
