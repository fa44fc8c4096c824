"""Exports of a session's whiteboard (PDF: one page per board page, vector; PNG: one page) and notes (PDF,
Markdown), from a document state (docs/collab.md has the schema).

Documents are written by browsers: every value is checked (types, numbers clamped, colours validated) and
sizes are capped, so a hostile document cannot make an export fail or run long. PDF text uses the core
fonts (Latin-1): other characters are replaced, as in the exam transcripts.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

PAGE_W, PAGE_H = 1600, 900
MAX_ELEMENTS = 20_000
MAX_POINTS = 4_000  # per stroke (x, y pairs)
MAX_TEXT = 2_000
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
ImageLoader = Callable[[str], "bytes | None"] | None


@dataclass
class Element:
    id: str
    type: str
    page: str
    z: float = 0.0
    color: str = "#000000"
    fill: str = ""
    width: float = 3.0
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    size: float = 24.0
    text: str = ""
    src: str = ""
    points: list[tuple[float, float]] = field(default_factory=list)


def _num(value, default: float = 0.0, lo: float = -1e5, hi: float = 1e5) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return max(lo, min(hi, float(value)))


def _color(value, default: str) -> str:
    return value if isinstance(value, str) and _COLOR.match(value) else default


def read_board(state: bytes) -> tuple[list[str], dict[str, list[Element]]]:
    """(page ids in order, elements per page sorted by z) from a board state."""
    from pycrdt import Array, Doc, Map, Text

    doc = Doc()
    doc.apply_update(state)
    pages = [p for p in list(doc.get("pages", type=Array))[:200] if isinstance(p, str)] or ["p1"]
    by_page: dict[str, list[Element]] = {p: [] for p in pages}
    elements = doc.get("elements", type=Map)
    for n, (key, raw) in enumerate(elements.items()):
        if n >= MAX_ELEMENTS:
            break
        if not isinstance(raw, Map):
            continue
        kind, page = raw.get("type"), raw.get("page")
        if kind not in ("pen", "line", "arrow", "rect", "ellipse", "text", "sticky", "image") or page not in by_page:
            continue
        text = raw.get("text")
        points = raw.get("points")
        flat = list(points)[:2 * MAX_POINTS] if isinstance(points, Array) else []
        pairs = [(_num(flat[i]), _num(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]
        by_page[page].append(Element(
            id=str(key), type=kind, page=page, z=_num(raw.get("z")),
            color=_color(raw.get("color"), "#000000"),
            fill=_color(raw.get("fill"), "#fff59d" if kind == "sticky" else ""),
            width=_num(raw.get("width"), 3, 0.5, 200), x=_num(raw.get("x")), y=_num(raw.get("y")),
            w=_num(raw.get("w")), h=_num(raw.get("h")), size=_num(raw.get("size"), 24, 4, 400),
            text=(str(text) if isinstance(text, Text) else "")[:MAX_TEXT],
            src=raw.get("src") if isinstance(raw.get("src"), str) else "", points=pairs))
    for items in by_page.values():
        items.sort(key=lambda e: e.z)
    return pages, by_page


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def _box(e: Element) -> tuple[float, float, float, float]:
    x0, x1 = sorted((e.x, e.x + e.w))
    y0, y1 = sorted((e.y, e.y + e.h))
    return x0, y0, x1, y1


def _arrow_head(e: Element) -> list[tuple[float, float]]:
    angle = math.atan2(e.h, e.w)
    tip = (e.x + e.w, e.y + e.h)
    size = 6 + 3 * e.width
    return [tip, (tip[0] - size * math.cos(angle - 0.45), tip[1] - size * math.sin(angle - 0.45)),
            (tip[0] - size * math.cos(angle + 0.45), tip[1] - size * math.sin(angle + 0.45))]


# --- PNG ------------------------------------------------------------------------------------------------------

def board_png(state: bytes, *, page_id: str | None = None, scale: float = 1.0,
              load_image: ImageLoader = None) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    pages, by_page = read_board(state)
    page = page_id if page_id in by_page else pages[0]
    scale = max(0.1, min(2.0, scale))
    ss = 2 * scale  # drawn at twice the size, then reduced: smooth edges
    img = Image.new("RGB", (round(PAGE_W * ss), round(PAGE_H * ss)), "white")
    draw = ImageDraw.Draw(img)

    def pt(x: float, y: float) -> tuple[float, float]:
        return x * ss, y * ss

    for e in by_page[page]:
        width = max(1, round(e.width * ss))
        if e.type == "pen" and e.points:
            draw.line([pt(*p) for p in e.points], fill=e.color, width=width, joint="curve")
        elif e.type in ("line", "arrow"):
            draw.line([pt(e.x, e.y), pt(e.x + e.w, e.y + e.h)], fill=e.color, width=width)
            if e.type == "arrow":
                draw.polygon([pt(*p) for p in _arrow_head(e)], fill=e.color)
        elif e.type in ("rect", "ellipse", "sticky"):
            x0, y0, x1, y1 = _box(e)
            shape = draw.ellipse if e.type == "ellipse" else draw.rectangle
            shape([pt(x0, y0), pt(x1, y1)], outline=e.color if e.type != "sticky" else None,
                  fill=e.fill or None, width=width)
        elif e.type == "image":
            data = load_image(e.src) if load_image and e.src else None
            x0, y0, x1, y1 = _box(e)
            if data and x1 > x0 and y1 > y0:
                with Image.open(io.BytesIO(data)) as picture:
                    picture = picture.convert("RGB").resize((max(1, round((x1 - x0) * ss)),
                                                              max(1, round((y1 - y0) * ss))))
                    img.paste(picture, (round(x0 * ss), round(y0 * ss)))
            else:
                draw.rectangle([pt(x0, y0), pt(x1, y1)], outline="#999999", width=2)
        if e.type in ("text", "sticky") and e.text:
            font = ImageFont.load_default(size=max(8, round(e.size * ss)))
            draw.multiline_text(pt(e.x + (8 if e.type == "sticky" else 0), e.y + (8 if e.type == "sticky" else 0)),
                                e.text, fill=e.color, font=font)
    img = img.resize((round(PAGE_W * scale), round(PAGE_H * scale)), Image.LANCZOS)
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


# --- PDF ------------------------------------------------------------------------------------------------------

def board_pdf(state: bytes, *, title: str, subtitle: str = "", load_image: ImageLoader = None) -> bytes:
    from fpdf import FPDF

    pages, by_page = read_board(state)
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_title(_latin1(title))
    pdf.set_auto_page_break(False)
    margin, head = 10.0, 12.0
    k = min((297 - 2 * margin) / PAGE_W, (210 - 2 * margin - head) / PAGE_H)
    ox, oy = margin, margin + head
    for number, page in enumerate(pages, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 11)
        pdf.set_text_color(0, 0, 0)
        pdf.text(margin, margin + 4, _latin1(title))
        pdf.set_font("Helvetica", size=8)
        pdf.text(margin, margin + 9, _latin1(f"{subtitle}   page {number} of {len(pages)}"))
        pdf.set_draw_color(200, 200, 200)
        pdf.rect(ox, oy, PAGE_W * k, PAGE_H * k)
        for e in by_page[page]:
            _pdf_element(pdf, e, k, ox, oy, load_image)
    return bytes(pdf.output())


def _pdf_element(pdf, e: Element, k: float, ox: float, oy: float, load_image: ImageLoader) -> None:
    pdf.set_draw_color(*_rgb(e.color))
    pdf.set_line_width(max(0.1, e.width * k))

    def p(x: float, y: float) -> tuple[float, float]:
        return ox + x * k, oy + y * k

    x0, y0, x1, y1 = _box(e)
    if e.type == "pen" and len(e.points) > 1:
        pdf.polyline([p(*q) for q in e.points])
    elif e.type in ("line", "arrow"):
        pdf.line(*p(e.x, e.y), *p(e.x + e.w, e.y + e.h))
        if e.type == "arrow":
            pdf.set_fill_color(*_rgb(e.color))
            pdf.polygon([p(*q) for q in _arrow_head(e)], style="F")
    elif e.type in ("rect", "ellipse", "sticky"):
        style = "D"
        if e.fill:
            pdf.set_fill_color(*_rgb(e.fill))
            style = "F" if e.type == "sticky" else "DF"
        shape = pdf.ellipse if e.type == "ellipse" else pdf.rect
        shape(*p(x0, y0), (x1 - x0) * k, (y1 - y0) * k, style=style)
    elif e.type == "image":
        data = load_image(e.src) if load_image and e.src else None
        if data and x1 > x0 and y1 > y0:
            pdf.image(io.BytesIO(data), *p(x0, y0), (x1 - x0) * k, (y1 - y0) * k)
        else:
            pdf.set_draw_color(150, 150, 150)
            pdf.rect(*p(x0, y0), max(1, (x1 - x0) * k), max(1, (y1 - y0) * k))
    if e.type in ("text", "sticky") and e.text:
        pad = 8 if e.type == "sticky" else 0
        size_pt = max(4.0, e.size * k * 2.83)
        pdf.set_font("Helvetica", size=size_pt)
        pdf.set_text_color(*_rgb(e.color))
        x, y = p(e.x + pad, e.y + pad)
        width = (x1 - x0 - 2 * pad) * k if e.type == "sticky" and x1 > x0 else 0
        pdf.set_xy(x, y)
        pdf.multi_cell(width if width > 5 else 120, size_pt / 2.83 * 1.2, _latin1(e.text))


# --- notes ----------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<])")


def _notes_lines(state: bytes) -> list[tuple[list[tuple[str, dict]], dict]]:
    """Quill's model: lines of (text, inline attributes) runs, each with its line attributes (on the newline)."""
    from pycrdt import Doc, Text

    doc = Doc()
    doc.apply_update(state)
    lines: list[tuple[list[tuple[str, dict]], dict]] = []
    runs: list[tuple[str, dict]] = []
    for op in doc.get("body", type=Text).diff()[:200_000]:
        value, attrs = op[0], (op[1] or {})
        if not isinstance(value, str):
            continue
        parts = value.split("\n")
        for i, part in enumerate(parts):
            if part:
                runs.append((part, attrs))
            if i < len(parts) - 1:
                lines.append((runs, attrs))
                runs = []
    if runs:
        lines.append((runs, {}))
    return lines


def notes_markdown(state: bytes) -> str:
    out, in_code, number = [], False, 0
    for runs, line in _notes_lines(state):
        if line.get("code-block"):
            if not in_code:
                out.append("```")
                in_code = True
            out.append("".join(t for t, _ in runs).replace("```", "'''"))
            continue
        if in_code:
            out.append("```")
            in_code = False
        text = "".join(_md_inline(t, a) for t, a in runs)
        header = _header(line)
        kind = line.get("list")
        number = number + 1 if kind == "ordered" else 0
        if 1 <= header <= 6:
            text = "#" * header + " " + text
        elif kind == "ordered":
            text = f"{number}. {text}"
        elif kind in ("bullet", "unchecked", "checked"):
            text = "- " + text
        if line.get("blockquote"):
            text = "> " + text
        out.append(text)
    if in_code:
        out.append("```")
    return "\n".join(out).rstrip() + "\n"


def _header(line: dict) -> int:
    value = line.get("header")  # pycrdt gives numbers as floats
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 6 else 0


def _md_inline(text: str, attrs: dict) -> str:
    if attrs.get("code"):
        return "`" + text.replace("`", "'") + "`"
    text = _MD_SPECIAL.sub(r"\\\1", text)
    if attrs.get("bold"):
        text = f"**{text}**"
    if attrs.get("italic"):
        text = f"*{text}*"
    if attrs.get("strike"):
        text = f"~~{text}~~"
    link = attrs.get("link")
    if isinstance(link, str) and re.match(r"^(https?|mailto):", link):
        text = f"[{text}](<{link.replace('>', '%3E')}>)"
    return text


def notes_pdf(state: bytes, *, title: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(title))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(0, 8, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    number = 0
    for runs, line in _notes_lines(state):
        header = _header(line)
        kind = line.get("list")
        number = number + 1 if kind == "ordered" else 0
        prefix = f"{number}. " if kind == "ordered" else ("- " if kind else ("> " if line.get("blockquote") else ""))
        size = {1: 16, 2: 14, 3: 12}.get(header, 11)
        family = "Courier" if line.get("code-block") else "Helvetica"
        if not runs:
            pdf.ln(5)
            continue
        pdf.set_font(family, "B" if header else "", size)
        pdf.write(6, _latin1(prefix))
        for text, attrs in runs:
            style = ("B" if attrs.get("bold") or header else "") + ("I" if attrs.get("italic") else "") + \
                ("U" if attrs.get("underline") else "")
            pdf.set_font(family, style, size)
            pdf.write(6, _latin1(text))
        pdf.ln(7)
    return bytes(pdf.output())
