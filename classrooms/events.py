"""One payload builder per classroom event type (the `data` of a frame; see docs/protocol.md).

Payloads carry ids and display names only: never emails, birth dates or anything a classmate should not
see. Anonymous poll answers never carry who answered.
"""

from __future__ import annotations

from classrooms.models import (
    ChatMessage,
    HandRaise,
    LiveSession,
    ParticipantState,
    Poll,
    SessionControl,
    User,
)


def _iso(dt) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def person(user: User) -> dict:
    return {"id": user.pk, "name": user.public_name}


def chat_message(message: ChatMessage) -> dict:
    return {"id": message.pk, "author": person(message.author), "body": message.body,
            "at": _iso(message.created_at)}


def chat_held(message: ChatMessage) -> dict:
    """To its author only: the message waits for a moderator (shown to them as "pending review")."""
    # Not "ref": a frame without seq carrying a "ref" would be taken for the reply to that request.
    return {"id": message.pk, "body": message.body, "at": _iso(message.created_at)}


def chat_reviewed(message: ChatMessage) -> dict:
    """To its author only: the outcome of the review of their held message."""
    return {"id": message.pk, "status": message.status}


def moderation_item(item, *, notify: bool = False) -> dict:
    """To the class's teachers: something to review (or to know about: `notify`, e.g. a self-harm signal).
    The text is not repeated here; the teacher opens the queue."""
    return {"item": item.pk, "source": item.source, "category": item.category, "reason": item.reason,
            "author": item.author_id, "notify": notify}


def chat_deleted(message: ChatMessage) -> dict:
    # The reason stays in the audit trail; classmates only learn that the message is gone.
    return {"id": message.pk, "by": message.deleted_by_id}


def chat_cleared(*, by: User, up_to_seq: int) -> dict:
    return {"by": by.pk, "up_to_seq": up_to_seq}


def poll_started(poll: Poll) -> dict:
    return {"poll": poll_public(poll)}


def poll_public(poll: Poll) -> dict:
    """The poll as students see it: never the correct answers while it is open."""
    return {
        "id": poll.pk, "question": poll.question, "kind": poll.kind, "anonymous": poll.anonymous,
        "quiz": poll.is_quiz, "results": poll.results_visibility, "status": poll.status,
        "options": [{"position": o.position, "label": o.label} for o in poll.options.all()],
        "opened_at": _iso(poll.opened_at), "closed_at": _iso(poll.closed_at),
    }


def poll_results(poll: Poll, tally: tuple[int, dict[int, int], list[str]]) -> dict:
    """Aggregated results (counts per option; open answers as a list of texts, never with names)."""
    respondents, counts, texts = tally
    data = {"poll_id": poll.pk, "status": poll.status, "respondents": respondents,
            "counts": {str(o.position): counts.get(o.position, 0) for o in poll.options.all()}}
    if poll.kind == Poll.Kind.OPEN:
        data["texts"] = texts[-200:]
    if poll.is_quiz and poll.status == Poll.Status.CLOSED:
        data["correct"] = [o.position for o in poll.options.all() if o.is_correct]
    return data


def poll_closed(poll: Poll) -> dict:
    return {"poll_id": poll.pk, "closed_at": _iso(poll.closed_at)}


def hand_queue(raises: list[HandRaise]) -> dict:
    """The ordered queue; each student finds their own position in it."""
    return {"queue": [{"user": person(h.user), "raised_at": _iso(h.raised_at), "position": i + 1}
                      for i, h in enumerate(raises)]}


def hand_lowered(hand: HandRaise) -> dict:
    return {"user_id": hand.user_id, "reason": hand.lowered_reason}


def controls(control: SessionControl) -> dict:
    return {"locked_features": control.locked_features,
            "timer": {"label": control.timer_label, "started_at": _iso(control.timer_started_at),
                      "ends_at": _iso(control.timer_ends_at)} if control.timer_ends_at else None}


def participant(state: ParticipantState) -> dict:
    return {"user_id": state.user_id, "locked_features": state.locked_features,
            "can_screen_share": state.can_screen_share, "removed": state.removed_at is not None}


def session_status(session: LiveSession) -> dict:
    return {"status": session.status, "started_at": _iso(session.started_at), "ended_at": _iso(session.ended_at)}
