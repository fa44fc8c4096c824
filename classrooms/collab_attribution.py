"""Who did what in a whiteboard or notes log: replays updates one at a time on a document and attributes each
observed change to the update's author (the signed-in sender, stored with the row; never a client's claim).

Used by the compactor (classrooms/collab_services.document_compact), which folds the counts into
CollabContribution rows before it deletes the log rows they came from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, fields


@dataclass
class Counts:
    updates: int = 0
    bytes: int = 0
    elements_added: int = 0
    elements_removed: int = 0
    elements_edited: int = 0
    chars_added: int = 0
    chars_removed: int = 0
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None

    def add(self, other: Counts) -> None:
        for f in fields(self):
            if f.name in ("first_at", "last_at"):
                continue
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.first_at = min(filter(None, [self.first_at, other.first_at]), default=None)
        self.last_at = max(filter(None, [self.last_at, other.last_at]), default=None)


def attribute(kind: str, base_state: bytes | None,
              updates: Iterable[tuple[int | None, bytes, dt.datetime]]) -> tuple[bytes, dict[int, Counts]]:
    """Apply `updates` (author id, data, time) in order on top of `base_state`; return the resulting whole
    state and per-author counts. System rows (author None) and malformed rows change the state (when they
    decode) but are counted for nobody."""
    from pycrdt import Doc, Map, MapEvent, Text, TextEvent

    doc = Doc()
    if base_state:
        doc.apply_update(base_state)
    current = Counts()
    edited: set[str] = set()

    def on_board(events) -> None:
        for event in events:
            path = list(event.path)
            if not path and isinstance(event, MapEvent):
                for change in event.keys.values():
                    if change.get("action") == "add":
                        current.elements_added += 1
                    elif change.get("action") == "delete":
                        current.elements_removed += 1
                    else:  # an element replaced under its key
                        current.elements_edited += 1
                continue
            if path:
                edited.add(str(path[0]))
            if isinstance(event, TextEvent):
                _count_text(event.delta, current)

    def on_notes(event) -> None:
        _count_text(event.delta, current)

    # Kept referenced for the replay (the document and its observers are thrown away afterwards).
    if kind == "board":
        subscription = doc.get("elements", type=Map).observe_deep(on_board)
    else:
        subscription = doc.get("body", type=Text).observe(on_notes)
    counts: dict[int, Counts] = {}
    for author, data, at in updates:
        current.__init__()
        edited.clear()
        try:
            doc.apply_update(data)
        except ValueError:
            continue
        if author is None:
            continue
        current.elements_edited += len(edited)
        current.updates, current.bytes, current.first_at, current.last_at = 1, len(data), at, at
        counts.setdefault(author, Counts()).add(current)
    del subscription
    return doc.get_update(), counts


def _count_text(delta, counts: Counts) -> None:
    for op in delta:
        if "insert" in op:
            value = op["insert"]
            counts.chars_added += len(value) if isinstance(value, str) else 1
        elif "delete" in op:
            counts.chars_removed += op["delete"]  # pycrdt reports deletions in UTF-8 bytes


def merge_counts(a: dict[int, Counts], b: dict[int, Counts]) -> dict[int, Counts]:
    out: dict[int, Counts] = {}
    for source in (a, b):
        for user_id, c in source.items():
            out.setdefault(user_id, Counts()).add(c)
    return out
