"""Room names for stream audiences, built only on the server.

Streams are not school data: their rooms are keyed by stream, not by institution (streaming/models.py).
"""

from __future__ import annotations


def stream_room(stream_id: int) -> str:
    """Everyone watching one stream: viewers (anonymous and signed in), members, moderators, the creator."""
    return f"st{int(stream_id)}"


def stream_staff_room(stream_id: int) -> str:
    """The creator and the channel's moderators: dashboard figures, the held-for-review chat queue."""
    return f"st{int(stream_id)}.staff"


def user_room(user_id: int) -> str:
    """One signed-in user's own sockets on any page (notifications)."""
    return f"u{int(user_id)}"
