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
import math
import random
import secrets
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from classrooms import selectors as classroom_selectors
from classrooms.models import Course, Role, User
from classrooms.services import upsert
from config.realtime.transport import room_event_record, room_next_seq, room_signal_publish
from config.sql import from_row, select_list
from exams import events, realtime, signals
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


def _deadline_for(exam: Exam, student: User, started_at: dt.datetime, extra: int = 0,
                  close: dt.datetime | None = None) -> dt.datetime:
    deadline = started_at + dt.timedelta(minutes=float(allowed_minutes(exam, student)) + extra)
    close = close or effective_close(exam, student)
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


def _integrity_entry(attempt: Attempt, kind: str, data: dict | None = None,
                     client_time: dt.datetime | None = None) -> IntegrityEvent:
    """The next entry of the attempt's hash chain, not yet saved; moves `attempt.log_head`/`log_count` on
    in memory. The caller holds the attempt row lock (it orders the chain) and saves both, so a write that
    updates the attempt anyway carries the chain head in the same statement."""
    now = timezone.now()
    data = data or {}
    prev, index = attempt.log_head or GENESIS, attempt.log_count
    digest = _hash(prev, index, kind, now, client_time, data)
    attempt.log_head, attempt.log_count = digest, index + 1
    return IntegrityEvent(attempt_id=attempt.pk, index=index, kind=kind, server_time=now, client_time=client_time,
                          data=data, prev_hash=prev, hash=digest)


def integrity_record(attempt: Attempt, kind: str, data: dict | None = None,
                     client_time: dt.datetime | None = None) -> IntegrityEvent:
    """Append to the attempt's hash chain. The caller holds the attempt row lock (it orders the chain)."""
    event = _integrity_entry(attempt, kind, data, client_time)
    event.save(force_insert=True)
    Attempt.objects.filter(pk=attempt.pk).update(log_head=attempt.log_head, log_count=attempt.log_count)
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


# Everything a Start needs to know about the student besides the attempt rows, in one statement: the
# active role in the course, a personal close extension and the accommodation.
_START_CONTEXT_SQL = """
SELECT (SELECT role FROM classrooms_enrollment
        WHERE user_id = %(student)s AND course_id = %(course)s AND is_active ORDER BY id LIMIT 1),
       (SELECT closes_at FROM exams_closeextension WHERE exam_id = %(exam)s AND student_id = %(student)s),
       acc.time_multiplier, acc.extra_minutes
FROM (SELECT 1) one
LEFT JOIN exams_accommodation acc ON acc.institution_id = %(institution)s AND acc.student_id = %(student)s
"""

# The student's attempts at the exam, locked; columns from the model (config.sql), never from input.
_START_ATTEMPTS_SQL = "SELECT {columns} FROM exams_attempt a WHERE a.exam_id = %s AND a.student_id = %s " \
    "ORDER BY a.number FOR UPDATE"

# The start itself: the attempt's state, deadline and chain head, and the "started" entry, in one statement.
_START_WRITE_SQL = """
WITH started AS (
    UPDATE exams_attempt SET state = %(state)s, started_at = %(now)s, deadline = %(deadline)s,
                             grace_until = %(grace)s, log_head = %(hash)s, log_count = %(count)s
    WHERE id = %(attempt)s
    RETURNING id
)
INSERT INTO exams_integrityevent (attempt_id, index, kind, server_time, client_time, data, prev_hash, hash)
SELECT id, %(index)s, %(kind)s, %(server_time)s, %(client_time)s, %(data)s::jsonb, %(prev)s, %(hash)s FROM started
"""


def attempt_start(*, exam: Exam, student: User, client_time: dt.datetime | None = None) -> Attempt:
    """Start (or return the running) attempt. Idempotent: pressing Start twice starts once.

    With the attempt pre-created this is one read of the student's context, one locked read of their
    attempts and one write (state, deadline, chain head and the "started" entry): cheap enough for a start
    stampede of 2,000 (docs/benchmarks.md)."""
    from django.db import connection

    now = timezone.now()
    with connection.cursor() as cur:
        cur.execute(_START_CONTEXT_SQL, {"student": student.pk, "course": exam.course_id, "exam": exam.pk,
                                         "institution": exam.institution_id})
        role, extended_close, multiplier, extra_minutes = cur.fetchone()
    if role != Role.STUDENT:
        raise PermissionDenied("Only the course's students take this exam.")
    if exam.status != Exam.Status.PUBLISHED:
        raise ValidationError("This exam is not open.")
    if exam.opens_at and now < exam.opens_at:
        raise ValidationError("This exam has not opened yet.")
    close = extended_close if extended_close and (exam.closes_at is None or extended_close > exam.closes_at) \
        else exam.closes_at
    if close and now >= close:
        raise ValidationError("This exam has closed.")
    minutes = decimal.Decimal(exam.time_limit_minutes)
    if multiplier is not None:
        minutes = minutes * multiplier + extra_minutes  # the same rule as allowed_minutes()
    with transaction.atomic():
        with connection.cursor() as cur:  # the student's attempts, locked (the layout is not needed here)
            cur.execute(_START_ATTEMPTS_SQL.format(columns=select_list(Attempt, "a", exclude=("layout",))),
                        [exam.pk, student.pk])
            attempts = [from_row(Attempt, row, exclude=("layout",)) for row in cur.fetchall()]
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
        waiting.exam = exam
        waiting.state, waiting.started_at = Attempt.State.IN_PROGRESS, now
        deadline = now + dt.timedelta(minutes=float(minutes))
        waiting.deadline = min(deadline, close) if close else deadline
        if exam.expiry_policy == Exam.Expiry.GRACE and exam.grace_minutes:
            waiting.grace_until = waiting.deadline + dt.timedelta(minutes=exam.grace_minutes)
        event = _integrity_entry(waiting, "started", {"deadline": waiting.deadline.isoformat()}, client_time)
        with connection.cursor() as cur:
            cur.execute(_START_WRITE_SQL, {
                "attempt": waiting.pk, "state": waiting.state, "now": now, "deadline": waiting.deadline,
                "grace": waiting.grace_until, "hash": event.hash, "count": waiting.log_count, "index": event.index,
                "kind": event.kind, "server_time": event.server_time, "client_time": client_time,
                "data": json.dumps(event.data), "prev": event.prev_hash})
        _schedule_finalize(waiting)
        _proctor_update(waiting)
    return waiting


def _close_second(when: dt.datetime) -> int:
    """The whole second at (or just after) a deadline: every attempt of an exam due within that second is
    closed by one task."""
    return math.ceil(when.timestamp())


def _schedule_finalize(attempt: Attempt) -> None:
    """At the attempt's deadline (and at the end of grace): one close task per exam and second on the
    time-critical queue, queued after commit by the first attempt that needs it (a Redis add), so 2,000
    attempts ending in the same second queue one task, not 2,000. The task closes every due attempt of the
    exam in batches. The sweeper (every 10 s) catches any task a dead worker lost."""
    from exams.tasks import attempts_close_due

    exam_id = attempt.exam_id
    for when in filter(None, (attempt.deadline, attempt.grace_until)):
        second = _close_second(when)

        def queue(second=second):
            key = f"{settings.AULA_REDIS_KEY_PREFIX}:exams:close:{exam_id}:{second}"
            ttl = max(second - time.time(), 0) + 3600
            try:
                first = cache.add(key, 1, timeout=ttl)
            except Exception:  # the cache is away: queue anyway (closing is idempotent)
                first = True
            if not first:
                return
            eta = dt.datetime.fromtimestamp(second, dt.UTC)
            try:
                attempts_close_due.apply_async(args=[exam_id], kwargs={"helpers": True}, eta=eta,
                                               queue="deadlines")
            except Exception:
                cache.delete(key)  # let the next start of this second try again; the sweeper is the backstop
                raise

        transaction.on_commit(queue)


def _lock(attempt_id: int) -> Attempt:
    """The attempt row, locked, with its exam (read, not locked: every attempt of an exam shares that row)."""
    return Attempt.objects.select_for_update(of=("self",)).select_related("exam").get(pk=attempt_id)


def _is_due(attempt: Attempt, now: dt.datetime) -> bool:
    """Past its deadline (in progress) or past its grace (overdue): the attempt must be closed now."""
    if attempt.state == Attempt.State.IN_PROGRESS:
        return attempt.deadline is not None and now >= attempt.deadline
    return attempt.state == Attempt.State.OVERDUE and attempt.grace_until is not None and now >= attempt.grace_until


def _finalize_if_due(attempt: Attempt, now: dt.datetime) -> bool:
    """Finalisation on touch: called with the row locked; True if the attempt is (now) closed."""
    if not attempt.is_open:
        return True
    if _is_due(attempt, now):
        _finalize_locked(attempt, now)
    return not attempt.is_open


_SAVE_READ_SQL = """
SELECT a.id, a.student_id, a.exam_id, a.institution_id, a.state, a.deadline, a.grace_until, a.layout,
       a.log_head, a.log_count, e.sequential,
       q.kind AS q_kind, jsonb_array_length(q.options) AS q_options,
       s.version AS a_version, s.flagged AS a_flagged, (s.value IS NOT NULL) AS a_answered,
       (SELECT count(*) FROM exams_answer x WHERE x.attempt_id = a.id AND x.value IS NOT NULL) AS answered
FROM exams_attempt a
JOIN exams_exam e ON e.id = a.exam_id
LEFT JOIN exams_question q ON q.id = %(question)s
LEFT JOIN exams_answer s ON s.attempt_id = a.id AND s.question_id = %(question)s
WHERE a.id = %(attempt)s
"""
# The lock is its own statement: under READ COMMITTED a `FOR UPDATE` that waited re-reads the locked row
# only, the joined rows (the stored answer's version) would come from the snapshot taken before the wait,
# so a save queued behind a newer one would overwrite it. The read after the lock sees every commit.
_SAVE_LOCK_SQL = "SELECT 1 FROM exams_attempt WHERE id = %(attempt)s FOR UPDATE"

# The answer, its integrity entry and the attempt's chain head in one statement. A flag set earlier is
# kept (not in the update).
_SAVE_WRITE_SQL = """
WITH saved AS (
    INSERT INTO exams_answer (attempt_id, question_id, version, value, flagged, saved_at, client_saved_at, feedback)
    VALUES (%(attempt)s, %(question)s, %(version)s, %(value)s::jsonb, %(flagged)s, %(now)s, %(client_time)s, '')
    ON CONFLICT (attempt_id, question_id) DO UPDATE
        SET version = EXCLUDED.version, value = EXCLUDED.value, saved_at = EXCLUDED.saved_at,
            client_saved_at = EXCLUDED.client_saved_at
    RETURNING id
), logged AS (
    INSERT INTO exams_integrityevent (attempt_id, index, kind, server_time, client_time, data, prev_hash, hash)
    VALUES (%(attempt)s, %(index)s, %(kind)s, %(server_time)s, %(client_time)s, %(data)s::jsonb, %(prev)s, %(hash)s)
)
UPDATE exams_attempt SET log_head = %(hash)s, log_count = %(count)s WHERE id = %(attempt)s
RETURNING (SELECT id FROM saved)
"""

# The same write as one autocommit statement, on condition that nothing moved since the (unlocked) read:
# the chain head moves only if it is still at the index the entry was built for and the attempt is still
# open, and the answer and the entry are written only if it moved. Every write to an open attempt's answers
# moves the chain head, so a concurrent one makes this statement write nothing (no row back), and the save
# is redone under the row lock. No BEGIN/COMMIT round trips, no lock held between two statements.
_SAVE_CAS_SQL = """
WITH head AS (
    UPDATE exams_attempt SET log_head = %(hash)s, log_count = %(count)s
    WHERE id = %(attempt)s AND log_count = %(index)s AND state = 'in_progress'
      AND (deadline IS NULL OR deadline > %(now)s)
    RETURNING id
), saved AS (
    INSERT INTO exams_answer (attempt_id, question_id, version, value, flagged, saved_at, client_saved_at, feedback)
    SELECT id, %(question)s, %(version)s, %(value)s::jsonb, %(flagged)s, %(now)s, %(client_time)s, '' FROM head
    ON CONFLICT (attempt_id, question_id) DO UPDATE
        SET version = EXCLUDED.version, value = EXCLUDED.value, saved_at = EXCLUDED.saved_at,
            client_saved_at = EXCLUDED.client_saved_at
    RETURNING id
), logged AS (
    INSERT INTO exams_integrityevent (attempt_id, index, kind, server_time, client_time, data, prev_hash, hash)
    SELECT id, %(index)s, %(kind)s, %(server_time)s, %(client_time)s, %(data)s::jsonb, %(prev)s, %(hash)s FROM head
)
SELECT id FROM saved
"""


def answer_save(*, attempt_id: int, student: User, question_id: int, value, version: int,
                client_time: dt.datetime | None = None) -> tuple[Answer, bool]:
    """Save one answer if `version` is newer than the stored one. Returns (answer, applied): a stale or
    replayed save is acknowledged with the stored version and changes nothing.

    The hot path of an exam (2,000 students saving every 5 s is 400 saves a second). Outside a caller's
    transaction it is two autocommit statements: a plain read of the attempt, its exam's navigation rule,
    the question's kind and the stored answer's version, then one conditional write (`_SAVE_CAS_SQL`) that
    upserts the answer, appends the integrity entry and moves the chain head only if nothing moved since
    the read. Otherwise, and whenever the attempt is due, closing or in grace, the save runs under the
    attempt's row lock in a transaction (`_answer_save_under_lock`). Built with the ORM, or with
    BEGIN/COMMIT around a locked read, the same work cost more CPU than this machine has for 400 a second
    (docs/benchmarks.md). Either way one attempt's saves, flags and chain are ordered, never two attempts'."""
    from django.db import connection

    now = timezone.now()
    if connection.get_autocommit():
        saved = _answer_save_unlocked(attempt_id, student, question_id, value, version, client_time, now)
        if saved is not None:
            return saved
    return _answer_save_under_lock(attempt_id, student, question_id, value, version, client_time, now)


def _save_row(cur, attempt_id: int, question_id: int, student: User) -> Attempt | None:
    cur.execute(_SAVE_READ_SQL, {"attempt": attempt_id, "question": question_id})
    row = cur.fetchone()
    if row is None:
        return None
    (pk, student_id, exam_id, institution_id, state, deadline, grace_until, layout, log_head, log_count,
     sequential, q_kind, q_options, a_version, a_flagged, a_answered, answered) = row
    if student_id != student.pk:
        raise PermissionDenied("Not your attempt.")
    # Only the fields a save needs (a model built from a full row cost more than the save itself).
    attempt = Attempt(id=pk, student_id=student_id, exam_id=exam_id, institution_id=institution_id, state=state,
                      deadline=deadline, grace_until=grace_until, log_head=log_head, log_count=log_count,
                      layout=json.loads(layout) if isinstance(layout, str) else layout)
    attempt.exam_sequential, attempt.q_kind, attempt.q_options = sequential, q_kind, q_options
    attempt.a_version, attempt.a_flagged, attempt.a_answered, attempt.answered = \
        a_version, a_flagged, a_answered, answered
    return attempt


def _answer_save_unlocked(attempt_id, student, question_id, value, version, client_time,
                          now) -> tuple[Answer, bool] | None:
    """The autocommit path; None when the save must be redone under the lock."""
    from django.db import connection

    with connection.cursor() as cur:
        attempt = _save_row(cur, attempt_id, question_id, student)
    if attempt is None or attempt.state != Attempt.State.IN_PROGRESS or _is_due(attempt, now):
        return None  # missing, closing, closed or in grace: the locked path decides and refuses
    return _answer_write(attempt, question_id, value, version, client_time, now, _SAVE_CAS_SQL)


def _answer_save_under_lock(attempt_id, student, question_id, value, version, client_time,
                            now) -> tuple[Answer, bool]:
    from django.db import connection

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(_SAVE_LOCK_SQL, {"attempt": attempt_id})
            attempt = _save_row(cur, attempt_id, question_id, student) if cur.fetchone() else None
        if attempt is None:
            raise Attempt.DoesNotExist("No such attempt.")
        if attempt.is_open and _is_due(attempt, now):
            attempt = Attempt.objects.select_related("exam").get(pk=attempt.pk)  # closing needs the whole row
        closed = _finalize_if_due(attempt, now) or attempt.state == Attempt.State.OVERDUE
        if not closed:
            return _answer_write(attempt, question_id, value, version, client_time, now, _SAVE_WRITE_SQL)
    # Outside the transaction: the finalisation this save triggered is committed, the save is refused.
    raise AttemptClosed("Time is up: answers can no longer be changed.")


def _answer_write(attempt: Attempt, question_id: int, value, version: int, client_time, now: dt.datetime,
                  sql: str) -> tuple[Answer, bool] | None:
    from django.db import connection

    item = next((i for i, it in enumerate(attempt.layout) if it["question"] == question_id), None)
    if item is None or attempt.q_kind is None:
        raise ValidationError("That question is not part of this attempt.")
    stored_value = _validate_value(attempt.q_kind, attempt.q_options or 0, value)
    if attempt.a_version is not None and attempt.a_version >= version:
        return Answer.objects.get(attempt=attempt, question_id=question_id), False
    if attempt.exam_sequential and item < furthest_position(attempt):
        raise ValidationError("This exam does not allow going back to earlier questions.")
    kind = "answered" if attempt.a_version is None else "changed"
    event = _integrity_entry(attempt, kind, {"question": question_id, "version": version}, client_time)
    with connection.cursor() as cur:
        cur.execute(sql, {
            "attempt": attempt.pk, "question": question_id, "version": version,
            "value": None if stored_value is None else json.dumps(stored_value), "flagged": bool(attempt.a_flagged),
            "now": now, "client_time": client_time, "index": event.index, "kind": event.kind,
            "server_time": event.server_time, "data": json.dumps(event.data), "prev": event.prev_hash,
            "hash": event.hash, "count": attempt.log_count})
        row = cur.fetchone()
    if row is None:
        return None  # the conditional write lost a race: redone under the lock
    answer = Answer(id=row[0], attempt_id=attempt.pk, question_id=question_id, version=version,
                    value=stored_value, client_saved_at=client_time, flagged=bool(attempt.a_flagged), saved_at=now)
    answer._state.adding = False
    answered = (attempt.answered or 0) + (stored_value is not None) - bool(attempt.a_answered)
    if answered != (attempt.answered or 0):
        _progress_update(attempt, answered)
    return answer, True


def furthest_position(attempt: Attempt) -> int:
    """The furthest question index the student has reached (sequential navigation)."""
    viewed = IntegrityEvent.objects.filter(attempt=attempt, kind__in=["viewed", "answered", "changed"]) \
        .values_list("data__question", flat=True)
    indexes = [i for i, it in enumerate(attempt.layout) if it["question"] in set(viewed)]
    return max(indexes, default=0)


def _validate_value(kind: str, option_count: int, value):
    """Answers are stored in the question's authoring terms (option indexes), whatever the display order."""
    k = Question.Kind
    if kind in (k.SINGLE, k.MULTIPLE):
        if not isinstance(value, list) or not all(isinstance(v, int) and 0 <= v < option_count for v in value):
            raise ValidationError("Choose from the question's options.")
        if kind == k.SINGLE and len(value) > 1:
            raise ValidationError("Choose one option.")
        return sorted(set(value))
    if kind == k.TRUE_FALSE:
        if value not in (True, False, None):
            raise ValidationError("Answer true or false.")
        return value
    if kind == k.NUMERIC:
        if value in (None, ""):
            return None
        try:
            number = decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            raise ValidationError("Enter a number.") from None
        if not number.is_finite() or abs(number) > decimal.Decimal("1e15"):
            raise ValidationError("Enter a finite number.")  # NaN/Infinity would break grading
        return str(number)
    if not isinstance(value, str) or len(value) > (200 if kind == k.SHORT else 20000):
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
        attempt = Attempt.objects.select_for_update(skip_locked=skip_locked, of=("self",)).select_related("exam") \
            .filter(pk=attempt_id).first()
        if attempt is None:
            return None
        _finalize_if_due(attempt, timezone.now())
    return attempt


_CLOSE_FIELDS = ["state", "finish_reason", "finished_at", "finalized_at", "log_head", "log_count"]


def _close(attempt: Attempt, now: dt.datetime, *, student_submitted: bool = False) -> tuple[str, dict]:
    """Move a locked, open attempt to its next state (in memory); return its integrity entry (kind, data).

    Submitted by the student; overdue (the grace period starts: submit only); abandoned (discard policy);
    or submitted by the server, whose recorded finish is the deadline (or the end of grace), not "now"."""
    exam = attempt.exam
    if student_submitted:
        attempt.state, attempt.finish_reason, attempt.finished_at = (
            Attempt.State.SUBMITTED, Attempt.FinishReason.STUDENT, min(now, attempt.grace_until or attempt.deadline))
        kind = "submitted"
    elif attempt.state == Attempt.State.IN_PROGRESS and exam.expiry_policy == Exam.Expiry.GRACE \
            and attempt.grace_until and now < attempt.grace_until:
        attempt.state = Attempt.State.OVERDUE
        return "overdue", {"grace_until": attempt.grace_until.isoformat()}
    elif exam.expiry_policy == Exam.Expiry.DISCARD:
        attempt.state, attempt.finish_reason, attempt.finished_at = (
            Attempt.State.ABANDONED, Attempt.FinishReason.DISCARDED, attempt.deadline)
        kind = "abandoned"
    else:
        grace_end = exam.expiry_policy == Exam.Expiry.GRACE and attempt.grace_until is not None
        attempt.state = Attempt.State.SUBMITTED
        attempt.finish_reason = Attempt.FinishReason.GRACE_END if grace_end else Attempt.FinishReason.DEADLINE
        attempt.finished_at = attempt.grace_until if grace_end else attempt.deadline
        kind = "auto_submitted"
    attempt.finalized_at = now
    return kind, {"finished_at": attempt.finished_at.isoformat(), "reason": attempt.finish_reason}


def attempt_touch(attempt: Attempt) -> Attempt:
    """Finalisation on touch (a page, a socket connect, a clock read) for an attempt just read: the row is
    locked and closed only when it is due, so the common case costs no write at all."""
    if attempt.is_open and _is_due(attempt, timezone.now()):
        return attempt_finalize(attempt_id=attempt.pk) or attempt
    return attempt


def _finalize_locked(attempt: Attempt, now: dt.datetime, *, student_submitted: bool = False,
                     client_time: dt.datetime | None = None) -> None:
    """Close one attempt (a submit, a touch after the deadline, a single deadline task) and do its
    after-close work (grade, notice) in the same transaction: the caller gets a graded attempt."""
    kind, data = _close(attempt, now, student_submitted=student_submitted)
    event = _integrity_entry(attempt, kind, data, client_time)
    attempt.save(update_fields=_CLOSE_FIELDS)
    event.save(force_insert=True)
    if attempt.state == Attempt.State.SUBMITTED:
        _after_close_locked(attempt)
    _proctor_update(attempt)
    _student_update(attempt)


def _after_close_locked(attempt: Attempt) -> None:
    """What follows a submission: the automatic grade (and the grade-sync row) and the "submitted" notice.
    Keyed by the attempt, so running it again changes nothing."""
    grade_auto(attempt)
    _notify_once(attempt, "submitted")


def attempts_close_due(*, exam_id: int | None = None, chunk: int = 100, budget_seconds: float = 9.0,
                       helpers: int = 0) -> int:
    """The deadline wave: close every attempt past its deadline (or grace), `chunk` at a time, until none is
    due or the time budget is spent; returns how many were closed.

    Closing is only the state, the finish time and the integrity entry (one UPDATE and one INSERT per
    chunk) plus the student's status event; grading, notices and grade sync follow on the bulk queue
    (`attempts_after_close`). Chunks are taken with SKIP LOCKED, so several workers share one wave and
    never wait for each other or for a student's submit; with `helpers`, the first full chunk queues that
    many more copies of this task for the same exam."""
    started, done, broken = time.monotonic(), 0, set()
    while time.monotonic() - started < budget_seconds:
        closed = _close_chunk(exam_id, chunk, broken)
        if closed is None:
            break
        done += closed
        if helpers and closed >= chunk:
            from exams.tasks import attempts_close_due as task

            for _ in range(helpers):
                task.apply_async(args=[exam_id], queue="deadlines")
            helpers = 0
    return done


def _due_attempts(exam_id: int | None, now: dt.datetime):
    due = Attempt.objects.filter(Q(state=Attempt.State.IN_PROGRESS, deadline__lte=now)
                                 | Q(state=Attempt.State.OVERDUE, grace_until__lte=now))
    return due.filter(exam_id=exam_id) if exam_id is not None else due


def _close_chunk(exam_id: int | None, chunk: int, broken: set[int]) -> int | None:
    """Close up to `chunk` due attempts in one transaction; None when nothing is due (or all are locked).
    If the chunk fails, its attempts are closed one by one: one broken attempt never holds up the others'
    deadlines (it stays open, logged, and the next sweep tries it again)."""
    now = timezone.now()
    ids: list[int] = []
    try:
        with transaction.atomic():
            attempts = list(_due_attempts(exam_id, now).exclude(pk__in=broken).select_related("exam")
                            .select_for_update(skip_locked=True, of=("self",)).order_by("deadline", "pk")[:chunk])
            if not attempts:
                return None
            ids = [a.pk for a in attempts]
            _close_many(attempts, now)
        return len(ids)
    except Exception:
        if not ids:
            raise
        logger.exception("closing %s attempts together failed; closing them one by one", len(ids))
    closed = 0
    for attempt_id in ids:
        try:
            with transaction.atomic():
                attempt = _due_attempts(None, timezone.now()).select_related("exam") \
                    .select_for_update(skip_locked=True, of=("self",)).filter(pk=attempt_id).first()
                if attempt is not None:
                    _close_many([attempt], now)
                    closed += 1
        except Exception:
            broken.add(attempt_id)
            logger.exception("closing attempt %s failed; the next sweep retries it", attempt_id)
    return closed


def _close_many(attempts: list[Attempt], now: dt.datetime) -> None:
    """Close locked, due attempts together: one UPDATE, one INSERT of integrity entries, each student's
    status event; after commit, the proctor board's updates and one after-close task for the submitted."""
    entries = []
    for attempt in attempts:
        kind, data = _close(attempt, now)
        entries.append(_integrity_entry(attempt, kind, data))
    Attempt.objects.bulk_update(attempts, _CLOSE_FIELDS)
    IntegrityEvent.objects.bulk_create(entries)
    for attempt in attempts:
        _student_update(attempt)
        _proctor_update(attempt)
    done = [a for a in attempts if a.state == Attempt.State.SUBMITTED]
    submitted = [a.pk for a in done]
    if submitted:
        signals.attempts_submitted.send(sender=Attempt, attempts=done)
        from exams.tasks import attempts_after_close

        transaction.on_commit(lambda: attempts_after_close.apply_async(args=[submitted], queue="bulk"))


def attempts_after_close(*, attempt_ids: list[int]) -> int:
    """Grade and notify submitted attempts that a batch closed (idempotent: an attempt already graded is
    skipped; one failing attempt is logged and left for `attempts_after_close_due`)."""
    done = 0
    for attempt_id in attempt_ids:
        try:
            with transaction.atomic():
                attempt = Attempt.objects.select_for_update(of=("self",)).select_related("exam") \
                    .filter(pk=attempt_id, state=Attempt.State.SUBMITTED, max_score__isnull=True).first()
                if attempt is None:
                    continue
                _after_close_locked(attempt)
                done += 1
        except Exception:
            logger.exception("after-close work for attempt %s failed; the next sweep retries it", attempt_id)
    return done


def attempts_after_close_due(*, older_than_seconds: float = 60, limit: int = 500) -> int:
    """The after-close sweeper: submitted attempts still without a grade (their after-close task was lost
    with a worker, or failed) get it now."""
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    ids = list(Attempt.objects.filter(state=Attempt.State.SUBMITTED, max_score__isnull=True,
                                      finalized_at__lte=cutoff).values_list("pk", flat=True)[:limit])
    return attempts_after_close(attempt_ids=ids)


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
    changed: list[Answer] = []
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
            changed.append(answer)
    if changed:
        Answer.objects.bulk_update(changed, ["points"])  # one statement, not one per question
    attempt.score, attempt.max_score, attempt.needs_manual_grading = total, maximum, manual
    attempt.graded_at = None if manual else timezone.now()
    attempt.save(update_fields=["score", "max_score", "needs_manual_grading", "graded_at"])
    _grade_sync_enqueue(attempt)  # a result waiting for a teacher goes as PendingManual, then FullyGraded


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
        attempts = list(Attempt.objects.filter(exam=exam, state=Attempt.State.SUBMITTED, graded_at__isnull=False)
                        .select_related("exam"))
        from exams.tasks import transcript_generate

        for attempt in attempts:
            _notify_once(attempt, "graded")
            _grade_sync_enqueue(attempt)  # the scores go to the LMS now (queued once: keyed by the result)
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


def attempts_finalize_due(budget_seconds: float = 9.0) -> int:
    """The sweeper: close every attempt past its deadline (or grace) that no task has closed, in batches
    (see `attempts_close_due`), until none is left or the time budget (under the beat period) is spent."""
    return attempts_close_due(budget_seconds=budget_seconds)


# --- side effects, each once per attempt ----------------------------------------------------------------

def _notify_once(attempt: Attempt, kind: str) -> None:
    notification, created = Notification.objects.get_or_create(
        attempt=attempt, kind=kind, defaults={"institution_id": attempt.institution_id})
    if created:
        from exams.tasks import notification_send

        nid = notification.pk
        transaction.on_commit(lambda: notification_send.apply_async(args=[nid], queue="bulk"))


def _grade_sync_put(*, lookup: dict, name: str, institution_id: int, student_id: int, payload: dict, link) -> None:
    """Queue one result for the LMS. The key names the result (not when it was queued): re-queuing the same
    result does nothing, a changed result is a new delivery with a later timestamp (AGS keeps the newest)."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    key = f"aula-{name}-{digest}"[:64]
    payload = {**payload, "timestamp": timezone.now().isoformat()}
    sync, created = GradeSync.objects.get_or_create(
        **lookup, defaults={"institution_id": institution_id, "student_id": student_id, "payload": payload,
                            "idempotency_key": key, "lti_link": link})
    if not created:
        if sync.idempotency_key == key:
            return
        sync.payload, sync.idempotency_key, sync.status, sync.tries = payload, key, GradeSync.Status.PENDING, 0
        sync.lti_link, sync.last_error, sync.next_try_at = link or sync.lti_link, "", None
        sync.save(update_fields=["payload", "idempotency_key", "status", "tries", "lti_link", "last_error",
                                 "next_try_at", "updated_at"])
    from exams.tasks import grade_sync_deliver

    sid, tries = sync.pk, sync.tries
    transaction.on_commit(lambda: grade_sync_deliver.apply_async(args=[sid, tries], queue="bulk"))


def _grade_sync_enqueue(attempt: Attempt) -> None:
    """Queue an exam result for the LMS. Until the teacher releases the exam's grades, an LMS gradebook (which
    students see) only hears that the attempt was submitted (AGS gradingProgress Pending / PendingManual, no
    score); the score goes at release, or at grading when released already. The grade webhook only ever gets
    released, finished results."""
    from classrooms import lti_selectors

    manual = attempt.needs_manual_grading
    final = attempt.exam.grades_released_at is not None and not manual
    link = lti_selectors.grade_link_for("exam", attempt.exam_id, attempt.exam.course_id, attempt.student_id)
    if link is None and not final:
        return
    payload = {"attempt": attempt.pk, "exam": attempt.exam_id, "student": attempt.student_id,
               "score": str(attempt.score) if final else None, "max_score": str(attempt.max_score),
               "finished_at": attempt.finished_at.isoformat() if attempt.finished_at else None,
               "activity_progress": "Completed",
               "grading_progress": "FullyGraded" if final else "PendingManual" if manual else "Pending"}
    _grade_sync_put(lookup={"attempt": attempt}, name=f"attempt-{attempt.pk}", institution_id=attempt.institution_id,
                    student_id=attempt.student_id, payload=payload, link=link)


def session_quiz_grades_enqueue(*, session_id: int) -> int:
    """A live session placed in an LMS ended: each student's quiz result (percent correct over the session's
    quizzes) goes to its grade column. Only sessions with quizzes and an LTI placement; safe to run twice."""
    from classrooms import lti_selectors
    from classrooms.models import LiveSession
    from classrooms.selectors import session_quiz_scores

    session = LiveSession.objects.filter(pk=session_id).select_related("course").first()
    if session is None or not lti_selectors.links_for_target("session", session.pk, session.course_id).exists():
        return 0
    total, correct = session_quiz_scores(session.pk)
    if not total:
        return 0
    queued = 0
    with transaction.atomic():
        for student_id, right in correct.items():
            link = lti_selectors.grade_link_for("session", session.pk, session.course_id, student_id)
            if link is None:
                continue
            payload = {"session": session.pk, "student": student_id, "score": str(round(100 * right / total, 2)),
                       "max_score": "100", "quizzes": total, "correct": right,
                       "finished_at": session.ended_at.isoformat() if session.ended_at else None,
                       "activity_progress": "Completed", "grading_progress": "FullyGraded"}
            _grade_sync_put(lookup={"session": session, "student_id": student_id},
                            name=f"session-{session.pk}-{student_id}", institution_id=session.institution_id,
                            student_id=student_id, payload=payload, link=link)
            queued += 1
    return queued


def notification_deliver(*, notification_id: int) -> bool:
    """Send one notice by email (idempotent: a sent notice is never sent again)."""
    from django.core.mail import send_mail

    with transaction.atomic():
        n = Notification.objects.select_for_update(of=("self",)).select_related("attempt__student", "attempt__exam") \
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


# A delivery's claim on its row: longer than one try's HTTP calls (up to six, each with a (5, 15) s timeout).
GRADE_SYNC_CLAIM = dt.timedelta(minutes=3)


def grade_sync_attempt(*, sync_id: int, expected_tries: int | None = None) -> str:
    """One delivery try of a result to the LMS: over LTI AGS to the placement's grade column, else to the grade
    webhook (exams/lms.py). The row is claimed in a short transaction (tries + 1, and next_try_at past the claim
    so the sweeper leaves it); the HTTP calls run with no transaction open; the outcome is written only if the
    row is still the one claimed (a newer result re-keys it and has its own delivery). `expected_tries` makes a
    duplicate task (one the sweeper queued while another was still waiting in a busy queue) a no-op."""
    from exams import lms

    terminal = (GradeSync.Status.DELIVERED, GradeSync.Status.NO_TARGET, GradeSync.Status.DEAD)
    with transaction.atomic():
        sync = GradeSync.objects.select_for_update().filter(pk=sync_id).first()
        if sync is None or sync.status in terminal:
            return sync.status if sync else "missing"
        if expected_tries is not None and sync.tries != expected_tries:
            return "duplicate"
        if sync.lti_link_id is None and not lms.configured():
            sync.status = GradeSync.Status.NO_TARGET
            sync.save(update_fields=["status", "updated_at"])
            return sync.status
        sync.tries += 1
        sync.next_try_at = timezone.now() + GRADE_SYNC_CLAIM
        sync.save(update_fields=["tries", "next_try_at", "updated_at"])
    claim = (sync.tries, sync.idempotency_key)
    error = None
    try:
        if sync.lti_link_id is not None:
            lms.deliver_lti(sync)
        else:
            lms.deliver(sync.payload, idempotency_key=sync.idempotency_key)
    except lms.DeliveryError as exc:
        error = exc
    with transaction.atomic():
        sync = GradeSync.objects.select_for_update().filter(pk=sync_id).first()
        if sync is None or (sync.tries, sync.idempotency_key) != claim:
            return "superseded"
        if error is not None:
            give_up = error.permanent or sync.tries >= lms.MAX_TRIES
            sync.status = GradeSync.Status.DEAD if give_up else GradeSync.Status.FAILED
            sync.last_error = str(error)[:300]
            sync.next_try_at = None if give_up else timezone.now() + dt.timedelta(seconds=lms.backoff(sync.tries))
            sync.save(update_fields=["status", "last_error", "next_try_at", "updated_at"])
            return sync.status
        sync.status, sync.delivered_at, sync.last_error = GradeSync.Status.DELIVERED, timezone.now(), ""
        sync.next_try_at = None
        sync.save(update_fields=["status", "delivered_at", "last_error", "next_try_at", "updated_at"])
        return sync.status


def grade_syncs_due(*, limit: int = 500) -> list[tuple[int, int]]:
    """The sweeper's list, as (row, tries): results whose retry time (or a delivery's claim) passed a minute ago
    — their queued task was lost with a worker — or that were queued and never tried. Each is stamped as queued
    for a claim's length, so a queue that is minutes behind is not fed the same row every minute."""
    now = timezone.now()
    stale = now - dt.timedelta(minutes=1)
    with transaction.atomic():
        rows = list(GradeSync.objects.select_for_update(skip_locked=True).filter(
            Q(status__in=[GradeSync.Status.FAILED, GradeSync.Status.PENDING], next_try_at__lte=stale)
            | Q(status=GradeSync.Status.PENDING, next_try_at__isnull=True, updated_at__lte=stale))
            .order_by(F("next_try_at").asc(nulls_first=True)).values_list("pk", "tries")[:limit])
        GradeSync.objects.filter(pk__in=[pk for pk, _ in rows]).update(next_try_at=now + GRADE_SYNC_CLAIM)
    return rows


# --- real-time updates ------------------------------------------------------------------------------

def _proctor_update(attempt: Attempt) -> None:
    room_signal_publish(realtime.proctor_room(attempt.institution_id, attempt.exam_id), "attempt.status",
                        events.attempt_status(attempt))


def _student_update(attempt: Attempt) -> None:
    """The student's own room, stored and sequenced (resume). Called inside the writer's transaction."""
    room = realtime.attempt_room(attempt.institution_id, attempt.pk)
    room_event_record(room, room_next_seq(room), "attempt.status", events.attempt_status(attempt))


def _progress_update(attempt: Attempt, answered: int) -> None:
    """The proctor board's answered count, sent only when it changes (not on every save)."""
    room_signal_publish(realtime.proctor_room(attempt.institution_id, attempt.exam_id), "attempt.progress",
                        events.attempt_progress(attempt, answered))


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
