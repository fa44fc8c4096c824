"""Group names of the live review queue: one per audience that reviews (course, school, district, channel,
platform). Events on them carry ids, versions and counts only, never text: a page re-reads an item through
its own scope check, so a teacher subscribed to the school group learns nothing of other courses' items."""

from __future__ import annotations


def queue_course(course_id: int) -> str:
    return f"modq.k{int(course_id)}"


def queue_school(institution_id: int) -> str:
    return f"modq.i{int(institution_id)}"


def queue_district(district_id: int) -> str:
    return f"modq.d{int(district_id)}"


def queue_channel(channel_id: int) -> str:
    return f"modq.c{int(channel_id)}"


def queue_platform() -> str:
    """Every item's signals: for platform superusers."""
    return "modq.platform"


def queue_streams() -> str:
    """Every stream item's signals: platform trust & safety."""
    return "modq.streams"


def queue_legal() -> str:
    """Every item's signals, for legal reviewers (ids and states only; rows are re-read in their scope)."""
    return "modq.legal"
