"""Every write for exams: authoring, accommodations, attempts (start, autosave, submit, finalise), the
integrity log, grading, release, notifications and the LMS grade-sync queue.

Finalising is idempotent under concurrency and retries: it locks the attempt row, and every side effect
it produces (the grade, the notification, the grade-sync row, the audit entry) is keyed by the attempt,
so a second finalisation — a duplicate deadline task, the sweeper, a replayed submit — changes nothing.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import logging
import random
import secrets

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from classrooms import selectors as classroom_selectors
from classrooms.models import Course, Role, User
from classrooms.services import upsert
from config.realtime.transport import room_event_emit, room_signal_publish
from exams import events, realtime
from exams.models import (
    Accommodation,
    Answer,
    Attempt,
    CloseExtension,
    Exam,
    GradeSync,
    IntegrityEvent,
    Notification,
    Question,
    QuestionBank,
    Section,
)

GENESIS = "0" * 64
logger = logging.getLogger("aula.exams")


class AttemptClosed(Exception):
    """The attempt no longer accepts this action (past the deadline, submitted, or grace: submit only)."""


# --- authoring -----------------------------------------------------------------------------------------

def exam_upsert(*, course: Course, title: str, opens_at: dt.datetime | None = None,
                closes_at: dt.datetime | None = None, time_limit_minutes: int = 60,
                status: str = Exam.Status.DRAFT, **settings_) -> Exam:
    return upsert(Exam, course=course, title=title,
                  defaults={"institution_id": course.institution_id, "opens_at": opens_at, "closes_at": closes_at,
                            "time_limit_minutes": time_limit_minutes, "status": status, **settings_})


def bank_create(*, course: Course, title: str) -> QuestionBank:
    return QuestionBank.objects.create(institution_id=course.institution_id, course=course, title=title)


def question_create(*, bank: QuestionBank, kind: str, prompt: str, options: list[str] | None = None,
                    correct: list | None = None, numeric_answer=None, numeric_tolerance=0, points=1) -> Question:
    options, correct = list(options or []), list(correct or [])
    if kind in (Question.Kind.SINGLE, Question.Kind.MULTIPLE):
        if len(options) < 2 or not correct or any(not isinstance(c, int) or not 0 <= c < len(options) for c in correct):
            raise ValidationError("A choice question needs at least two options and valid correct indexes.")
        if kind == Question.Kind.SINGLE and len(correct) != 1:
            raise ValidationError("A single-choice question has exactly one correct option.")
    elif kind == Question.Kind.TRUE_FALSE:
        options = ["True", "False"]
        if correct not in ([True], [False]):
            raise ValidationError("A true/false question's answer is [true] or [false].")
    elif kind == Question.Kind.NUMERIC:
        if numeric_answer is None:
            raise ValidationError("A numeric question needs an answer.")
    elif kind == Question.Kind.SHORT:
        if not correct or not all(isinstance(c, str) and c.strip() for c in correct):
            raise ValidationError("A short-answer question lists accepted answers.")
    elif kind != Question.Kind.ESSAY:
        raise ValidationError("Unknown question kind.")
    question = Question(institution_id=bank.institution_id, bank=bank, kind=kind, prompt=prompt, options=options,
                        correct=correct, numeric_answer=numeric_answer, numeric_tolerance=numeric_tolerance,
                        points=points)
    question.full_clean()
    question.save()
    return question


def section_add(*, exam: Exam, title: str = "", questions: list[Question] = (), draw_bank: QuestionBank | None = None,
                draw_count: int = 0) -> Section:
    if draw_count and draw_bank is None:
        raise ValidationError("Drawing questions needs a bank.")
    position = exam.sections.count()
    section = Section.objects.create(exam=exam, position=position, title=title, draw_bank=draw_bank,
                                     draw_count=draw_count)
    section.questions.set(questions)
    return section


def accommodation_set(*, student: User, institution_id: int, time_multiplier=1, extra_minutes: int = 0,
                      note: str = "", actor: User | None = None) -> Accommodation:
    if actor is not None and not classroom_selectors.is_school_staff(actor, institution_id):
        raise PermissionDenied("Only school staff set accommodations.")
    acc = upsert(Accommodation, institution_id=institution_id, student=student,
                 defaults={"time_multiplier": decimal.Decimal(str(time_multiplier)), "extra_minutes": extra_minutes,
                           "note": note})
    return acc


def close_extend_for(*, exam: Exam, student: User, closes_at: dt.datetime, actor: User) -> CloseExtension:
    _require_teacher(actor, exam)
    ext, _ = CloseExtension.objects.update_or_create(exam=exam, student=student,
                                                     defaults={"closes_at": closes_at, "granted_by": actor})
    return ext


# --- time --------------------------------------------------------------------------------------------

def allowed_minutes(exam: Exam, student: User) -> decimal.Decimal:
    acc = Accommodation.objects.filter(institution_id=exam.institution_id, student=student).first()
    minutes = decimal.Decimal(exam.time_limit_minutes)
    if acc is not None:
        minutes = minutes * acc.time_multiplier + acc.extra_minutes
    return minutes


def effective_close(exam: Exam, student: User) -> dt.datetime | None:
    ext = CloseExtension.objects.filter(exam=exam, student=student).values_list("closes_at", flat=True).first()
    if ext and (exam.closes_at is None or ext > exam.closes_at):
        return ext
    return exam.closes_at


def close_cut_warnings(exam: Exam) -> list[dict]:
    """Accommodated students whose full time would not fit between the open time and the close."""
    if exam.closes_at is None or exam.opens_at is None:
        return []
    out = []
    window = (exam.closes_at - exam.opens_at).total_seconds() / 60
    for acc in Accommodation.objects.filter(institution_id=exam.institution_id,
                                            student__enrollments__course=exam.course).select_related("student"):
        needed = float(allowed_minutes(exam, acc.student))
        close = effective_close(exam, acc.student)
        available = (close - exam.opens_at).total_seconds() / 60 if close else window
        if needed > available:
            out.append({"student_id": acc.student_id, "name": acc.student.public_name, "needs_minutes": needed,
                        "window_minutes": round(available, 1)})
    return out


def _deadline_for(exam: Exam, student: User, started_at: dt.datetime, extra: int = 0) -> dt.datetime:
    deadline = started_at + dt.timedelta(minutes=float(allowed_minutes(exam, student)) + extra)
    close = effective_close(exam, student)
    return min(deadline, close) if close else deadline


# --- layout ----------------------------------------------------------------------------------------

def layout_build(exam: Exam, seed: int, exclude_question_ids: set[int] = frozenset()) -> list[dict]:
    """The attempt's questions and option orders, reproducible from the seed (audit, regrade)."""
    rng = random.Random(seed)
    layout: list[dict] = []
    for section in exam.sections.order_by("position").prefetch_related("questions"):
        chosen = sorted(section.questions.all(), key=lambda q: q.pk)
        if section.draw_count and section.draw_bank_id:
            pool = sorted(Question.objects.filter(bank_id=section.draw_bank_id).values_list("id", flat=True))
            pool = [q for q in pool if q not in {c.pk for c in chosen}]
            fresh = [q for q in pool if q not in exclude_question_ids]
            # Avoid repeating a student's earlier questions while the bank allows it.
            source = fresh if len(fresh) >= section.draw_count else pool
            drawn = rng.sample(source, min(section.draw_count, len(source)))
            chosen += list(Question.objects.filter(pk__in=drawn))
        if exam.shuffle_questions:
            rng.shuffle(chosen)
        for q in chosen:
            order = list(range(len(q.options)))
            if exam.shuffle_options and q.kind in (Question.Kind.SINGLE, Question.Kind.MULTIPLE):
                rng.shuffle(order)
            layout.append({"question": q.pk, "section": section.position, "options": order})
    return layout


def _previous_question_ids(exam: Exam, student: User) -> set[int]:
    ids: set[int] = set()
    for layout in Attempt.objects.filter(exam=exam, student=student).values_list("layout", flat=True):
        ids.update(item["question"] for item in layout)
    return ids


# --- integrity log --------------------------------------------------------------------------------

def _hash(prev: str, index: int, kind: str, server_time: dt.datetime, client_time, data: dict) -> str:
    body = json.dumps([prev, index, kind, server_time.isoformat(), client_time.isoformat() if client_time else None,
                       data], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def integrity_record(attempt: Attempt, kind: str, data: dict | None = None,
                     client_time: dt.datetime | None = None) -> IntegrityEvent:
    """Append to the attempt's hash chain. The caller holds the attempt row lock (it orders the chain)."""
    now = timezone.now()
    data = data or {}
    index = attempt.log_count
    digest = _hash(attempt.log_head or GENESIS, index, kind, now, client_time, data)
    event = IntegrityEvent.objects.create(attempt=attempt, index=index, kind=kind, server_time=now,
                                          client_time=client_time, data=data, prev_hash=attempt.log_head or GENESIS,
                                          hash=digest)
    attempt.log_head, attempt.log_count = digest, index + 1
    Attempt.objects.filter(pk=attempt.pk).update(log_head=digest, log_count=index + 1)
    return event


def integrity_verify(attempt: Attempt) -> tuple[bool, int | None]:
    """(True, None) if the chain is intact; else (False, index of the first entry that does not fit)."""
    prev = GENESIS
    for i, e in enumerate(IntegrityEvent.objects.filter(attempt=attempt).order_by("index")):
        if e.index != i or e.prev_hash != prev or \
                _hash(prev, e.index, e.kind, e.server_time, e.client_time, e.data) != e.hash:
            return False, i
        prev = e.hash
    return prev == (attempt.log_head or GENESIS), None


# --- attempts ------------------------------------------------------------------------------------------

def _require_teacher(actor: User, exam: Exam) -> None:
    if classroom_selectors.enrollment_role(actor, exam.course) not in {Role.TEACHER, Role.TA}:
        raise PermissionDenied("Only the course's teachers can do that.")


def attempts_precreate(*, exam: Exam) -> int:
    """Create not-started attempts (seed and layout) for every student before the exam opens, so that
    hundreds pressing Start in the same second only flip a state and set a deadline."""
    students = classroom_selectors_students(exam.course)
    have = set(Attempt.objects.filter(exam=exam, number=1).values_list("student_id", flat=True))
    created = 0
    for student_id in students:
        if student_id in have:
            continue
        seed = secrets.randbits(62)
        with transaction.atomic():
            _, made = Attempt.objects.get_or_create(
                exam=exam, student_id=student_id, number=1,
                defaults={"institution_id": exam.institution_id, "seed": seed, "layout": layout_build(exam, seed)})
        created += made
    return created


def classroom_selectors_students(course: Course) -> list[int]:
    from classrooms.models import Enrollment

    return list(Enrollment.objects.filter(course=course, role=Role.STUDENT, is_active=True)
                .values_list("user_id", flat=True))


def attempt_start(*, exam: Exam, student: User, client_time: dt.datetime | None = None) -> Attempt:
    """Start (or return the running) attempt. Idempotent: pressing Start twice starts once."""
    now = timezone.now()
    if classroom_selectors.enrollment_role(student, exam.course) != Role.STUDENT:
        raise PermissionDenied("Only the course's students take this exam.")
    if exam.status != Exam.Status.PUBLISHED:
        raise ValidationError("This exam is not open.")
    if exam.opens_at and now < exam.opens_at:
        raise ValidationError("This exam has not opened yet.")
    close = effective_close(exam, student)
    if close and now >= close:
        raise ValidationError("This exam has closed.")
    with transaction.atomic():
        attempts = list(Attempt.objects.select_for_update().filter(exam=exam, student=student).order_by("number"))
        running = next((a for a in attempts if a.is_open), None)
        if running is not None:
            return running
        waiting = next((a for a in attempts if a.state == Attempt.State.NOT_STARTED), None)
        finished = [a for a in attempts if a.state in (Attempt.State.SUBMITTED, Attempt.State.ABANDONED)]
        if waiting is None:
            if len(finished) >= exam.attempts_allowed:
                raise ValidationError("You have used every attempt at this exam.")
            seed = secrets.randbits(62)
            waiting = Attempt.objects.create(
                institution_id=exam.institution_id, exam=exam, student=student, number=len(attempts) + 1, seed=seed,
                layout=layout_build(exam, seed, _previous_question_ids(exam, student)))
        waiting.state, waiting.started_at = Attempt.State.IN_PROGRESS, now
        waiting.deadline = _deadline_for(exam, student, now)
        if exam.expiry_policy == Exam.Expiry.GRACE and exam.grace_minutes:
            waiting.grace_until = waiting.deadline + dt.timedelta(minutes=exam.grace_minutes)
        waiting.save(update_fields=["state", "started_at", "deadline", "grace_until"])
        integrity_record(waiting, "started", {"deadline": waiting.deadline.isoformat()}, client_time)
        _schedule_finalize(waiting)
        _proctor_update(waiting)
    return waiting


def _schedule_finalize(attempt: Attempt) -> None:
    """A task at the deadline (and at the end of grace) on the time-critical queue, after commit. The
    sweeper (every 10 s) catches any that a dead worker lost."""
    from exams.tasks import attempt_finalize_due

    attempt_id = attempt.pk
    for when in filter(None, (attempt.deadline, attempt.grace_until)):
        transaction.on_commit(lambda when=when: attempt_finalize_due.apply_async(
            args=[attempt_id], eta=when, queue="deadlines"))


def _lock(attempt_id: int) -> Attempt:
    return Attempt.objects.select_for_update().select_related("exam").get(pk=attempt_id)


def _finalize_if_due(attempt: Attempt, now: dt.datetime) -> bool:
    """Finalisation on touch: called with the row locked; True if the attempt is (now) closed."""
    if not attempt.is_open:
        return True
    deadline_passed = attempt.state == Attempt.State.IN_PROGRESS and now >= attempt.deadline
    grace_over = attempt.state == Attempt.State.OVERDUE and attempt.grace_until and now >= attempt.grace_until
    if deadline_passed or grace_over:
        _finalize_locked(attempt, now)
    return not attempt.is_open


def answer_save(*, attempt_id: int, student: User, question_id: int, value, version: int,
                client_time: dt.datetime | None = None) -> tuple[Answer, bool]:
    """Save one answer if `version` is newer than the stored one. Returns (answer, applied): a stale or
    replayed save is acknowledged with the stored version and changes nothing."""
    now = timezone.now()
    with transaction.atomic():
        attempt = _lock(attempt_id)
        if attempt.student_id != student.pk:
            raise PermissionDenied("Not your attempt.")
        closed = _finalize_if_due(attempt, now) or attempt.state == Attempt.State.OVERDUE
        if not closed:
            return _answer_save_locked(attempt, question_id, value, version, client_time)
    # Outside the transaction: the finalisation this save triggered is committed, the save is refused.
    raise AttemptClosed("Time is up: answers can no longer be changed.")


def _answer_save_locked(attempt: Attempt, question_id: int, value, version: int, client_time) -> tuple[Answer, bool]:
    item = next((i for i, it in enumerate(attempt.layout) if it["question"] == question_id), None)
    if item is None:
        raise ValidationError("That question is not part of this attempt.")
    question = Question.objects.get(pk=question_id)
    stored_value = _validate_value(question, attempt.layout[item], value)
    answer = Answer.objects.filter(attempt=attempt, question_id=question_id).first()
    if answer is not None and answer.version >= version:
        return answer, False
    if attempt.exam.sequential and item < furthest_position(attempt):
        raise ValidationError("This exam does not allow going back to earlier questions.")
    kind = "answered" if answer is None else "changed"
    if answer is None:
        answer = Answer(attempt=attempt, question_id=question_id)
    answer.version, answer.value, answer.client_saved_at = version, stored_value, client_time
    answer.save()
    integrity_record(attempt, kind, {"question": question_id, "version": version}, client_time)
    return answer, True


def furthest_position(attempt: Attempt) -> int:
    """The furthest question index the student has reached (sequential navigation)."""
    viewed = IntegrityEvent.objects.filter(attempt=attempt, kind__in=["viewed", "answered", "changed"]) \
        .values_list("data__question", flat=True)
    indexes = [i for i, it in enumerate(attempt.layout) if it["question"] in set(viewed)]
    return max(indexes, default=0)


def _validate_value(question: Question, item: dict, value):
    """Answers are stored in the question's authoring terms (option indexes), whatever the display order."""
    k = Question.Kind
    if question.kind in (k.SINGLE, k.MULTIPLE):
        if not isinstance(value, list) or not all(isinstance(v, int) and 0 <= v < len(question.options) for v in value):
            raise ValidationError("Choose from the question's options.")
        if question.kind == k.SINGLE and len(value) > 1:
            raise ValidationError("Choose one option.")
        return sorted(set(value))
    if question.kind == k.TRUE_FALSE:
        if value not in (True, False, None):
            raise ValidationError("Answer true or false.")
        return value
    if question.kind == k.NUMERIC:
        if value in (None, ""):
            return None
        try:
            number = decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            raise ValidationError("Enter a number.") from None
        if not number.is_finite() or abs(number) > decimal.Decimal("1e15"):
            raise ValidationError("Enter a finite number.")  # NaN/Infinity would break grading
        return str(number)
    if not isinstance(value, str) or len(value) > (200 if question.kind == k.SHORT else 20000):
        raise ValidationError("The answer is too long." if isinstance(value, str) else "Enter text.")
    return value


def attempt_event(*, attempt_id: int, student: User, kind: str, data: dict | None = None,
                  client_time: dt.datetime | None = None) -> IntegrityEvent | None:
    """Record an interaction (viewed, flagged, focus_lost, focus_regained, disconnected, reconnected).
    Focus loss is recorded with its duration and shown to teachers; it never flags a student by itself."""
    allowed = {"viewed", "flagged", "unflagged", "focus_lost", "focus_regained", "disconnected", "reconnected",
               "second_tab"}
    if kind not in allowed:
        raise ValidationError("Unknown event.")
    with transaction.atomic():
        attempt = _lock(attempt_id)
        if attempt.student_id != student.pk:
            raise PermissionDenied("Not your attempt.")
        if not attempt.is_open:
            return None
        if kind in ("flagged", "unflagged") and data and "question" in data:
            if not any(it["question"] == data["question"] for it in attempt.layout):
                raise ValidationError("That question is not part of this attempt.")
            # A flag on a question not answered yet is kept on an empty version-0 answer (any save wins).
            answer, _ = Answer.objects.get_or_create(attempt=attempt, question_id=data["question"],
                                                     defaults={"version": 0, "value": None})
            answer.flagged = kind == "flagged"
            answer.save(update_fields=["flagged", "saved_at"])
        return integrity_record(attempt, kind, data or {}, client_time)


def attempt_submit(*, attempt_id: int, student: User, client_time: dt.datetime | None = None) -> Attempt:
    """The student submits. Replays (100 times, concurrently, over REST and socket) submit once."""
    with transaction.atomic():
        attempt = _lock(attempt_id)
        if attempt.student_id != student.pk:
            raise PermissionDenied("Not your attempt.")
        if attempt.state in (Attempt.State.SUBMITTED, Attempt.State.ABANDONED):
            return attempt
        if attempt.state == Attempt.State.NOT_STARTED:
            raise ValidationError("This attempt has not started.")
        now = timezone.now()
        if _finalize_if_due(attempt, now):
            return attempt
        _finalize_locked(attempt, now, student_submitted=True, client_time=client_time)
    return attempt


def attempt_finalize(*, attempt_id: int, skip_locked: bool = False) -> Attempt | None:
    """The deadline path (task, sweeper): finalise if due; safe to run any number of times.

    With `skip_locked`, an attempt another process is finalising right now is left to it (the sweeper
    does not queue up behind the deadline tasks)."""
    with transaction.atomic():
        attempt = Attempt.objects.select_for_update(skip_locked=skip_locked).select_related("exam") \
            .filter(pk=attempt_id).first()
        if attempt is None:
            return None
        _finalize_if_due(attempt, timezone.now())
    return attempt


def _finalize_locked(attempt: Attempt, now: dt.datetime, *, student_submitted: bool = False,
                     client_time: dt.datetime | None = None) -> None:
    exam = attempt.exam
    if student_submitted:
        attempt.state, attempt.finish_reason, attempt.finished_at = (
            Attempt.State.SUBMITTED, Attempt.FinishReason.STUDENT, min(now, attempt.grace_until or attempt.deadline))
        kind = "submitted"
    elif attempt.state == Attempt.State.IN_PROGRESS and exam.expiry_policy == Exam.Expiry.GRACE \
            and attempt.grace_until and now < attempt.grace_until:
        attempt.state = Attempt.State.OVERDUE
        attempt.save(update_fields=["state"])
        integrity_record(attempt, "overdue", {"grace_until": attempt.grace_until.isoformat()})
        _proctor_update(attempt)
        _student_update(attempt)
        return
    elif exam.expiry_policy == Exam.Expiry.DISCARD:
        attempt.state, attempt.finish_reason, attempt.finished_at = (
            Attempt.State.ABANDONED, Attempt.FinishReason.DISCARDED, attempt.deadline)
        kind = "abandoned"
    else:
        # Closed by the server: the recorded finish is the deadline (or the end of grace), not "now".
        grace_end = exam.expiry_policy == Exam.Expiry.GRACE and attempt.grace_until is not None
        attempt.state = Attempt.State.SUBMITTED
        attempt.finish_reason = Attempt.FinishReason.GRACE_END if grace_end else Attempt.FinishReason.DEADLINE
        attempt.finished_at = attempt.grace_until if grace_end else attempt.deadline
        kind = "auto_submitted"
    attempt.finalized_at = now
    attempt.save(update_fields=["state", "finish_reason", "finished_at", "finalized_at"])
    integrity_record(attempt, kind, {"finished_at": attempt.finished_at.isoformat(),
                                     "reason": attempt.finish_reason}, client_time)
    if attempt.state == Attempt.State.SUBMITTED:
        grade_auto(attempt)
        _notify_once(attempt, "submitted")
    _proctor_update(attempt)
    _student_update(attempt)


# --- grading -------------------------------------------------------------------------------------------

def score_answer(question: Question, value) -> decimal.Decimal | None:
    """Points for an objective answer; None for an essay (graded by hand)."""
    k = Question.Kind
    points = question.points
    if question.kind == k.ESSAY:
        return None
    if value in (None, "", []):
        return decimal.Decimal(0)
    if question.kind in (k.SINGLE, k.MULTIPLE):
        return points if sorted(value) == sorted(question.correct) else decimal.Decimal(0)
    if question.kind == k.TRUE_FALSE:
        return points if [value] == question.correct else decimal.Decimal(0)
    if question.kind == k.NUMERIC:
        diff = abs(decimal.Decimal(value) - question.numeric_answer)
        return points if diff <= question.numeric_tolerance else decimal.Decimal(0)
    accepted = {a.strip().casefold() for a in question.correct}
    return points if " ".join(str(value).split()).casefold() in accepted else decimal.Decimal(0)


def grade_auto(attempt: Attempt) -> None:
    questions = {q.pk: q for q in Question.objects.filter(pk__in=[i["question"] for i in attempt.layout])}
    answers = {a.question_id: a for a in Answer.objects.filter(attempt=attempt)}
    total, maximum, manual = decimal.Decimal(0), decimal.Decimal(0), False
    for item in attempt.layout:
        q = questions[item["question"]]
        maximum += q.points
        answer = answers.get(q.pk)
        if q.kind == Question.Kind.ESSAY:
            if answer is not None and answer.points is not None:
                total += answer.points
            elif answer is not None and str(answer.value or "").strip():
                manual = True
            continue
        points = score_answer(q, answer.value if answer else None)
        total += points
        if answer is not None and answer.points != points:
            answer.points = points
            answer.save(update_fields=["points"])
    attempt.score, attempt.max_score, attempt.needs_manual_grading = total, maximum, manual
    attempt.graded_at = None if manual else timezone.now()
    attempt.save(update_fields=["score", "max_score", "needs_manual_grading", "graded_at"])
    if not manual:
        _grade_sync_enqueue(attempt)


def grade_manual(*, answer_id: int, grader: User, points, feedback: str = "") -> Answer:
    with transaction.atomic():
        answer = Answer.objects.select_related("attempt__exam", "question").select_for_update().get(pk=answer_id)
        _require_teacher(grader, answer.attempt.exam)
        points = decimal.Decimal(str(points))
        if not 0 <= points <= answer.question.points:
            raise ValidationError(f"Points are between 0 and {answer.question.points}.")
        answer.points, answer.graded_by, answer.feedback = points, grader, feedback[:2000]
        answer.save(update_fields=["points", "graded_by", "feedback"])
        attempt = Attempt.objects.select_for_update().get(pk=answer.attempt_id)
        grade_auto(attempt)
    return answer


def grades_release(*, exam: Exam, actor: User) -> int:
    _require_teacher(actor, exam)
    with transaction.atomic():
        exam = Exam.objects.select_for_update().get(pk=exam.pk)
        if exam.grades_released_at is None:
            exam.grades_released_at = timezone.now()
            exam.save(update_fields=["grades_released_at"])
        attempts = list(Attempt.objects.filter(exam=exam, state=Attempt.State.SUBMITTED, graded_at__isnull=False))
        from exams.tasks import transcript_generate

        for attempt in attempts:
            _notify_once(attempt, "graded")
            attempt_id = attempt.pk
            transaction.on_commit(lambda attempt_id=attempt_id: transcript_generate.apply_async(
                args=[attempt_id], queue="bulk"))
    return len(attempts)


def extra_time_grant(*, attempt_id: int, actor: User, minutes: int) -> Attempt:
    if not 1 <= minutes <= 600:
        raise ValidationError("Extra time is between 1 and 600 minutes.")
    with transaction.atomic():
        attempt = _lock(attempt_id)
        _require_teacher(actor, attempt.exam)
        if not attempt.is_open:
            raise AttemptClosed("The attempt is already closed.")
        attempt.extra_minutes += minutes
        attempt.deadline += dt.timedelta(minutes=minutes)
        if attempt.grace_until:
            attempt.grace_until += dt.timedelta(minutes=minutes)
        attempt.state = Attempt.State.IN_PROGRESS
        close = effective_close(attempt.exam, attempt.student)
        if close and attempt.deadline > close:
            # Granting time to one student moves the close for that student, not for everyone.
            CloseExtension.objects.update_or_create(exam=attempt.exam, student_id=attempt.student_id,
                                                    defaults={"closes_at": attempt.deadline, "granted_by": actor})
        attempt.save(update_fields=["extra_minutes", "deadline", "grace_until", "state"])
        integrity_record(attempt, "extension_granted", {"minutes": minutes, "deadline": attempt.deadline.isoformat(),
                                                        "by": actor.pk})
        _schedule_finalize(attempt)
        _proctor_update(attempt)
        _student_update(attempt)
    return attempt


def attempts_finalize_due(limit: int = 500, budget_seconds: float = 9.0) -> int:
    """The sweeper: finalise every attempt past its deadline (or grace) that no task has closed, in
    batches, until none is left or the time budget (under the beat period) is spent."""
    import time as _time

    started, done, tried = _time.monotonic(), 0, set()
    while _time.monotonic() - started < budget_seconds:
        now = timezone.now()
        due = list(Attempt.objects.filter(state=Attempt.State.IN_PROGRESS, deadline__lte=now)
                   .exclude(pk__in=tried).values_list("pk", flat=True)[:limit])
        due += list(Attempt.objects.filter(state=Attempt.State.OVERDUE, grace_until__lte=now)
                    .exclude(pk__in=tried).values_list("pk", flat=True)[:limit])
        if not due:
            break
        for attempt_id in due:
            tried.add(attempt_id)
            try:
                attempt_finalize(attempt_id=attempt_id, skip_locked=True)
                done += 1
            except Exception:  # one broken attempt must never hold up everyone else's deadline
                logger.exception("finalising attempt %s failed; the next sweep retries it", attempt_id)
    return done


# --- side effects, each once per attempt ----------------------------------------------------------------

def _notify_once(attempt: Attempt, kind: str) -> None:
    notification, created = Notification.objects.get_or_create(
        attempt=attempt, kind=kind, defaults={"institution_id": attempt.institution_id})
    if created:
        from exams.tasks import notification_send

        nid = notification.pk
        transaction.on_commit(lambda: notification_send.apply_async(args=[nid], queue="bulk"))


def _grade_sync_enqueue(attempt: Attempt) -> None:
    payload = {"attempt": attempt.pk, "exam": attempt.exam_id, "student": attempt.student_id,
               "score": str(attempt.score), "max_score": str(attempt.max_score),
               "finished_at": attempt.finished_at.isoformat() if attempt.finished_at else None,
               "activity_progress": "Completed", "grading_progress": "FullyGraded"}
    # The key names this attempt and this result: a retry repeats it, a regrade gets a new one.
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    key = f"aula-attempt-{attempt.pk}-{digest}"
    sync, created = GradeSync.objects.get_or_create(
        attempt=attempt, defaults={"institution_id": attempt.institution_id, "payload": payload,
                                   "idempotency_key": key})
    if not created:
        if sync.idempotency_key == key:
            return
        sync.payload, sync.idempotency_key, sync.status, sync.tries = payload, key, GradeSync.Status.PENDING, 0
        sync.save(update_fields=["payload", "idempotency_key", "status", "tries", "updated_at"])
    from exams.tasks import grade_sync_deliver

    sid = sync.pk
    transaction.on_commit(lambda: grade_sync_deliver.apply_async(args=[sid], queue="bulk"))


def notification_deliver(*, notification_id: int) -> bool:
    """Send one notice by email (idempotent: a sent notice is never sent again)."""
    from django.core.mail import send_mail

    with transaction.atomic():
        n = Notification.objects.select_for_update().select_related("attempt__student", "attempt__exam") \
            .filter(pk=notification_id).first()
        if n is None or n.sent_at is not None:
            return False
        student, exam = n.attempt.student, n.attempt.exam
        subject = {"submitted": f"Submitted: {exam.title}", "graded": f"Your result for {exam.title}"}[n.kind]
        finished = f"{n.attempt.finished_at:%Y-%m-%d %H:%M} UTC"
        body = {"submitted": f"Your attempt at {exam.title} was received at {finished}.",
                "graded": f"The result of {exam.title} is now available in Aula."}[n.kind]
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [student.email], fail_silently=False)
        n.sent_at = timezone.now()
        n.save(update_fields=["sent_at"])
    return True


def grade_sync_attempt(*, sync_id: int) -> str:
    """One delivery try of a grade to the LMS (exams/lms.py); the task retries with backoff."""
    from exams import lms

    with transaction.atomic():
        sync = GradeSync.objects.select_for_update().filter(pk=sync_id).first()
        if sync is None or sync.status in (GradeSync.Status.DELIVERED, GradeSync.Status.NO_TARGET):
            return sync.status if sync else "missing"
        if not lms.configured():
            sync.status = GradeSync.Status.NO_TARGET
            sync.save(update_fields=["status", "updated_at"])
            return sync.status
        sync.tries += 1
        try:
            lms.deliver(sync.payload, idempotency_key=sync.idempotency_key)
        except lms.DeliveryError as exc:
            sync.status = GradeSync.Status.DEAD if sync.tries >= lms.MAX_TRIES else GradeSync.Status.FAILED
            sync.last_error = str(exc)[:300]
            sync.next_try_at = timezone.now() + dt.timedelta(seconds=lms.backoff(sync.tries))
            sync.save(update_fields=["status", "tries", "last_error", "next_try_at", "updated_at"])
            return sync.status
        sync.status, sync.delivered_at, sync.last_error = GradeSync.Status.DELIVERED, timezone.now(), ""
        sync.save(update_fields=["status", "tries", "delivered_at", "last_error", "updated_at"])
        return sync.status


# --- real-time updates ------------------------------------------------------------------------------

def _proctor_update(attempt: Attempt) -> None:
    room_signal_publish(realtime.proctor_room(attempt.institution_id, attempt.exam_id), "attempt.status",
                        events.attempt_status(attempt))


def _student_update(attempt: Attempt) -> None:
    room_event_emit(realtime.attempt_room(attempt.institution_id, attempt.pk), "attempt.status",
                    events.attempt_status(attempt))


# --- transcripts -------------------------------------------------------------------------------------

def transcript_path(attempt: Attempt) -> str:
    return f"transcripts/{attempt.institution_id}/attempt-{attempt.pk}.pdf"


def transcript_render(attempt: Attempt) -> bytes:
    """A one-page PDF of a graded attempt: exam, student, times, points per question, total."""
    from fpdf import FPDF

    questions = {q.pk: q for q in Question.objects.filter(pk__in=[i["question"] for i in attempt.layout])}
    answers = {a.question_id: a for a in Answer.objects.filter(attempt=attempt)}
    pdf = FPDF(format="A4")
    pdf.set_title(f"{attempt.exam.title} transcript")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.multi_cell(0, 8, _latin1(f"{attempt.exam.title}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    lines = [
        f"Student: {attempt.student.public_name}",
        f"Course: {attempt.exam.course.code} {attempt.exam.course.title}",
        f"Started: {attempt.started_at:%Y-%m-%d %H:%M} UTC   Finished: {attempt.finished_at:%Y-%m-%d %H:%M} UTC",
        f"Finish: {attempt.get_finish_reason_display()}",
        f"Score: {attempt.score} / {attempt.max_score}",
    ]
    for line in lines:
        pdf.multi_cell(0, 6, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    for n, item in enumerate(attempt.layout, start=1):
        q = questions[item["question"]]
        a = answers.get(q.pk)
        points = "ungraded" if a is None or a.points is None else f"{a.points} / {q.points}"
        if a is None:
            points = f"0 / {q.points} (no answer)"
        pdf.multi_cell(0, 6, _latin1(f"{n}. {q.prompt[:200]} - {points}"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _latin1(text: str) -> str:
    """The core PDF fonts are Latin-1: replace what they cannot draw instead of failing."""
    return text.encode("latin-1", "replace").decode("latin-1")


def transcript_store(*, attempt_id: int) -> str | None:
    """Render and store the transcript of a graded attempt (idempotent: overwrites the same path)."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    attempt = Attempt.objects.select_related("exam__course", "student").filter(pk=attempt_id).first()
    if attempt is None or attempt.graded_at is None:
        return None
    path = transcript_path(attempt)
    if default_storage.exists(path):
        default_storage.delete(path)
    default_storage.save(path, ContentFile(transcript_render(attempt)))
    return path
