"""Per-author contribution counts for a collaborative document, found by replaying its update log.

The log (docs/collab.md, `CollabUpdate`) holds each accepted client update with its author. Replaying the
updates one at a time on a pycrdt document and observing what each one changes tells who added, removed or
edited which board element and who typed or deleted how many characters of the notes. The compactor folds
these counts into `CollabContribution`; the tail of the log not yet folded is replayed on read and added with
`merge_counts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from pycrdt import Doc, Map, Text

KINDS = ("board", "notes")


@dataclass
class Counts:
    """What one person did to one document. Characters are Unicode code points."""

    updates: int = 0
    bytes: int = 0
    elements_added: int = 0
    elements_removed: int = 0
    elements_edited: int = 0
    chars_added: int = 0
    chars_removed: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add_update(self, size: int, at: datetime) -> None:
        self.updates += 1
        self.bytes += size
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)


@dataclass
class _Change:
    """What the update being applied changed, collected by the observer."""

    added: set[str]
    removed: set[str]
    edited: set[str]
    chars_added: int = 0
    deletes: bool = False


def _new_change() -> _Change:
    return _Change(added=set(), removed=set(), edited=set())


def attribute(
    kind: str, base_state: bytes | None, updates: Iterable[tuple[int | None, bytes, datetime]]
) -> tuple[bytes, dict[int, Counts]]:
    """Apply `updates` (author id or None for the server, update bytes, time) in order on top of `base_state`.

    Returns the resulting full state and the counts per author. A malformed update is skipped and counted
    nowhere; updates by None (server/system) are applied but not counted. A broken `base_state` raises
    ValueError: it is the server's own checkpoint, so that is a bug to surface, not user input to skip.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}")
    doc = Doc()
    if base_state:
        doc.apply_update(bytes(base_state))
    change = _new_change()

    if kind == "board":
        root = doc.get("elements", type=Map)

        def observe(events) -> None:
            for event in events:
                if event.path:  # inside an element: its key is the first step of the path
                    key = event.path[0]
                    if isinstance(key, str):
                        change.edited.add(key)
                    continue
                for key, detail in event.keys.items():
                    action = detail.get("action")
                    if action == "add":
                        change.added.add(key)
                    elif action == "delete":
                        change.removed.add(key)
                    elif action == "update":  # the element's map replaced under the same id
                        change.edited.add(key)

        subscription = root.observe_deep(observe)
        text_length = 0
    else:
        root = doc.get("body", type=Text)

        def observe(events) -> None:
            for event in events:
                for op in event.delta:
                    insert = op.get("insert")
                    if isinstance(insert, str):
                        change.chars_added += len(insert)
                    elif insert is not None:
                        change.chars_added += 1  # an embed is one character in Quill
                    if op.get("delete"):
                        # yrs reports deletions in UTF-8 bytes; the length difference below gives code points
                        change.deletes = True

        subscription = root.observe_deep(observe)
        text_length = len(str(root))

    counts: dict[int, Counts] = {}
    try:
        for author, update, at in updates:
            change = _new_change()
            try:
                doc.apply_update(bytes(update))
            except ValueError:  # not a decodable update: the stored document is unchanged by it
                continue
            if kind == "notes":
                removed = 0
                if change.deletes or change.chars_added:
                    new_length = len(str(root))
                    removed = max(text_length + change.chars_added - new_length, 0)
                    text_length = new_length
            if author is None:
                continue
            entry = counts.setdefault(author, Counts())
            entry.add_update(len(update), at)
            if kind == "board":
                # An element added and removed by one update is neither; an edit of a new or removed one is not
                # an edit of an existing element.
                entry.elements_added += len(change.added - change.removed)
                entry.elements_removed += len(change.removed - change.added)
                entry.elements_edited += len(change.edited - change.added - change.removed)
            else:
                entry.chars_added += change.chars_added
                entry.chars_removed += removed
    finally:
        root.unobserve(subscription)
    return doc.get_update(), counts


def merge_counts(a: dict[int, Counts], b: dict[int, Counts]) -> dict[int, Counts]:
    """The sum of two count maps (e.g. the folded `CollabContribution` rows and the replayed log tail)."""
    merged = {author: replace(entry) for author, entry in a.items()}
    for author, entry in b.items():
        if author not in merged:
            merged[author] = replace(entry)
            continue
        into = merged[author]
        for name in (
            "updates",
            "bytes",
            "elements_added",
            "elements_removed",
            "elements_edited",
            "chars_added",
            "chars_removed",
        ):
            setattr(into, name, getattr(into, name) + getattr(entry, name))
        times = [t for t in (into.first_at, entry.first_at) if t is not None]
        into.first_at = min(times) if times else None
        times = [t for t in (into.last_at, entry.last_at) if t is not None]
        into.last_at = max(times) if times else None
    return merged
