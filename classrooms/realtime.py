"""Room names for classroom audiences: tenant-scoped, built only on the server."""

from __future__ import annotations


def session_room(institution_id: int, session_id: int) -> str:
    """Everyone in one live session (students, teachers, TAs)."""
    return f"i{int(institution_id)}.ls{int(session_id)}"


def session_staff_room(institution_id: int, session_id: int) -> str:
    """Teachers and TAs of one live session only (hand-raise queue details, moderation notices)."""
    return f"i{int(institution_id)}.ls{int(session_id)}.staff"


def session_collab_room(institution_id: int, session_id: int) -> str:
    """The shared whiteboard and notes of one live session (Yjs updates and cursors; no seq, no replay)."""
    return f"i{int(institution_id)}.ls{int(session_id)}.collab"


# Up to this many people present, students see the full roster; above it, counts only.
ROSTER_FOR_STUDENTS_MAX = 150
