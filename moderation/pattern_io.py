"""Pattern lists as CSV files (`kind,pattern,note` with a header): export for a spreadsheet, import back.

Export goes through config.exports, which guards against spreadsheet formula injection: a cell starting with
= + - @ (or a tab or line break) gets a leading ' so a spreadsheet shows it as text; import takes that quote off
again, so a file round-trips unchanged. Import reads UTF-8 with or without a byte-order mark, validates each row with
patterns.validate_rule, reports every bad row by its line number, and writes the good rows in one transaction
(policy_services.pattern_rules_upsert: new rules added, duplicates skipped), so importing the same file again
after fixing its bad rows is safe.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.http import HttpResponse

from config.exports import csv_response, csv_writer
from moderation import patterns, policy_services
from moderation.models import PatternList

HEADER = ["kind", "pattern", "note"]
MAX_BYTES = 1024 * 1024
MAX_ROWS = 5000
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")  # as config.exports.csv_safe


def _unguard(value: str) -> str:
    """Undo config.exports.csv_safe: the quote it puts before a cell that could start a formula."""
    if value[:1] == "'" and value[1:].lstrip(" ").startswith(_FORMULA_TRIGGERS):
        return value[1:]
    return value


def _rows(plist: PatternList):
    return ([rule.kind, rule.pattern, rule.note] for rule in plist.rules.order_by("id").iterator())


def export_response(plist: PatternList) -> HttpResponse:
    """The list's rules as a CSV download (config.exports: formula-safe cells, header first)."""
    response, writer = csv_response(f"pattern-list-{plist.pk}.csv", HEADER)
    writer.writerows(_rows(plist))
    return response


def export_csv(plist: PatternList) -> str:
    buf = io.StringIO()
    writer = csv_writer(buf)
    writer.writerow(HEADER)
    writer.writerows(_rows(plist))
    return buf.getvalue()


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_csv(data: bytes) -> tuple[list[tuple[str, str, str]], ImportReport]:
    """The valid (kind, pattern, note) rows of a file and a report of the bad ones. Raises ValidationError
    for a file that cannot be read at all (too big, not UTF-8, no header, too many rows)."""
    if len(data) > MAX_BYTES:
        raise ValidationError(f"The file is larger than {MAX_BYTES // 1024} KB: split it.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"The file is not UTF-8 text (byte {exc.start + 1}): save it as CSV UTF-8.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    report = ImportReport()
    try:
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:3]][:2] != HEADER[:2]:
            raise ValidationError("The first line must be the header: kind,pattern,note")
        rows: list[tuple[str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        count = 0
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            count += 1
            if count > MAX_ROWS:
                raise ValidationError(f"The file has more than {MAX_ROWS:,} rules: split it.")
            cells = [_unguard(c) for c in row] + ["", ""]
            kind, pattern, note = cells[0].strip().lower(), cells[1], cells[2].strip()
            if len(row) > 3 and any(c.strip() for c in row[3:]):
                report.errors.append((start, "Too many columns (put commas inside quotes)."))
                continue
            try:
                pattern = patterns.validate_rule(kind, pattern)
            except ValidationError as exc:
                report.errors.append((start, " ".join(exc.messages)))
                continue
            if len(note) > 200:
                report.errors.append((start, "A note is at most 200 characters."))
                continue
            if (kind, pattern) in seen:
                report.skipped += 1
                continue
            seen.add((kind, pattern))
            rows.append((kind, pattern, note))
    except csv.Error as exc:
        raise ValidationError(f"Line {reader.line_num}: not a valid CSV file ({exc}).") from None
    return rows, report


def import_csv(*, actor, plist: PatternList, data: bytes, filename: str = "") -> ImportReport:
    """Upsert a file's valid rows into `plist` (one transaction, one audit entry); bad rows are reported and
    left out."""
    rows, report = parse_csv(data)
    digest = hashlib.sha256(data).hexdigest()
    counts = policy_services.pattern_rules_upsert(actor=actor, list_id=plist.pk, rows=rows,
                                                  source=f"csv {filename[:60]} sha256:{digest[:16]}".strip())
    report.added, report.updated = counts["added"], counts["updated"]
    report.skipped += counts["skipped"]
    return report

