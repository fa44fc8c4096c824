"""The per-process side of the shared whiteboard and notes (docs/collab.md).

Each server process that has sockets in a session's collaboration room holds that session's two Yjs
documents in memory (pycrdt), loaded once from PostgreSQL (the latest checkpoint plus the log after it) and
kept current by every update published for the room, from this process or another (applying an update twice
changes nothing, so no ordering or de-duplication is needed).

An update from a socket is checked before anything else sees it: decodable, within limits, written only by
replicas bound to its sender, new board elements authored by the sender; then applied, its text screened
by the moderation pattern stage (a hit is masked by a server edit in the same batch), stored with the
updates of the same flush window in one transaction, published once, and only then acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from config.realtime.hub import Member, hub
from config.realtime.transport import db_call, encode_frame, publish_frame_async

logger = logging.getLogger("aula.collab")

PROCESS_TAG = uuid.uuid4().hex[:12]  # marks this process's publishes so it does not apply them twice
ELEMENT_TYPES = frozenset({"pen", "line", "arrow", "rect", "ellipse", "text", "sticky", "image"})
SERVER_ORIGIN = "aula-moderation"


class Refusal(Exception):
    """An update or sync the server will not take; becomes an error frame (the socket stays open)."""

    def __init__(self, code: str, message: str, **details):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal("invalid_update", "Not valid base64.") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """A Yjs state vector (lib0 varuints: count, then client/clock pairs) as {client: clock}."""
    out: dict[int, int] = {}
    pos = 0

    def varuint() -> int:
        nonlocal pos
        num, shift = 0, 0
        while True:
            if pos >= len(sv) or shift > 63:
                raise ValueError("truncated state vector")
            byte = sv[pos]
            pos += 1
            num |= (byte & 0x7F) << shift
            if byte < 0x80:
                return num
            shift += 7

    for _ in range(varuint()):
        client = varuint()
        out[client] = varuint()
    return out


class _Reader:
    """lib0 decoding over bytes (the primitives of the Yjs update format)."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ValueError("truncated update")
        self.pos += 1
        return self.buf[self.pos - 1]

    def varuint(self) -> int:
        num, shift = 0, 0
        while True:
            b = self.byte()
            num |= (b & 0x7F) << shift
            if b < 0x80:
                return num
            shift += 7
            if shift > 70:
                raise ValueError("varuint too long")

    def varint(self) -> None:
        b = self.byte()
        while b & 0x80:
            b = self.byte()

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError("truncated update")
        self.pos += n

    def string(self) -> None:
        self.skip(self.varuint())

    def any(self, depth: int = 0) -> None:
        if depth > 64:
            raise ValueError("value nested too deep")
        tag = self.byte()
        if tag in (127, 126, 121, 120):
            return
        if tag == 125:
            self.varint()
        elif tag == 124:
            self.skip(4)
        elif tag in (123, 122):
            self.skip(8)
        elif tag in (119, 116):
            self.string()
        elif tag == 118:
            for _ in range(self.varuint()):
                self.string()
                self.any(depth + 1)
        elif tag == 117:
            for _ in range(self.varuint()):
                self.any(depth + 1)
        else:
            raise ValueError(f"unknown value tag {tag}")


def update_writers(update: bytes) -> set[int]:
    """The Yjs replicas (client ids) whose structs a v1 update carries.

    Read from the update's struct section itself (the format of Yjs' UpdateDecoderV1 / readClientsStructRefs):
    pycrdt's `get_state(update)` only reports clients whose structs start at clock 0, so an edit made by
    a replica that already wrote would go unseen. Raises ValueError on a malformed update."""
    r = _Reader(update)
    writers: set[int] = set()
    for _ in range(r.varuint()):
        structs = r.varuint()
        client = r.varuint()
        r.varuint()  # first clock
        for _ in range(structs):
            info = r.byte()
            ref = info & 0x1F
            if ref == 0:  # GC
                r.varuint()
                continue
            if ref == 10:  # Skip
                r.varuint()
                continue
            writers.add(client)
            if info & 0x80:
                r.varuint(), r.varuint()  # origin
            if info & 0x40:
                r.varuint(), r.varuint()  # right origin
            if not info & 0xC0:
                if r.varuint() == 1:
                    r.string()  # parent: a root type's name
                else:
                    r.varuint(), r.varuint()  # parent: an item id
                if info & 0x20:
                    r.string()  # parent key (map entry)
            if ref == 1:  # deleted
                r.varuint()
            elif ref == 2:  # JSON
                for _ in range(r.varuint()):
                    r.string()
            elif ref in (3, 4, 5):  # binary, string, embed
                r.string()
            elif ref == 6:  # format
                r.string()
                r.string()
            elif ref == 7:  # type
                if r.varuint() in (3, 5):
                    r.string()
            elif ref == 8:  # any
                for _ in range(r.varuint()):
                    r.any()
            elif ref == 9:  # subdocument
                r.string()
                r.any()
            else:
                raise ValueError(f"unknown content {ref}")
    for _ in range(r.varuint()):  # delete set: client, ranges of (clock, length)
        r.varuint()
        for _ in range(r.varuint()):
            r.varuint(), r.varuint()
    return writers


# --- one document held by this process ------------------------------------------------------------------

@dataclass
class TextChange:
    """Where an update changed text (to screen): the notes body around `at`, or a board element's text."""

    element: str | None = None
    at: list[tuple[int, int]] = field(default_factory=list)  # changed [start, end) ranges of the notes


class SharedDoc:
    def __init__(self, kind: str, document_id: int, parts: list[bytes], clients: dict[int, int], tail: int):
        from pycrdt import Doc, Map, Text

        self.kind, self.document_id = kind, document_id
        self.doc = Doc()
        self.clients: dict[int, int] = dict(clients)
        self.tail = tail  # log rows not yet folded into a checkpoint (as far as this process knows)
        self.size = 0
        for part in parts:
            self.apply(part)
        self._capture: list[TextChange] | None = None
        if kind == "board":
            self.elements = self.doc.get("elements", type=Map)
            self._subscription = self.elements.observe_deep(self._on_board)
        else:
            self.body = self.doc.get("body", type=Text)
            self._subscription = self.body.observe(self._on_notes)

    def apply(self, data: bytes) -> None:
        self.doc.apply_update(data)
        self.size += len(data)

    def apply_observed(self, data: bytes) -> list[TextChange]:
        self._capture = []
        try:
            self.apply(data)
            return self._capture
        finally:
            self._capture = None

    def _on_board(self, events) -> None:
        if self._capture is None:
            return
        from pycrdt import Map, MapEvent, Text, TextEvent

        for event in events:
            path = list(event.path)
            if isinstance(event, TextEvent) and path:
                self._capture.append(TextChange(element=str(path[0])))
            elif isinstance(event, MapEvent):
                for key, change in event.keys.items():
                    value = change.get("newValue")
                    if not path and isinstance(value, Map) and isinstance(value.get("text"), Text):
                        self._capture.append(TextChange(element=str(key)))
                    elif path and key == "text":
                        self._capture.append(TextChange(element=str(path[0])))

    def _on_notes(self, event) -> None:
        if self._capture is None:
            return
        pos, change = 0, TextChange()
        for op in event.delta:
            if "retain" in op:
                pos += op["retain"]
            elif "insert" in op:
                inserted = op["insert"]
                length = len(inserted) if isinstance(inserted, str) else 1
                change.at.append((pos, pos + length))
                pos += length
            elif "delete" in op:
                change.at.append((pos, pos))  # joining two lines can make a word
        if change.at:
            self._capture.append(change)

    def validate(self, data: bytes, user_id: int) -> set[int]:
        """Refuse what is not a well-formed update from this person; return the replicas it writes as."""
        from pycrdt import Doc, Map

        scratch = Doc()
        try:
            replicas = update_writers(data)
            scratch.apply_update(data)
        except ValueError:
            raise Refusal("invalid_update", "This is not a Yjs document update.") from None
        if self.kind == "board":
            # New elements are whole in the update (their parent is the `elements` root): each must be an element
            # map of a known type authored by the sender. Edits of existing elements wait in the scratch
            # document for their parents and are not listed here.
            elements = scratch.get("elements", type=Map)
            for _key, element in elements.items():
                if not isinstance(element, Map):
                    raise Refusal("invalid_update", "A board element must be a map.")
                if element.get("type") not in ELEMENT_TYPES:
                    raise Refusal("invalid_update", "Unknown board element type.")
                author = element.get("author")
                if not isinstance(author, (int, float)) or int(author) != user_id:
                    raise Refusal("forbidden", "An element you add must be yours.")
        return replicas

    def text_of(self, change: TextChange) -> list[tuple[int, str]]:
        """The text to screen for a change: (UTF-8 byte offset, text) of whole lines of the live document.

        pycrdt (yrs) counts text positions in UTF-8 bytes (lengths, event deltas and edit indexes alike), so
        everything here is in bytes of the encoded text."""
        from pycrdt import Map, Text

        if self.kind == "board":
            element = self.elements.get(change.element) if change.element else None
            text = element.get("text") if isinstance(element, Map) else None
            if isinstance(text, Text):
                value = str(text)
                return [(0, value)] if value.strip() else []
            return []
        value = str(self.body).encode("utf-8")
        # Each changed range is widened to whole lines, and each line screened on its own (a hit masks one
        # line, not the page).
        starts: set[int] = set()
        for a, b in change.at:
            a, b = max(0, min(a, len(value))), max(0, min(b, len(value)))
            line = value.rfind(b"\n", 0, a) + 1
            while True:
                starts.add(line)
                nxt = value.find(b"\n", line)
                if nxt == -1 or nxt >= b:
                    break
                line = nxt + 1
        spans = []
        for start in sorted(starts):
            end = value.find(b"\n", start)
            text = value[start:len(value) if end == -1 else end].decode("utf-8", "replace")
            if text.strip():
                spans.append((start, text))
        return spans

    def mask(self, change: TextChange, start: int, original: str, replacement: str) -> bytes:
        """A server edit (its own replica) that replaces `original` at byte offset `start` with
        `replacement`; returns the update to store and relay with the author's."""
        from pycrdt import Map, Text

        before = self.doc.get_state()
        if self.kind == "board":
            element = self.elements.get(change.element)
            target = element.get("text") if isinstance(element, Map) else None
        else:
            target = self.body
        raw = original.encode("utf-8")
        if not isinstance(target, Text) or str(target).encode("utf-8")[start:start + len(raw)] != raw:
            return b""

        def at(i: int) -> int:
            return start + len(original[:i].encode("utf-8"))

        with self.doc.transaction(origin=SERVER_ORIGIN):
            if len(replacement) == len(original):
                # Same length (letters masked): replace only the characters that differ, keeping formatting;
                # from the end, so earlier offsets stay valid.
                runs, i = [], 0
                while i < len(original):
                    if original[i] == replacement[i]:
                        i += 1
                        continue
                    j = i
                    while j < len(original) and original[j] != replacement[j]:
                        j += 1
                    runs.append((i, j))
                    i = j
                for i, j in reversed(runs):
                    del target[at(i):at(j)]
                    target.insert(at(i), replacement[i:j])
            else:
                del target[start:start + len(raw)]
                target.insert(start, replacement)
        return self.doc.get_update(before)


# --- one session's room in this process -----------------------------------------------------------------

@dataclass
class _Pending:
    kind: str
    user_id: int | None
    data: bytes
    future: asyncio.Future | None


class CollabRoom:
    """A session's two documents, awareness and flush batching in this process."""

    def __init__(self, session, room_key: str):
        self.session = session
        self.room_key = room_key
        self.docs: dict[str, SharedDoc] = {}
        self.locals: set = set()
        self.awareness: dict[str, dict[int, tuple[dict, float]]] = {"board": {}, "notes": {}}
        self._aw_dirty: dict[str, dict[int, dict | None]] = {"board": {}, "notes": {}}
        self._aw_timer: asyncio.TimerHandle | None = None
        self._batch: list[_Pending] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._buffer: list[str] | None = []  # frames that arrive while loading
        self.member = Member(self._on_frame, user_id=None, on_control=self._on_control)
        self.loaded: asyncio.Future | None = None
        self.stale = False
        self.unload_timer: asyncio.TimerHandle | None = None

    # --- loading ---------------------------------------------------------------------------------------
    async def load(self) -> None:
        from classrooms import selectors

        await hub().join(self.room_key, self.member)  # first: nothing published meanwhile is missed
        data = await db_call(selectors.collab_load)(self.session)
        self.docs = {kind: SharedDoc(kind, d["id"], d["parts"], d["clients"], d["tail"]) for kind, d in data.items()}
        buffered, self._buffer = self._buffer or [], None
        for frame in buffered:
            self._apply_frame(frame)
        self.stale = False

    async def reload(self) -> None:
        """After a failed store: this process's copy may hold updates the database does not; start again
        from the database (the senders were told to retry)."""
        from classrooms import selectors

        data = await db_call(selectors.collab_load)(self.session)
        for kind, d in data.items():
            old = self.docs.get(kind)
            self.docs[kind] = SharedDoc(kind, d["id"], d["parts"], {**(old.clients if old else {}), **d["clients"]},
                                        d["tail"])
        self.stale = False

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            await self._flush()
        if self._aw_timer is not None:
            self._aw_timer.cancel()
        await hub().leave(self.room_key, self.member)

    # --- frames from every process (the hub writes them here like to a socket) -----------------------
    async def _on_frame(self, message: dict) -> None:
        text = message.get("text")
        if not text:
            return
        if self._buffer is not None:
            self._buffer.append(text)
            return
        self._apply_frame(text)

    def _apply_frame(self, text: str) -> None:
        try:
            frame = json.loads(text)
            data = frame.get("data") or {}
            if data.get("p") == PROCESS_TAG:
                return
            kind = data.get("doc")
            if frame.get("type") == "update" and kind in self.docs:
                self.docs[kind].apply(base64.b64decode(data["update"]))
                self.docs[kind].tail += 1
            elif frame.get("type") == "awareness" and kind in self.awareness:
                now = time.monotonic()
                states = self.awareness[kind]
                for uid, state in (data.get("states") or {}).items():
                    states[int(uid)] = (state, now)
                for uid in data.get("gone") or ():
                    states.pop(int(uid), None)
            elif frame.get("type") == "clients" and data.get("doc") in self.docs:
                self.docs[data["doc"]].clients.update({int(k): int(v) for k, v in data["clients"].items()})
        except Exception:
            logger.warning("collab frame not applied room=%s", self.room_key, exc_info=True)
            self.stale = True  # reload from the database before the next use

    async def _on_control(self, message: dict) -> None:
        if message.get("action") == "locks":
            await self.refresh_edit()

    # --- edit permission (checked on every update frame; refreshed when a lock changes) -----------------
    async def refresh_edit(self, user_ids: list[int] | None = None) -> None:
        from classrooms import selectors

        ids = user_ids if user_ids is not None else sorted({c.user.pk for c in self.locals})
        if not ids:
            return
        reasons = await db_call(selectors.collab_edit_reasons)(self.session.pk, ids)
        for consumer in list(self.locals):
            if consumer.user.pk in reasons:
                await consumer.edit_changed(reasons[consumer.user.pk])

    # --- updates -------------------------------------------------------------------------------------
    async def submit(self, consumer, kind: str, data: bytes) -> list[dict]:
        """`accept` and wait until the update is stored."""
        stored, notices = await self.accept(consumer, kind, data)
        await stored
        return notices

    async def accept(self, consumer, kind: str, data: bytes) -> tuple[asyncio.Future, list[dict]]:
        """Check, apply and screen one client update and queue it for the next flush: (a future done once it
        is stored, notices for its sender). Raises Refusal, and then nothing was applied or queued.

        The socket does not wait for the store before reading its next frame (it acknowledges each update when
        its future is done): a drawing student's updates travel in a pipeline, not one per round trip."""
        if self.stale:
            await self.reload()
        doc = self.docs[kind]
        user_id = consumer.user.pk
        if len(data) > settings.AULA_COLLAB_MAX_UPDATE_BYTES:
            raise Refusal("too_large", "This change is too large.", limit=settings.AULA_COLLAB_MAX_UPDATE_BYTES)
        if doc.size + len(data) > settings.AULA_COLLAB_MAX_DOCUMENT_BYTES:
            raise Refusal("too_large", "This document is full: start a new page or export it.")
        replicas = doc.validate(data, user_id)
        unknown = [r for r in replicas if r not in doc.clients]
        if unknown:
            from classrooms import collab_services

            owners = await db_call(collab_services.clients_bind)(document_id=doc.document_id, client_ids=unknown,
                                                                 user_id=user_id)
            doc.clients.update(owners)
            await self._publish("clients", {"doc": kind, "clients": {str(k): v for k, v in owners.items()},
                                             "people": await consumer.people_for(set(owners.values()))})
        if any(doc.clients.get(r) != user_id for r in replicas):
            raise Refusal("forbidden", "This change writes as someone else.")
        changes = doc.apply_observed(data)
        notices, corrections = [], []
        if changes:
            corrections, notices = await self._screen(consumer, doc, changes)
        future = asyncio.get_running_loop().create_future()
        self._batch.append(_Pending(kind, user_id, data, future))
        for correction in corrections:
            self._batch.append(_Pending(kind, None, correction, None))
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                settings.AULA_COLLAB_FLUSH_MS / 1000, lambda: asyncio.ensure_future(self._flush()))
        return future, notices

    async def _screen(self, consumer, doc: SharedDoc, changes: list[TextChange]) -> tuple[list[bytes], list[dict]]:
        """The moderation pattern stage on the text an update changed (whole lines / whole element texts)."""
        spans = [(change, span) for change in changes for span in doc.text_of(change)]
        if not spans:
            return [], []
        verdicts = await db_call(_pattern_verdicts)(self.session, consumer.user.pk, [s[1] for _, s in spans])
        corrections, notices = [], []
        for (change, (start, text)), (action, masked) in zip(spans, verdicts, strict=True):
            if action in ("censor", "hold", "block"):
                replacement = masked if action == "censor" and masked else "[removed]"
                update = doc.mask(change, start, text, replacement)
                if update:
                    corrections.append(update)
                    notices.append({"doc": doc.kind, "code": "masked",
                                    "message": "Part of your text was hidden: it breaks this class's word list."})
        return corrections, notices

    async def _flush(self) -> None:
        self._flush_timer = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        from pycrdt import merge_updates

        from classrooms import collab_services

        rows = [(self.docs[p.kind].document_id, p.user_id, p.data) for p in batch]
        try:
            await db_call(collab_services.updates_append)(rows)
        except Exception as exc:
            logger.warning("collab flush not stored room=%s rows=%s: %s", self.room_key, len(rows), type(exc).__name__)
            self.stale = True
            for p in batch:
                if p.future is not None and not p.future.done():
                    p.future.set_exception(exc)
            return
        for kind in ("board", "notes"):
            parts = [p for p in batch if p.kind == kind]
            if not parts:
                continue
            merged = parts[0].data if len(parts) == 1 else merge_updates(*[p.data for p in parts])
            await self._publish("update", {"doc": kind, "update": b64encode(merged),
                                           "by": sorted({p.user_id for p in parts if p.user_id is not None})})
            doc = self.docs[kind]
            doc.tail += len(parts)
            if doc.tail >= settings.AULA_COLLAB_COMPACT_UPDATES:
                doc.tail = 0
                await db_call(_compact_soon)(doc.document_id)
        for p in batch:
            if p.future is not None and not p.future.done():
                p.future.set_result(None)

    async def _publish(self, type_: str, data: dict) -> None:
        frame = encode_frame(type_, {**data, "p": PROCESS_TAG})
        if not await publish_frame_async(hub().client_for(self.room_key), self.room_key, frame):
            # Stored but not relayed (Redis away): clients repair it at their next convergence check.
            logger.warning("collab relay failed room=%s", self.room_key)

    # --- sync ----------------------------------------------------------------------------------------
    async def diff(self, kind: str, client_sv: bytes) -> tuple[bytes, bytes, bool]:
        """(what a client with state vector `client_sv` lacks, the server's state vector, was it behind?)."""
        if self.stale:
            await self.reload()
        doc = self.docs[kind]
        try:
            theirs = decode_state_vector(client_sv)
            update = doc.doc.get_update(client_sv)
        except ValueError:
            raise Refusal("invalid_update", "Not a Yjs state vector.") from None
        server_sv = doc.doc.get_state()
        behind = any(theirs.get(client, 0) < clock for client, clock in decode_state_vector(server_sv).items())
        return update, server_sv, behind

    # --- awareness (cursors, selections, views) -----------------------------------------------------
    def awareness_set(self, kind: str, user_id: int, state: dict | None) -> None:
        if state is None:
            self.awareness[kind].pop(user_id, None)
        else:
            self.awareness[kind][user_id] = (state, time.monotonic())
        self._aw_dirty[kind][user_id] = state
        if self._aw_timer is None:
            self._aw_timer = asyncio.get_running_loop().call_later(
                1 / settings.AULA_COLLAB_AWARENESS_HZ, lambda: asyncio.ensure_future(self._aw_flush()))

    async def _aw_flush(self) -> None:
        self._aw_timer = None
        for kind, dirty in self._aw_dirty.items():
            if not dirty:
                continue
            self._aw_dirty[kind] = {}
            states = {str(uid): s for uid, s in dirty.items() if s is not None}
            gone = [uid for uid, s in dirty.items() if s is None]
            await self._publish("awareness", {"doc": kind, "states": states, "gone": gone})

    def awareness_snapshot(self) -> dict:
        horizon = time.monotonic() - settings.AULA_COLLAB_AWARENESS_TTL_SECONDS
        return {kind: {str(uid): state for uid, (state, at) in states.items() if at >= horizon}
                for kind, states in self.awareness.items()}


def _pattern_verdicts(session, author_id: int, texts: list[str]) -> list[tuple[str, str]]:
    """(action, masked text) per text from the pattern lists of the session's school and course."""
    from moderation import patterns

    lists = patterns.load_lists(institution_id=session.institution_id, course_id=session.course_id, channel_id=None)
    out = []
    for text in texts:
        hits = patterns.match(text, lists)
        action = "allow"
        for hit in hits:
            if hit.action in ("block", "hold", "censor") and (action == "allow" or hit.action != "censor"):
                action = hit.action
        masked = ""
        if action == "censor":
            masked, count = patterns.censor(text, lists)
            if not count:
                action = "hold"
        if action != "allow":
            logger.info("collab text masked session=%s author=%s action=%s", session.pk, author_id, action)
        out.append((action, masked))
    return out


def _compact_soon(document_id: int) -> None:
    from classrooms.tasks import collab_compact

    try:
        collab_compact.delay(document_id)
    except Exception:  # the broker away: the periodic sweep compacts it
        logger.warning("collab compaction not queued document=%s", document_id)


# --- the registry of this process's rooms ------------------------------------------------------------------

_rooms: dict[str, CollabRoom] = {}
UNLOAD_AFTER_SECONDS = 30.0


async def room_open(consumer, session, room_key: str) -> CollabRoom:
    room = _rooms.get(room_key)
    if room is None:
        room = _rooms[room_key] = CollabRoom(session, room_key)
        room.loaded = asyncio.ensure_future(room.load())
    if room.unload_timer is not None:
        room.unload_timer.cancel()
        room.unload_timer = None
    room.locals.add(consumer)
    try:
        await asyncio.shield(room.loaded)
    except Exception:
        room.locals.discard(consumer)
        if _rooms.get(room_key) is room and room.loaded.done():
            del _rooms[room_key]
            await hub().leave(room_key, room.member)
        raise
    return room


async def room_leave(consumer, room: CollabRoom) -> None:
    room.locals.discard(consumer)
    for kind in room.awareness:
        if consumer.user.pk in room.awareness[kind] and not any(c.user.pk == consumer.user.pk for c in room.locals):
            room.awareness_set(kind, consumer.user.pk, None)
    if not room.locals and room.unload_timer is None:
        def unload() -> None:
            room.unload_timer = None
            if not room.locals and _rooms.get(room.room_key) is room:
                del _rooms[room.room_key]
                asyncio.ensure_future(room.close())
        room.unload_timer = asyncio.get_running_loop().call_later(UNLOAD_AFTER_SECONDS, unload)

