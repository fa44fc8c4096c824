"""Room names for exam audiences: tenant-scoped, built only on the server."""

from __future__ import annotations


def attempt_room(institution_id: int, attempt_id: int) -> str:
    """One student's attempt (all of their tabs): timer changes, state changes, second-tab warnings."""
    return f"i{int(institution_id)}.at{int(attempt_id)}"


def proctor_room(institution_id: int, exam_id: int) -> str:
    """The exam's teachers: the live proctor board."""
    return f"i{int(institution_id)}.ex{int(exam_id)}.proctor"
