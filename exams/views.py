"""Server-rendered exam pages: a student's exams, attempt and result; a teacher's proctor board, grading
queue and integrity-log export.

The attempt page and the proctor board are shells that one WebSocket each brings to life
(static/aula/exam_attempt.js, static/aula/exam_proctor.js). Every write goes through exams.services;
a page that is not yours (another student's attempt, another school's exam, a course you do not teach)
is a 404, never a 403, so it cannot be told apart from one that does not exist.
"""

from __future__ import annotations

import logging

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import Http404, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classrooms.models import Enrollment, Role
from classrooms.selectors import enrollment_role
from compliance import audit
from exams import events, selectors, services
from exams.models import Answer, Attempt, Exam, GradeSync, IntegrityEvent, Question

logger = logging.getLogger("aula.exams")

_TEACHING_ROLES = (Role.TEACHER, Role.TA)
_FINISHED = (Attempt.State.SUBMITTED, Attempt.State.ABANDONED)


# --- students ----------------------------------------------------------------------------------------------

def _teaching_exams(user):
    """Exams of the courses the user teaches or assists in (any status: teachers see drafts too)."""
    return (selectors.exams_for(user)
            .filter(course__enrollments__user=user, course__enrollments__role__in=_TEACHING_ROLES,
                    course__enrollments__is_active=True)
            .distinct().order_by("-opens_at", "-id"))


def _student_row(exam: Exam, attempts: list[Attempt], user, now) -> dict:
    close = services.effective_close(exam, user)
    if exam.opens_at and now < exam.opens_at:
        window = "upcoming"
    elif close and now >= close:
        window = "closed"
    else:
        window = "open"
    running = next((a for a in attempts if a.is_open), None)
    used = sum(1 for a in attempts if a.state != Attempt.State.NOT_STARTED)
    finished = [a for a in attempts if a.state == Attempt.State.SUBMITTED]
    return {
        "exam": exam, "window": window, "close": close, "running": running, "used": used,
        "can_start": window == "open" and running is None and used < exam.attempts_allowed,
        "result": finished[-1] if finished and exam.grades_released_at else None,
        "last_finished": finished[-1] if finished else None,
    }


@login_required
@require_GET
def exam_list(request):
    now = timezone.now()
    exams = list(selectors.student_exams(request.user).order_by("opens_at", "id"))
    by_exam: dict[int, list[Attempt]] = {}
    for attempt in Attempt.objects.filter(student=request.user, exam__in=exams).order_by("number"):
        by_exam.setdefault(attempt.exam_id, []).append(attempt)
    rows = [_student_row(exam, by_exam.get(exam.pk, []), request.user, now) for exam in exams]
    return render(request, "exams/list.html", {"rows": rows, "teaching": list(_teaching_exams(request.user))})


@login_required
@require_POST
def exam_start(request, exam_id: int):
    exam = selectors.startable_exam(request.user, exam_id)
    if exam is None:
        raise Http404("No such exam")
    try:
        attempt = services.attempt_start(exam=exam, student=request.user)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, "; ".join(getattr(exc, "messages", None) or [str(exc)]))
        return redirect("exam-list")
    return redirect("attempt", attempt_id=attempt.pk)


def _own_attempt(request, attempt_id: int) -> Attempt:
    attempt = selectors.own_attempt(request.user, attempt_id)
    if attempt is None:
        logger.warning("attempt page refused: not the user's attempt user=%s", request.user.pk)
        raise Http404("No such attempt")
    return attempt


def _attempt_content(attempt: Attempt) -> dict:
    questions = {q.pk: q for q in Question.objects.filter(pk__in=[i["question"] for i in attempt.layout])}
    return {
        "attempt": events.attempt_status(attempt),
        "exam": {"id": attempt.exam_id, "title": attempt.exam.title, "sequential": attempt.exam.sequential,
                 "instructions": attempt.exam.instructions},
        "questions": [events.question_for_student(questions[i["question"]], i) for i in attempt.layout],
        "answers": {str(k): v for k, v in selectors.attempt_answers(attempt).items()},
    }


@login_required
@require_GET
@never_cache  # exam content and answers: not kept in a shared browser's cache
def attempt_page(request, attempt_id: int):
    attempt = services.attempt_touch(_own_attempt(request, attempt_id))  # finalisation on touch, as the socket
    config = {
        "attempt_id": attempt.pk,
        "state": attempt.state,
        "csrf": get_token(request),
        # The same content as the socket's snapshot, so the page renders at once and still works over the
        # HTTP fallback when the socket cannot connect at all. The snapshot then refreshes the answers.
        "initial": _attempt_content(attempt) if attempt.is_open else None,
        "ws_path": f"/ws/v1/attempts/{attempt.pk}/",
        "api": {"clock": reverse("api-attempt", args=[attempt.pk]),
                "answer": reverse("api-attempt-answer", args=[attempt.pk]),
                "submit": reverse("api-attempt-submit", args=[attempt.pk])},
        "result_url": reverse("attempt-result", args=[attempt.pk]),
    }
    return render(request, "exams/attempt.html", {
        "attempt": attempt, "exam": attempt.exam, "config": config,
        "finished": attempt.state in _FINISHED,
    })


def _answer_text(question: Question, item: dict, value) -> str:
    """A stored answer in the words the student saw (option labels, not indexes)."""
    if value in (None, "", []):
        return ""
    if question.kind in (Question.Kind.SINGLE, Question.Kind.MULTIPLE):
        order = item.get("options") or list(range(len(question.options)))
        chosen = set(value)
        return "; ".join(question.options[i] for i in order if i in chosen)
    if question.kind == Question.Kind.TRUE_FALSE:
        return "True" if value else "False"
    return str(value)


@login_required
@require_GET
@never_cache  # exam content and answers: not kept in a shared browser's cache
def attempt_result(request, attempt_id: int):
    attempt = _own_attempt(request, attempt_id)
    exam = attempt.exam
    released = exam.grades_released_at is not None and attempt.state == Attempt.State.SUBMITTED
    graded = released and attempt.graded_at is not None
    review = []
    if graded and exam.show_review:
        questions = {q.pk: q for q in Question.objects.filter(pk__in=[i["question"] for i in attempt.layout])}
        answers = {a.question_id: a for a in Answer.objects.filter(attempt=attempt)}
        for n, item in enumerate(attempt.layout, start=1):
            q, a = questions[item["question"]], answers.get(item["question"])
            review.append({"n": n, "question": q, "answer": _answer_text(q, item, a.value if a else None),
                           "points": a.points if a else 0, "feedback": a.feedback if a else ""})
    return render(request, "exams/result.html", {
        "attempt": attempt, "exam": exam, "released": released, "graded": graded, "review": review,
        "finished": attempt.state in _FINISHED,
    })


# --- teachers ----------------------------------------------------------------------------------------------

def _proctored_exam(request, exam_id: int) -> Exam:
    exam = selectors.exams_for(request.user).filter(pk=exam_id).first()
    if exam is None or not selectors.can_proctor(request.user, exam):
        raise Http404("No such exam")
    return exam


@audit.reads("classrooms.Enrollment")
@login_required
@require_GET
def exam_proctor(request, exam_id: int):
    exam = _proctored_exam(request, exam_id)
    students = list(Enrollment.objects.filter(course=exam.course, role=Role.STUDENT, is_active=True)
                    .select_related("user").order_by("user__last_name", "user__first_name", "user_id"))
    audit.record_request_access(request, students, purpose="exam.proctor_roster",
                                role=enrollment_role(request.user, exam.course_id))
    config = {
        "exam_id": exam.pk,
        "ws_path": f"/ws/v1/exams/{exam.pk}/proctor/",
        "students": [{"id": e.user_id, "name": e.user.public_name} for e in students],
        "log_url": reverse("attempt-log", args=[0]),
    }
    return render(request, "exams/proctor.html", {"exam": exam, "config": config})


class GradeForm(forms.Form):
    answer_id = forms.IntegerField(widget=forms.HiddenInput)
    points = forms.DecimalField(min_value=0, max_digits=7, decimal_places=2)
    feedback = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)


@audit.reads("exams.Answer", "exams.Attempt")
@login_required
@require_http_methods(["GET", "POST"])
def exam_grading(request, exam_id: int):
    exam = _proctored_exam(request, exam_id)
    if request.method == "POST":
        form = GradeForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Enter the points (a number from 0) and at most 2000 characters "
                                    "of feedback.")
            return redirect("exam-grading", exam_id=exam.pk)
        answer = Answer.objects.filter(pk=form.cleaned_data["answer_id"], attempt__exam=exam).first()
        if answer is None:
            raise Http404("No such answer")
        try:
            services.grade_manual(answer_id=answer.pk, grader=request.user,
                                  points=form.cleaned_data["points"], feedback=form.cleaned_data["feedback"])
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, "; ".join(getattr(exc, "messages", None) or [str(exc)]))
        else:
            messages.success(request, "Grade saved.")
        return redirect("exam-grading", exam_id=exam.pk)
    queue = list(selectors.grading_queue(exam))
    attempts = list(Attempt.objects.filter(exam=exam).exclude(state=Attempt.State.NOT_STARTED)
                    .select_related("student").order_by("student__last_name", "student__first_name", "number"))
    syncs = {s.attempt_id: s for s in GradeSync.objects.filter(attempt__in=attempts)}
    for a in attempts:  # each result's delivery to the LMS gradebook, as the teacher sees it
        a.grade_sync_row = syncs.get(a.pk)
    audit.record_request_access(request, [*queue, *attempts], purpose="exam.gradebook",
                                role=enrollment_role(request.user, exam.course_id))
    counts = Attempt.objects.filter(exam=exam).aggregate(
        submitted=Count("pk", filter=Q(state=Attempt.State.SUBMITTED)),
        graded=Count("pk", filter=Q(state=Attempt.State.SUBMITTED, graded_at__isnull=False)),
        running=Count("pk", filter=Q(state__in=[Attempt.State.IN_PROGRESS, Attempt.State.OVERDUE])))
    return render(request, "exams/grading.html", {"exam": exam, "queue": queue, "attempts": attempts,
                                                   "counts": counts})


@login_required
@require_POST
def exam_release(request, exam_id: int):
    exam = _proctored_exam(request, exam_id)
    try:
        released = services.grades_release(exam=exam, actor=request.user)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Grades released: {released} graded attempt(s) can now be seen by "
                                  "their students.")
    return redirect("exam-grading", exam_id=exam.pk)


def _iso(value) -> str | None:
    return value.isoformat() if value else None


@audit.reads("exams.Attempt")
@login_required
@require_GET
def attempt_log(request, attempt_id: int):
    attempt = (Attempt.objects.visible_to(request.user).select_related("exam__course", "student")
               .filter(pk=attempt_id).first())
    if attempt is None or not selectors.can_proctor(request.user, attempt.exam):
        raise Http404("No such attempt")
    intact, first_bad = services.integrity_verify(attempt)
    audit.record_request_access(request, [attempt], purpose="exam.integrity_log_export", via="export",
                                role=enrollment_role(request.user, attempt.exam.course_id))
    entries = [{"index": e.index, "kind": e.kind, "server_time": _iso(e.server_time),
                "client_time": _iso(e.client_time), "data": e.data, "prev_hash": e.prev_hash, "hash": e.hash}
               for e in IntegrityEvent.objects.filter(attempt=attempt).order_by("index")]
    body = {
        "attempt": {"id": attempt.pk, "exam": {"id": attempt.exam_id, "title": attempt.exam.title},
                    "student": {"id": attempt.student_id, "name": attempt.student.public_name},
                    "number": attempt.number, "state": attempt.state, "started_at": _iso(attempt.started_at),
                    "deadline": _iso(attempt.deadline), "finished_at": _iso(attempt.finished_at),
                    "finish_reason": attempt.finish_reason, "log_head": attempt.log_head,
                    "log_count": attempt.log_count},
        "verification": {"intact": intact, "first_bad_index": first_bad,
                         "checked_at": timezone.now().isoformat()},
        "entries": entries,
    }
    response = JsonResponse(body, json_dumps_params={"indent": 1})
    response["Content-Disposition"] = f'attachment; filename="attempt-{attempt.pk}-log.json"'
    response["Cache-Control"] = "no-store"  # a student record
    return response
