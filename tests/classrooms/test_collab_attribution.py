"""Per-author contribution counts replayed from a document's update log (classrooms/collab_attribution.py).

Two replicas (one per person) edit in the docs/collab.md schema and exchange updates the way the server relays
them; the log they leave is replayed and the counts compared with what each person did. Pure: no database.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pycrdt import Array, Doc, Map, Text

from classrooms.collab_attribution import Counts, attribute, merge_counts

T0 = dt.datetime(2025, 3, 12, 9, 0, tzinfo=dt.UTC)
ANA, BEN = 11, 22


def at(minute: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute)


class Room:
    """Replicas that see each other's updates, and the server's log of who sent what."""

    def __init__(self, *authors: int | None) -> None:
        self.replicas = {author: Doc() for author in authors}
        self.log: list[tuple[int | None, bytes, dt.datetime]] = []

    def edit(self, author: int | None, minute: int, change) -> bytes:
        doc = self.replicas[author]
        before = doc.get_state()
        with doc.transaction():
            change(doc)
        update = doc.get_update(before)
        for other, replica in self.replicas.items():
            if other != author:
                replica.apply_update(update)
        self.log.append((author, update, at(minute)))
        return update


def elements(doc: Doc) -> Map:
    return doc.get("elements", type=Map)


def stroke(id: str, author: int, points: list[float]):
    def change(doc: Doc) -> None:
        elements(doc)[id] = Map(
            {
                "id": id,
                "type": "pen",
                "page": "p1",
                "author": author,
                "z": 1,
                "color": "#000000",
                "width": 2,
                "points": Array(points),
            }
        )

    return change


def board_history() -> Room:
    room = Room(ANA, BEN, None)
    room.edit(None, 0, lambda doc: doc.get("pages", type=Array).append("p1"))  # the server's first page
    # Ana: two elements in one update, then she extends her stroke twice
    room.edit(ANA, 1, lambda doc: (stroke("a-1", ANA, [1.0, 1.0])(doc), stroke("a-2", ANA, [5.0, 5.0])(doc)))
    room.edit(ANA, 2, lambda doc: elements(doc)["a-1"]["points"].extend([2.0, 2.0]))
    room.edit(ANA, 3, lambda doc: elements(doc)["a-1"]["points"].extend([3.0, 3.0]))
    # Ben: one sticky with text; then one update that edits Ana's a-2 twice (counted once) and his sticky's text
    room.edit(
        BEN,
        4,
        lambda doc: elements(doc).__setitem__(
            "b-1", Map({"id": "b-1", "type": "sticky", "page": "p1", "author": BEN, "z": 2, "text": Text("Hi")})
        ),
    )

    def ben_edits(doc: Doc) -> None:
        elements(doc)["a-2"]["color"] = "#ff0000"
        elements(doc)["a-2"]["z"] = 9
        text = elements(doc)["b-1"]["text"]
        text.insert(len(text), " there")

    room.edit(BEN, 5, ben_edits)
    # Ben erases Ana's first stroke; Ana adds and, in one later update, erases another
    room.edit(BEN, 6, lambda doc: elements(doc).pop("a-1"))
    room.edit(ANA, 7, stroke("a-3", ANA, [7.0, 7.0]))
    room.edit(ANA, 8, lambda doc: elements(doc).pop("a-3"))
    # the server (None) adds an element: applied, counted for no one
    room.edit(None, 9, stroke("s-1", 0, [0.0, 0.0]))
    return room


def size(room: Room, author: int) -> int:
    return sum(len(update) for who, update, _ in room.log if who == author)


def test_board_counts_per_author_for_a_two_author_history():
    room = board_history()
    malformed = (BEN, b"\x01\x02 not an update", at(30))
    state, counts = attribute("board", None, [*room.log[:5], malformed, *room.log[5:]])

    assert set(counts) == {ANA, BEN}
    assert counts[ANA] == Counts(
        updates=5,
        bytes=size(room, ANA),
        elements_added=3,
        elements_removed=1,
        elements_edited=2,
        chars_added=0,
        chars_removed=0,
        first_at=at(1),
        last_at=at(8),
    )
    assert counts[BEN] == Counts(
        updates=3,
        bytes=size(room, BEN),
        elements_added=1,
        elements_removed=1,
        elements_edited=2,
        chars_added=0,
        chars_removed=0,
        first_at=at(4),
        last_at=at(6),
    )  # the malformed update at minute 30 is counted nowhere
    replayed = Doc()
    replayed.apply_update(state)
    assert sorted(elements(replayed).keys()) == ["a-2", "b-1", "s-1"]
    assert str(elements(replayed)["b-1"]["text"]) == "Hi there"
    assert elements(replayed)["a-2"]["color"] == "#ff0000"


def test_board_counts_are_the_same_when_the_log_is_split_at_a_checkpoint():
    room = board_history()
    whole_state, whole = attribute("board", None, room.log)
    checkpoint, first = attribute("board", None, room.log[:4])
    state, second = attribute("board", checkpoint, room.log[4:])
    assert merge_counts(first, second) == whole
    a, b = Doc(), Doc()
    a.apply_update(state)
    b.apply_update(whole_state)
    assert a.get_state() == b.get_state()


def test_an_element_in_the_base_state_removed_later_counts_as_removed_not_added():
    room = board_history()
    checkpoint, _ = attribute("board", None, room.log)
    ana = Doc()
    ana.apply_update(checkpoint)
    before = ana.get_state()
    elements(ana).pop("b-1")
    _, counts = attribute("board", checkpoint, [(ANA, ana.get_update(before), at(40))])
    assert (counts[ANA].elements_added, counts[ANA].elements_removed, counts[ANA].elements_edited) == (0, 1, 0)


def test_notes_counts_characters_in_code_points_per_author():
    room = Room(ANA, BEN)
    body = "body"
    room.edit(ANA, 1, lambda doc: doc.get(body, type=Text).insert(0, "Hello wörld 😀\n"))  # 14 characters
    # Ben replaces "wörld" (5 characters, 6 UTF-8 bytes) with "Welt": pycrdt indexes in UTF-8 bytes
    room.edit(
        BEN,
        2,
        lambda doc: (doc.get(body, type=Text).__delitem__(slice(6, 12)), doc.get(body, type=Text).insert(6, "Welt")),
    )
    room.edit(ANA, 3, lambda doc: doc.get(body, type=Text).format(0, 5, {"bold": True}))  # formatting only
    room.edit(ANA, 4, lambda doc: doc.get(body, type=Text).__delitem__(slice(10, 15)))  # " 😀" (2 characters)
    state, counts = attribute("notes", None, [(None, b"", at(0)), *room.log])

    assert counts[ANA] == Counts(
        updates=3, bytes=size(room, ANA), chars_added=14, chars_removed=2, first_at=at(1), last_at=at(4)
    )
    assert counts[BEN] == Counts(
        updates=1, bytes=size(room, BEN), chars_added=4, chars_removed=5, first_at=at(2), last_at=at(2)
    )
    replayed = Doc()
    replayed.apply_update(state)
    assert str(replayed.get(body, type=Text)) == "Hello Welt\n"


def test_an_update_applied_twice_changes_and_counts_nothing_the_second_time():
    room = Room(ANA)
    update = room.edit(ANA, 1, stroke("a-1", ANA, [1.0, 1.0]))
    _, counts = attribute("board", None, [(ANA, update, at(1)), (ANA, update, at(2))])
    # the second copy is a well-formed update (counted as sent) that changes nothing
    assert (counts[ANA].updates, counts[ANA].elements_added) == (2, 1)


def test_empty_history_and_unknown_kind():
    state, counts = attribute("notes", None, [])
    assert counts == {}
    assert state == Doc().get_update()
    with pytest.raises(ValueError):
        attribute("slides", None, [])
    with pytest.raises(ValueError):
        attribute("board", b"\x05garbage", [])  # a broken checkpoint is a server bug, not skipped


def test_merge_counts_sums_and_keeps_the_time_span_without_touching_its_inputs():
    a = {ANA: Counts(updates=2, bytes=10, elements_added=1, first_at=at(5), last_at=at(9))}
    b = {
        ANA: Counts(updates=1, bytes=4, elements_removed=1, chars_added=3, first_at=at(2), last_at=at(6)),
        BEN: Counts(updates=1, bytes=7, chars_removed=2, first_at=at(3), last_at=at(3)),
    }
    merged = merge_counts(a, b)
    assert merged == {
        ANA: Counts(
            updates=3, bytes=14, elements_added=1, elements_removed=1, chars_added=3, first_at=at(2), last_at=at(9)
        ),
        BEN: Counts(updates=1, bytes=7, chars_removed=2, first_at=at(3), last_at=at(3)),
    }
    assert a[ANA].updates == 2 and b[ANA].updates == 1  # inputs untouched
    merged[BEN].updates = 99
    assert b[BEN].updates == 1  # and not shared with the result
    assert merge_counts({ANA: Counts()}, {ANA: Counts(first_at=at(1), last_at=at(1))})[ANA].first_at == at(1)
