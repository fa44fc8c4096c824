"""Server-rendered pages for students and teachers (WebSocket widgets attach to these)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from classrooms import selectors


@login_required
def home(request):
    courses = selectors.courses_for(request.user).select_related("institution")
    sessions = (
        selectors.live_sessions_for(request.user)
        .filter(course__in=courses)
        .exclude(status="ended")
        .order_by("scheduled_start", "id")[:50]
    )
    return render(request, "classrooms/home.html", {"courses": courses, "sessions": sessions})


@login_required
def session_room(request, session_id: int):
    session = selectors.live_sessions_for(request.user).filter(pk=session_id).first()
    if session is None:
        raise Http404("No such session")  # another school's session is indistinguishable from none
    role = selectors.enrollment_role(request.user, session.course)
    if role is None:
        raise Http404("No such session")
    return render(request, "classrooms/session_room.html", {"session": session, "role": role})
