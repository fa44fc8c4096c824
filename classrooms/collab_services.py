"""Every write to the shared whiteboard and notes (docs/collab.md): the append log, replica bindings,
compaction into checkpoints with per-person contributions, and course image files.

The live path (classrooms/collab.py) batches accepted updates and calls `updates_append` once per flush; the
compactor (classrooms/tasks.py) folds the log. Nothing else writes these models.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from classrooms import selectors
from classrooms.models import (
    CollabCheckpoint,
    CollabClient,
    CollabContribution,
    CollabDocument,
    CollabUpdate,
    Course,
    CourseFile,
    LiveSession,
    User,
)

if TYPE_CHECKING:
    from classrooms.collab_attribution import Counts

logger = logging.getLogger("aula.collab")

KINDS = (CollabDocument.Kind.BOARD, CollabDocument.Kind.NOTES)
CHECKPOINT_EVERY = dt.timedelta(minutes=1)
# The compactor's tries at the document's row lock, and the pause between them (document_compact).
COMPACT_LOCK_TRIES = 20
COMPACT_LOCK_PAUSE_S = 0.05
EDITED_EVERY = dt.timedelta(seconds=30)  # history slider granularity: one version per minute at most


def documents_ensure(session: LiveSession) -> dict[str, CollabDocument]:
    """The session's board and notes documents, created on first use (idempotent, race-safe)."""
    docs = {d.kind: d for d in CollabDocument.objects.filter(session=session)}
    for kind in KINDS:
        if kind not in docs:
            with transaction.atomic():
                CollabDocument.objects.bulk_create(
                    [CollabDocument(session=session, institution_id=session.institution_id, kind=kind)],
                    ignore_conflicts=True)
            docs[kind] = CollabDocument.objects.get(session=session, kind=kind)
    return docs


_BIND_SQL = """
INSERT INTO classrooms_collabclient (document_id, client_id, user_id, created_at)
SELECT %s, c, %s, now() FROM unnest(%s::bigint[]) AS c
ON CONFLICT (document_id, client_id) DO NOTHING
"""


def clients_bind(*, document_id: int, client_ids: list[int], user_id: int) -> dict[int, int]:
    """Bind unbound Yjs replicas to `user_id`; return the owner of each (a replica already bound to someone
    else keeps its owner: the caller refuses the update)."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(_BIND_SQL, [document_id, user_id, list(client_ids)])
        return dict(CollabClient.objects.filter(document_id=document_id, client_id__in=client_ids)
                    .values_list("client_id", "user_id"))


def updates_append(rows: list[tuple[int, int | None, bytes]]) -> list[int]:
    """Store one flush of accepted updates `(document_id, author_id, data)` in one transaction; their ids."""
    now = timezone.now()
    with transaction.atomic():
        # The documents' rows are locked FOR KEY SHARE before any log id is taken: appenders do not block each
        # other, but the compactor (FOR UPDATE) either waits for this commit or skips the document. Without
        # it, a row whose id was taken before a later row's commit could be folded past and deleted unseen.
        with connection.cursor() as cur:
            cur.execute("SELECT id FROM classrooms_collabdocument WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE",
                        [sorted({d for d, _, _ in rows})])
        made = CollabUpdate.objects.bulk_create(
            [CollabUpdate(document_id=d, author_id=a, data=data, created_at=now) for d, a, data in rows])
        # At most every EDITED_EVERY per document: a busy board flushes many times a second, and each flush
        # writing the same row serialised them on its lock (docs/benchmarks.md, "Whiteboard").
        CollabDocument.objects.filter(Q(edited_at__isnull=True) | Q(edited_at__lt=now - EDITED_EVERY),
                                      pk__in={d for d, _, _ in rows}).update(edited_at=now)
    return [u.id for u in made]


def document_compact(*, document_id: int) -> CollabCheckpoint | None:
    """Fold the document's log into a checkpoint and per-person contributions; delete the folded rows.

    One transaction under the document's row lock: the log rows are deleted only with the checkpoint that holds
    them, so a crash at any point loses nothing. Safe to run twice. The lock is tried without waiting, a few times
    over about a second: on a busy board the appenders hold the row FOR KEY SHARE almost all the time, and a
    single try could miss every gap (a compactor must not starve); a second compactor just finds nothing left."""
    for _ in range(COMPACT_LOCK_TRIES):
        with transaction.atomic():
            document = CollabDocument.objects.select_for_update(skip_locked=True).filter(pk=document_id).first()
            if document is not None:
                return _compact_locked(document)
        if connection.in_atomic_block or not CollabDocument.objects.filter(pk=document_id).exists():
            return None  # gone, or called inside a caller's transaction (no sleeping with its locks held)
        time.sleep(COMPACT_LOCK_PAUSE_S)
    logger.info("collab compaction skipped: document=%s stayed locked", document_id)
    return None


def _compact_locked(document: CollabDocument) -> CollabCheckpoint | None:
    """The fold itself, inside document_compact's transaction with the document's row locked."""
    from pycrdt import Doc

    from classrooms.collab_attribution import attribute

    document_id = document.pk
    latest = document.checkpoints.order_by("-upto").first()
    tail = list(CollabUpdate.objects.filter(document=document, id__gt=latest.upto if latest else 0)
                .order_by("id").values_list("id", "author_id", "data", "created_at")[
                    :settings.AULA_COLLAB_COMPACT_MAX_ROWS])
    if not tail:
        return latest
    base = bytes(latest.state) if latest else None
    state, counts = attribute(document.kind, base,
                              ((author, bytes(data), at) for _, author, data, at in tail))
    check = Doc()
    check.apply_update(state)  # never store a state we cannot load back
    upto, now = tail[-1][0], timezone.now()
    if latest is not None and now - latest.created_at < CHECKPOINT_EVERY:
        latest.upto, latest.state, latest.size = upto, state, len(state)
        latest.save(update_fields=["upto", "state", "size"])
        checkpoint = latest
    else:
        checkpoint = CollabCheckpoint.objects.create(document=document, upto=upto, state=state, size=len(state),
                                                     created_at=now)
    _contributions_add(document, counts)
    CollabUpdate.objects.filter(document=document, id__lte=upto).delete()
    logger.info("collab document compacted document=%s rows=%s bytes=%s", document_id, len(tail), len(state))
    return checkpoint


def _contributions_add(document: CollabDocument, counts: dict[int, Counts]) -> None:
    if not counts:
        return
    existing = {c.user_id: c for c in CollabContribution.objects.select_for_update()
                .filter(document=document, user_id__in=list(counts))}
    live_users = set(User.objects.filter(pk__in=list(counts)).values_list("pk", flat=True))
    for user_id, c in counts.items():
        if user_id not in live_users:
            continue
        row = existing.get(user_id) or CollabContribution(document=document, user_id=user_id,
                                                          institution_id=document.institution_id)
        for name in ("updates", "bytes", "elements_added", "elements_removed", "elements_edited", "chars_added",
                     "chars_removed"):
            setattr(row, name, getattr(row, name) + getattr(c, name))
        row.first_at = min(filter(None, [row.first_at, c.first_at]), default=None)
        row.last_at = max(filter(None, [row.last_at, c.last_at]), default=None)
        row.save()


# --- course images for the board ------------------------------------------------------------------------

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/png", "WEBP": "image/png"}


def course_file_add(*, course: Course, actor: User, name: str, data: bytes) -> CourseFile:
    """Add an image to a course's files (teachers and TAs). Decoded and re-encoded with Pillow: what is
    stored carries no metadata (location, camera) and no active content; animated images keep frame one."""
    from PIL import Image, UnidentifiedImageError

    if not selectors.can_teach(actor, course):
        raise PermissionDenied("Only the course's teachers can add files.")
    if len(data) > settings.AULA_COURSE_FILE_MAX_BYTES:
        raise ValidationError(f"The image is larger than {settings.AULA_COURSE_FILE_MAX_BYTES // 1_000_000} MB.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = img.format
            if kind not in IMAGE_TYPES:
                raise ValidationError("Upload a PNG, JPEG, GIF or WebP image.")
            if img.width * img.height > 40_000_000:
                raise ValidationError("The image has too many pixels.")
            img.load()
            frame = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ValidationError("This file is not an image we can read.") from None
    frame.thumbnail((4096, 4096))
    out = io.BytesIO()
    content_type = IMAGE_TYPES[kind]
    if content_type == "image/jpeg" and frame.mode == "RGB":
        frame.save(out, "JPEG", quality=88)
    else:
        frame.save(out, "PNG", optimize=True)
        content_type = "image/png"
    stored = out.getvalue()
    digest = hashlib.sha256(stored).hexdigest()
    clean_name = (name or "image").strip().replace("\x00", "")[:200] or "image"
    with transaction.atomic():
        existing = CourseFile.objects.filter(course=course, sha256=digest).first()
        if existing is not None:
            return existing
        return CourseFile.objects.create(course=course, institution_id=course.institution_id, uploaded_by=actor,
                                         name=clean_name, content_type=content_type, data=stored, size=len(stored),
                                         width=frame.width, height=frame.height, sha256=digest)


# --- erasure (COPPA deletion and retention) -------------------------------------------------------------------

def _varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def delete_set_update(ranges: dict[int, int]) -> bytes:
    """A Yjs update (v1) with no new content and a delete set covering clocks [0, clock) of each replica: applied,
    it deletes everything those replicas ever wrote, wherever it sits in the document."""
    out = bytearray(_varuint(0))
    out += _varuint(len(ranges))
    for client, clock in sorted(ranges.items()):
        out += _varuint(client) + _varuint(1) + _varuint(0) + _varuint(clock)
    return bytes(out)


def person_content_erase(*, user_id: int, document_ids: list[int] | None = None) -> dict[str, int]:
    """Remove everything one person drew or wrote on boards and in notes: their Yjs replicas' items are deleted
    from every stored version (each checkpoint is rewritten; the deleted content is garbage-collected, not kept as
    tombstone text) and from the log; processes holding the document live get the deletion like any update.
    Their contribution rows go too. Idempotent. (docs/compliance.md, docs/collab.md)"""
    from pycrdt import Doc

    from classrooms.collab import b64encode, decode_state_vector
    from classrooms.realtime import session_collab_room
    from config.realtime.transport import encode_frame, publish_frame

    bindings = CollabClient.objects.filter(user_id=user_id)
    if document_ids is not None:
        bindings = bindings.filter(document_id__in=document_ids)
    by_document: dict[int, list[int]] = {}
    for document_id, client_id in bindings.values_list("document_id", "client_id"):
        by_document.setdefault(document_id, []).append(client_id)
    removed = {"collab_documents": 0, "collab_versions_rewritten": 0, "collab_log_rows": 0}
    for document_id, clients in by_document.items():
        document_compact(document_id=document_id)
        with transaction.atomic():
            document = CollabDocument.objects.select_for_update().select_related("session").get(pk=document_id)
            erase = b""
            for checkpoint in CollabCheckpoint.objects.select_for_update().filter(document=document).order_by("upto"):
                doc = Doc()
                doc.apply_update(bytes(checkpoint.state))
                clocks = decode_state_vector(doc.get_state())
                ranges = {c: clocks[c] for c in clients if clocks.get(c)}
                if not ranges:
                    continue
                update = delete_set_update(ranges)
                doc.apply_update(update)
                erase = update  # the latest version's covers every clock
                state = doc.get_update()
                if state == bytes(checkpoint.state):
                    continue  # erased before
                checkpoint.state = state
                checkpoint.size = len(checkpoint.state)
                checkpoint.save(update_fields=["state", "size"])
                removed["collab_versions_rewritten"] += 1
            count, _ = CollabUpdate.objects.filter(document=document, author_id=user_id).delete()
            removed["collab_log_rows"] += count
            CollabContribution.objects.filter(document=document, user_id=user_id).delete()
            if erase and removed["collab_versions_rewritten"]:
                # Also in the log, for any process that loaded the document before this rewrite.
                CollabUpdate.objects.create(document=document, author=None, data=erase)
                frame = encode_frame("update", {"doc": document.kind, "update": b64encode(erase), "by": [],
                                                "p": "erasure"})
                room = session_collab_room(document.institution_id, document.session_id)
                transaction.on_commit(lambda room=room, frame=frame: publish_frame(room, frame))
            removed["collab_documents"] += 1
    return {k: v for k, v in removed.items() if v}


_CHILD_COLLAB_SQL = """
SELECT DISTINCT c.user_id, c.document_id FROM classrooms_collabclient c
JOIN classrooms_user u ON u.id = c.user_id
JOIN classrooms_collabdocument d ON d.id = c.document_id
WHERE d.edited_at < %s AND u.date_of_birth IS NOT NULL AND u.date_of_birth + interval '13 years' > c.created_at
"""


def child_content_erase(*, before: dt.datetime) -> dict[str, int]:
    """Retention: what children under 13 wrote on boards and in notes last edited before `before`."""
    removed: dict[str, int] = {}
    with connection.cursor() as cur:
        cur.execute(_CHILD_COLLAB_SQL, [before])
        pairs = cur.fetchall()
    for user_id, document_id in pairs:
        for key, n in person_content_erase(user_id=user_id, document_ids=[document_id]).items():
            removed[key] = removed.get(key, 0) + n
    return removed
