"""Server-rendered pages for students and teachers (WebSocket widgets attach to these) and attendance."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods

from classrooms import selectors, services
from classrooms.models import AttendanceRecord, Feature, LiveSession, Role
from compliance import audit
from compliance.coppa import selectors as coppa
from compliance.models import PersonalInfoFeature
from config.exports import csv_response, csv_safe  # noqa: F401  (csv_safe: the one CSV cell rule, re-exported)

IDLE_AFTER_SECONDS = 180  # no keyboard, mouse or touch input for this long: the page reports "idle"
_TEACHING_ROLES = {Role.TEACHER, Role.TA}


@login_required
def home(request):
    courses = selectors.courses_for(request.user).select_related("institution")
    teaching_ids = set(
        courses.filter(enrollments__user=request.user, enrollments__is_active=True,
                       enrollments__role__in=_TEACHING_ROLES).values_list("id", flat=True))
    staff_ids = selectors.staff_institution_ids(request.user)
    sessions = (
        selectors.live_sessions_for(request.user)
        .filter(course__in=courses)
        .exclude(status=LiveSession.Status.ENDED)
        .order_by("scheduled_start", "id")[:50]
    )
    # Ended sessions whose attendance this user may see: courses they teach, schools they administer.
    past = selectors.live_sessions_for(request.user).filter(status=LiveSession.Status.ENDED)
    if staff_ids is not None:  # None: platform superuser, every school
        past = past.filter(Q(course_id__in=teaching_ids) | Q(institution_id__in=staff_ids))
    past = past.order_by("-ended_at", "-id")[:20]
    return render(request, "classrooms/home.html", {
        "courses": courses, "sessions": sessions, "teaching_ids": teaching_ids, "past_sessions": past,
    })


@login_required
def session_room(request, session_id: int):
    session = selectors.live_sessions_for(request.user).filter(pk=session_id).first()
    if session is None:
        raise Http404("No such session")  # another school's session is indistinguishable from none
    role = selectors.enrollment_role(request.user, session.course)
    if role is None:
        raise Http404("No such session")
    closed_reason = ""
    if session.status == LiveSession.Status.ENDED:
        closed_reason = "ended"
    elif selectors.is_removed(session, request.user):
        closed_reason = "removed"
    # COPPA: what this student may not use here, and why (the socket refuses the same with consent_required).
    consent_blocks = [reason for reason in (
        coppa.consent_block_reason(request.user, feature, institution_id=session.institution_id)
        for feature in PersonalInfoFeature.values) if reason]
    return render(request, "classrooms/session_room.html", {
        "session": session,
        "role": role,
        "consent_blocks": consent_blocks,
        # Only decides which panels render: the socket re-checks every privileged action.
        "can_moderate": role in _TEACHING_ROLES,
        "joinable": not closed_reason,
        "closed_reason": closed_reason,
        "chat_max": services.CHAT_MAX_CHARS,
        "idle_seconds": IDLE_AFTER_SECONDS,
        "features": Feature.choices,
    })


# --- attendance --------------------------------------------------------------------------------------------

def _attendance_session(request, session_id: int) -> LiveSession:
    """The session, if the user teaches its course or is staff of its school; otherwise 404 (never 403,
    so a session of another school is indistinguishable from none)."""
    session = selectors.live_sessions_for(request.user).filter(pk=session_id).first()
    if session is None:
        raise Http404("No such session")
    if not (selectors.can_moderate(request.user, session)
            or selectors.is_school_staff(request.user, session.institution_id)):
        raise Http404("No such session")
    return session


def _attendance_records(request, session: LiveSession) -> list[AttendanceRecord]:
    records = (AttendanceRecord.objects.visible_to(request.user).filter(session=session)
               .select_related("user"))
    return sorted(records, key=lambda r: (r.user.public_name.casefold(), r.user_id))


def _viewer_role(request, session: LiveSession) -> str:
    role = selectors.enrollment_role(request.user, session.course)
    return role if role in _TEACHING_ROLES else audit.request_role(request)


def _minutes(seconds: int) -> float:
    return round((seconds or 0) / 60, 1)


@audit.reads("classrooms.AttendanceRecord")
@login_required
@require_http_methods(["GET", "POST"])
def session_attendance(request, session_id: int):
    session = _attendance_session(request, session_id)
    if request.method == "POST":
        records = services.attendance_compute(session=session, actor=request.user)
        messages.success(request, f"Attendance recomputed for {len(records)} student(s).")
        return redirect("session-attendance", session_id=session.pk)
    records = _attendance_records(request, session)
    audit.record_request_access(request, records, purpose="attendance.view", role=_viewer_role(request, session))
    rows = [{"record": r, "present_minutes": _minutes(r.present_seconds),
             "active_minutes": _minutes(r.active_seconds), "idle_minutes": _minutes(r.idle_seconds)}
            for r in records]
    summary = [(value, label, sum(1 for r in records if r.status == value))
               for value, label in AttendanceRecord.Status.choices]
    return render(request, "classrooms/attendance.html", {
        "session": session, "rows": rows, "summary": summary,
        "timezone": session.institution.timezone or "UTC",
        "can_join": selectors.enrollment_role(request.user, session.course) is not None,
    })


CSV_COLUMNS = [
    "student", "username", "status", "first_join", "last_leave", "present_minutes", "active_minutes",
    "idle_minutes", "reconnects", "chat_messages", "poll_answers", "hand_raises", "engagement_score",
]


@audit.reads("classrooms.AttendanceRecord")
@login_required
@require_GET
def session_attendance_csv(request, session_id: int):
    session = _attendance_session(request, session_id)
    tz = ZoneInfo(session.institution.timezone or "UTC")

    def when(value):
        return timezone.localtime(value, tz).isoformat(timespec="seconds") if value else ""

    filename = f"attendance-{slugify(session.course.code) or 'course'}-{session.pk}.csv"
    response, writer = csv_response(filename, CSV_COLUMNS)
    records = _attendance_records(request, session)
    audit.record_request_access(request, records, purpose="attendance.export", via="export",
                                role=_viewer_role(request, session))
    for r in records:
        writer.writerow([
            r.user.public_name, r.user.username, r.status, when(r.first_join), when(r.last_leave),
            _minutes(r.present_seconds), _minutes(r.active_seconds), _minutes(r.idle_seconds), r.reconnects,
            r.chat_messages, r.poll_answers, r.hand_raises, f"{r.engagement_score:.3f}"])
    return response


@login_required
@require_http_methods(["GET", "POST"])
def profile(request):
    """The name others see in classes and streams (screened by moderation)."""
    error = ""
    # A chosen name is free text: for a child under 13 it waits for the same consent as free-text answers.
    blocked = coppa.consent_block_reason(request.user, PersonalInfoFeature.FREE_TEXT)
    if request.method == "POST" and blocked:
        error = blocked
    elif request.method == "POST":
        try:
            services.display_name_set(user=request.user, name=request.POST.get("display_name", ""))
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            return redirect("profile")
    return render(request, "classrooms/profile.html", {"error": error, "max": services.DISPLAY_NAME_MAX,
                                                       "value": request.POST.get("display_name", "")
                                                       or request.user.display_name}, status=400 if error else 200)
