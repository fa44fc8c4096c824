"""Exams observing classrooms: exams as LTI placement targets, and live-session quiz results for the LMS."""

from __future__ import annotations

from classrooms.lti_targets import Target


class ExamTargets:
    """Published exams: a launch lands on the exam's row in the exam list (Start / Resume there: starting is a
    POST, never a side effect of opening a link); the result is the LMS grade. The column is out of 100; each
    score carries the attempt's own maximum (drawn questions differ), which platforms scale (AGS 2.0)."""

    def _target(self, exam) -> Target:
        from django.urls import reverse

        detail = f"Exam · {exam.time_limit_minutes} min"
        if exam.opens_at:
            detail += f" · opens {exam.opens_at:%Y-%m-%d %H:%M} UTC"
        return Target("exam", exam.pk, exam.course_id, exam.title, f"{reverse('exam-list')}#exam-{exam.pk}", 100.0,
                      detail)

    def for_course(self, course_id: int) -> list[Target]:
        from exams.models import Exam

        return [self._target(e) for e in Exam.objects.filter(course_id=course_id, status=Exam.Status.PUBLISHED)
                .order_by("-id")[:200]]

    def get(self, target_id: int) -> Target | None:
        from exams.models import Exam

        exam = Exam.objects.filter(pk=target_id).first()
        return self._target(exam) if exam else None


def session_quiz_grades(sender, session_id: int, **kwargs) -> None:
    from exams.tasks import session_quiz_grades_send

    session_quiz_grades_send.apply_async(args=[session_id], queue="bulk", countdown=5)
