"""One payload builder per exam event type. Question content never includes the answer key."""

from __future__ import annotations

from exams.models import Attempt, Question


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def attempt_status(attempt: Attempt) -> dict:
    return {"attempt_id": attempt.pk, "student_id": attempt.student_id, "state": attempt.state,
            "started_at": _iso(attempt.started_at), "deadline": _iso(attempt.deadline),
            "grace_until": _iso(attempt.grace_until), "finished_at": _iso(attempt.finished_at),
            "finish_reason": attempt.finish_reason, "extra_minutes": attempt.extra_minutes}


def question_for_student(question: Question, item: dict) -> dict:
    """The question as the student sees it: options in this attempt's order, each with its authoring index
    (what an answer refers to), and no correct answers."""
    data = {"id": question.pk, "kind": question.kind, "prompt": question.prompt, "points": str(question.points),
            "section": item.get("section", 0)}
    if question.options:
        data["options"] = [{"index": i, "label": question.options[i]} for i in item["options"]] \
            if item.get("options") else [{"index": i, "label": o} for i, o in enumerate(question.options)]
    return data


def attempt_progress(attempt: Attempt, answered: int) -> dict:
    return {"attempt_id": attempt.pk, "answered": answered}
