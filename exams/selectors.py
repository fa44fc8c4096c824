"""Reads and permission checks for exams, tenant-scoped through classrooms' one scoping rule."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from classrooms import selectors as classroom_selectors
from classrooms.models import Role, User
from config.sql import from_row, select_list
from exams.models import Answer, Attempt, Exam


def exams_for(user: User) -> QuerySet[Exam]:
    return Exam.objects.visible_to(user).select_related("course")


_OWN_ATTEMPT_SQL = """
SELECT a.* FROM exams_attempt a
WHERE a.id = %(attempt)s AND a.student_id = %(user)s AND (%(everywhere)s OR
      EXISTS (SELECT 1 FROM classrooms_membership m
               WHERE m.user_id = a.student_id AND m.institution_id = a.institution_id AND m.is_active) OR
      EXISTS (SELECT 1 FROM classrooms_enrollment e
               WHERE e.user_id = a.student_id AND e.institution_id = a.institution_id AND e.is_active))
"""


def own_attempt(user: User, attempt_id: int) -> Attempt | None:
    """The user's own attempt with its exam, or None (another student's or another school's attempt looks
    missing). The user's scope check is the one `institution_ids_for` makes for a student — an active
    membership or enrollment at the attempt's school — in the same statement: every attempt socket and page
    opens with this read (2,000 at once when an exam starts), in plain SQL rather than through the ORM."""
    if not user.is_authenticated or not user.is_active:
        return None
    params = {"attempt": attempt_id, "user": user.pk, "everywhere": bool(user.is_superuser)}
    attempt = next(iter(Attempt.objects.raw(_OWN_ATTEMPT_SQL, params)), None)
    if attempt is not None:
        attempt.exam = next(iter(Exam.objects.raw("SELECT * FROM exams_exam WHERE id = %s", [attempt.exam_id])))
    return attempt


def attempts_still_owned(pairs: list[tuple[int, int]]) -> set[int]:
    """For the periodic re-check of attempt sockets, in one query: which of these (attempt, student) pairs
    still hold — the student's account is active and still belongs to the attempt's school (an active
    membership or enrollment there: what `institution_ids_for` grants a student)."""
    from django.db.models import Exists, OuterRef

    from classrooms.models import Enrollment, Membership

    if not pairs:
        return set()
    at_school = {"user_id": OuterRef("student_id"), "institution_id": OuterRef("institution_id"), "is_active": True}
    rows = (Attempt.objects.filter(pk__in=[a for a, _ in pairs], student__is_active=True)
            .filter(Exists(Membership.objects.filter(**at_school)) | Exists(Enrollment.objects.filter(**at_school)))
            .values_list("pk", "student_id"))
    wanted = set(pairs)
    return {pk for pk, student_id in rows if (pk, student_id) in wanted}


def can_proctor(user: User, exam: Exam) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    ids = classroom_selectors.institution_ids_for(user)
    if ids is not None and exam.institution_id not in ids:
        return False
    return classroom_selectors.enrollment_role(user, exam.course) in {Role.TEACHER, Role.TA}


def student_exams(user: User) -> QuerySet[Exam]:
    return exams_for(user).filter(status=Exam.Status.PUBLISHED, course__enrollments__user=user,
                                  course__enrollments__role=Role.STUDENT, course__enrollments__is_active=True)


_STARTABLE_SQL = """
SELECT {columns} FROM exams_exam e JOIN classrooms_course c ON c.id = e.course_id
WHERE e.id = %(exam)s AND e.status = %(published)s AND e.institution_id = c.institution_id
  AND EXISTS (SELECT 1 FROM classrooms_enrollment n
              WHERE n.course_id = c.id AND n.user_id = %(user)s AND n.role = %(student)s AND n.is_active)
"""


def startable_exam(user: User, exam_id: int) -> Exam | None:
    """The exam behind a Start button: published, in a course the user is an active student of, in one
    plain statement (start stampede). The active enrollment is the tenant check: it ties the user to the
    course's institution, which is the exam's."""
    if not user.is_authenticated or not user.is_active:
        return None
    from django.db import connection

    params = {"exam": exam_id, "user": user.pk, "published": Exam.Status.PUBLISHED, "student": Role.STUDENT}
    with connection.cursor() as cur:
        cur.execute(_STARTABLE_SQL.format(columns=select_list(Exam, "e")), params)
        row = cur.fetchone()
    return from_row(Exam, row) if row else None


def attempt_answers(attempt: Attempt) -> dict[int, dict]:
    return {a.question_id: {"value": a.value, "version": a.version, "flagged": a.flagged,
                            "saved_at": a.saved_at.isoformat()}
            for a in Answer.objects.filter(attempt=attempt)}


def proctor_rows(exam: Exam) -> list[dict]:
    rows = (Attempt.objects.filter(exam=exam).select_related("student")
            .annotate(answered=Count("answers", filter=~Q(answers__value=None))).order_by("student__last_name"))
    return [{"attempt_id": a.pk, "student": {"id": a.student_id, "name": a.student.public_name},
             "state": a.state, "deadline": a.deadline.isoformat() if a.deadline else None,
             "answered": a.answered, "questions": len(a.layout), "extra_minutes": a.extra_minutes,
             "finish_reason": a.finish_reason} for a in rows]


def grading_queue(exam: Exam) -> QuerySet[Answer]:
    return (Answer.objects.filter(attempt__exam=exam, attempt__state=Attempt.State.SUBMITTED,
                                  question__kind="essay", points__isnull=True)
            .select_related("attempt__student", "question").order_by("attempt__finished_at"))
