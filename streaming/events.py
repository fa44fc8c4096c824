"""One payload builder per stream event type (the `data` of a frame; see docs/protocol.md, "Streams").

Payloads carry ids and public display names only, never emails or anything else personal.
"""

from __future__ import annotations

from streaming.models import Stream, StreamChatMessage, StreamPoll, StreamQuestion


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def person(user) -> dict:
    return {"id": user.pk, "name": user.public_name}


def stream_status(stream: Stream) -> dict:
    return {"id": stream.pk, "status": stream.status, "started_at": _iso(stream.started_at),
            "ended_at": _iso(stream.ended_at),
            "recording_url": stream.recording_url if stream.recording_available else None,
            "peak_viewers": stream.peak_viewers}


def chat_settings(stream: Stream) -> dict:
    return {"slow_seconds": stream.chat_slow_seconds, "followers_only": stream.chat_followers_only,
            "follow_minutes": stream.chat_follow_minutes, "members_only": stream.chat_members_only,
            "emote_only": stream.chat_emote_only, "hold_all": stream.chat_hold_all, "lockdown": stream.chat_lockdown}


def chat_message(message: StreamChatMessage) -> dict:
    """A chat message as everyone sees it; a deleted one is blanked (its text never goes out again)."""
    deleted = message.deleted_at is not None
    return {"id": message.pk, "cseq": message.cseq, "author": person(message.author),
            "body": "" if deleted else message.body, "deleted": deleted, "status": message.status,
            "at": _iso(message.created_at)}


def chat_held(message: StreamChatMessage) -> dict:
    """For the staff's review queue and the sender's own "pending review" copy."""
    return {**chat_message(message), "pending_review": True, "sentiment": message.sentiment}


def chat_deleted(message: StreamChatMessage) -> dict:
    return {"id": message.pk, "cseq": message.cseq}


def chat_reviewed(message: StreamChatMessage) -> dict:
    return {"id": message.pk, "status": message.status}


def poll(p: StreamPoll) -> dict:
    return {"id": p.pk, "question": p.question, "options": list(p.options), "status": p.status,
            "closed_at": _iso(p.closed_at)}


def poll_results(p: StreamPoll, counts: list[int]) -> dict:
    return {"poll_id": p.pk, "status": p.status, "counts": counts, "total": sum(counts)}


def question(q: StreamQuestion) -> dict:
    return {"id": q.pk, "author": person(q.author), "body": q.body, "status": q.status, "upvotes": q.upvotes,
            "at": _iso(q.created_at)}


def viewers(count: int, peak: int) -> dict:
    return {"count": count, "peak": peak}


def reactions(window_ms: int, counts: dict[str, int], window_start: float) -> dict:
    return {"window_ms": window_ms, "counts": counts, "window_start": round(window_start, 3)}


def chat_sampled(skipped: int, last_cseq: int | None) -> dict:
    return {"skipped": skipped, "last_cseq": last_cseq}
