"""CSV downloads: the one way the application writes a spreadsheet (every export goes through here).

Any cell a spreadsheet could run as a formula is defused (OWASP "CSV injection"), and the response is
marked as student data that must not be cached.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable

from django.http import HttpResponse, StreamingHttpResponse

_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_safe(value) -> str:
    """A cell a spreadsheet will not run: text that could start a formula (= + - @ tab CR LF) is prefixed
    with a quote. Leading spaces are looked through, since some spreadsheets skip them."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_TRIGGERS) or text.lstrip(" ").startswith(_FORMULA_TRIGGERS):
        return "'" + text
    return text


class _SafeWriter:
    def __init__(self, writer):
        self._writer = writer

    def writerow(self, row: Iterable) -> None:
        self._writer.writerow([csv_safe(v) for v in row])

    def writerows(self, rows: Iterable[Iterable]) -> None:
        for row in rows:
            self.writerow(row)


def csv_response(filename: str, header: list[str]) -> tuple[HttpResponse, _SafeWriter]:
    """A CSV download and a writer whose every cell goes through `csv_safe`."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"  # student records
    response.write("\ufeff")  # lets spreadsheet apps detect UTF-8 names
    writer = _SafeWriter(csv.writer(response, quoting=csv.QUOTE_ALL))
    writer.writerow(header)
    return response, writer


def csv_writer(stream) -> _SafeWriter:
    """A writer to any text stream (a management command's stdout) whose every cell goes through `csv_safe`."""
    return _SafeWriter(csv.writer(stream, quoting=csv.QUOTE_ALL))


def csv_stream_response(filename: str, lines: Iterable[str]) -> StreamingHttpResponse:
    """A CSV download streamed from `lines` (already written through `csv_writer`, e.g. a long audit export
    that must not be held in memory)."""
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
