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


def stream_chat_room(stream_id: int) -> str:
    """The full chat feed of one stream, ordered by its own `cseq`: each process's sampler and the staff's
    sockets subscribe; viewers get a bounded sample of it (streaming/audience.py, docs/protocol.md)."""
    return f"st{int(stream_id)}.chat"
