"""Signal receivers of the classrooms app: presence leaves become attendance intervals."""

from __future__ import annotations

import re

from django.dispatch import receiver

from classrooms import realtime, services
from config.realtime.presence import PresenceTracker, presence_left, register_audience

_SESSION_ROOM = re.compile(r"^i(\d+)\.ls(\d+)$")


def state_seconds(meta: dict, until: float) -> dict[str, float]:
    """Seconds spent active / idle / away by one connection, from its accumulated meta."""
    acc = dict(meta.get("acc") or {})
    state = meta.get("state", "active")
    acc[state] = acc.get(state, 0.0) + max(until - meta.get("state_since", until), 0.0)
    return {k: round(acc.get(k, 0.0), 1) for k in ("active", "idle", "away")}


@receiver(presence_left, sender=PresenceTracker)
def record_expired_connection(sender, room_key: str, meta: dict, left_at: float, reason: str, **_):
    match = _SESSION_ROOM.match(room_key)
    if match is None or reason != "expired":
        return  # closed connections are recorded by the consumer itself
    seconds = state_seconds(meta, left_at)
    services.attendance_interval_record(
        session_id=int(match.group(2)), user_id=int(meta["user_id"]), conn_id=meta["conn"],
        joined_at=meta["joined_at"], left_at=left_at, active=seconds["active"], idle=seconds["idle"],
        away=seconds["away"], resumed=bool(meta.get("resumed")), reason="expired")


def session_presence_audience(room_key: str, user_count: int) -> list[str]:
    """Where a session's presence diffs go: the whole room while the class is small; only the teachers'
    room in a big lecture, where students get counts instead (a full roster per joiner would dominate a
    2,000-student join storm). Never both: a teacher is in both rooms and must get each diff once."""
    if user_count <= realtime.ROSTER_FOR_STUDENTS_MAX:
        return [room_key]
    match = _SESSION_ROOM.match(room_key)
    return [realtime.session_staff_room(int(match.group(1)), int(match.group(2)))]


register_audience("ls", session_presence_audience)
