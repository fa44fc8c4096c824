"""Pages and JSON for the shared whiteboard and notes after (and during) class: history versions, exports,
the per-student contribution summary, and the course images placed on boards (docs/collab.md).

Who: the session's participants (enrolled in its course) see history and export; its teachers and the school's
staff see contributions; teachers add images. Anything else is a 404, as for another school's session.
Every read of the class's work is a FERPA access to each contributing student's record (CollabContribution).
"""

from __future__ import annotations

import base64
import datetime as dt

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods

from classrooms import collab_services, selectors
from classrooms.collab_attribution import Counts, merge_counts
from classrooms.models import (
    CollabCheckpoint,
    CollabContribution,
    CollabDocument,
    CourseFile,
    LiveSession,
    Role,
    User,
)
from compliance import audit
from config.api import error_body

_TEACHING = {Role.TEACHER, Role.TA}
_COUNT_FIELDS = ("updates", "bytes", "elements_added", "elements_removed", "elements_edited", "chars_added",
                 "chars_removed", "first_at", "last_at")


def _session(request, session_id: int, *, staff: bool = False) -> tuple[LiveSession, str]:
    """(session, the viewer's role for the audit) or 404."""
    session = selectors.live_sessions_for(request.user).filter(pk=session_id).first()
    if session is None:
        raise Http404("No such session")
    role = selectors.enrollment_role(request.user, session.course)
    if staff:
        if role in _TEACHING:
            return session, role
        if selectors.is_school_staff(request.user, session.institution_id):
            return session, audit.request_role(request)
        raise Http404("No such session")
    if role is None and not selectors.is_school_staff(request.user, session.institution_id):
        raise Http404("No such session")
    return session, role or audit.request_role(request)


def _document(session: LiveSession, kind: str) -> CollabDocument:
    if kind not in CollabDocument.Kind.values:
        raise Http404("No such document")
    return collab_services.documents_ensure(session)[kind]


def _folded(document: CollabDocument) -> list[CollabContribution]:
    """Each person's share of the stored versions (checkpoints hold exactly what was folded into these)."""
    return list(CollabContribution.objects.filter(document=document))


def _writers(document: CollabDocument) -> list:
    """Everyone whose work is in the document now, folded or still in the log: what an export reads."""
    rows, counts = selectors.collab_work(document)
    return [*rows, *User.objects.filter(pk__in=[uid for uid in counts if uid not in {r.user_id for r in rows}])]


def _error(status: int, code: str, message: str) -> JsonResponse:
    # The one JSON error shape of Aula's APIs (config/api.py, docs/api.md).
    return JsonResponse(error_body(code, message, status_code=status), status=status)


@audit.reads("classrooms.CollabContribution")
@login_required
@require_GET
def collab_history(request, session_id: int, kind: str):
    session, role = _session(request, session_id)
    document = _document(session, kind)
    audit.record_request_access(request, _folded(document), purpose="collab.history", role=role)
    versions = [{"id": c.pk, "at": c.created_at.isoformat(), "bytes": c.size}
                for c in CollabCheckpoint.objects.filter(document=document).order_by("upto")
                .only("pk", "created_at", "size")]
    return JsonResponse({"versions": versions, "edited_at": document.edited_at.isoformat()
                         if document.edited_at else None})


@audit.reads("classrooms.CollabContribution")
@login_required
@require_GET
def collab_version(request, session_id: int, kind: str, version_id: int):
    session, role = _session(request, session_id)
    document = _document(session, kind)
    checkpoint = CollabCheckpoint.objects.filter(document=document, pk=version_id).first()
    if checkpoint is None:
        return _error(404, "not_found", "No such version.")
    audit.record_request_access(request, _folded(document), purpose="collab.history", role=role)
    return JsonResponse({"id": checkpoint.pk, "at": checkpoint.created_at.isoformat(),
                         "state": base64.b64encode(bytes(checkpoint.state)).decode("ascii")})


EXPORTS = {("board", "pdf"), ("board", "png"), ("notes", "pdf"), ("notes", "md")}


@audit.reads("classrooms.CollabContribution")
@login_required
@require_GET
def collab_export(request, session_id: int, kind: str, fmt: str):
    from classrooms import collab_export as export

    if (kind, fmt) not in EXPORTS:
        raise Http404("No such export")
    session, role = _session(request, session_id)
    document = _document(session, kind)
    state = selectors.collab_state(document)
    audit.record_request_access(request, _writers(document), purpose="collab.export", via="export", role=role)
    title = f"{session.title} · {session.course.code}"
    when = session.started_at or session.created_at
    subtitle = f"{'Whiteboard' if kind == 'board' else 'Notes'} · {when:%Y-%m-%d}"
    name = f"{slugify(session.course.code) or 'course'}-{session.pk}-{kind}"

    def load_image(src: str) -> bytes | None:
        return _course_image_bytes(session, src)

    if fmt == "pdf" and kind == "board":
        body, content_type = export.board_pdf(state, title=title, subtitle=subtitle, load_image=load_image), \
            "application/pdf"
    elif fmt == "png":
        body, content_type = export.board_png(state, page_id=request.GET.get("page") or None,
                                              load_image=load_image), "image/png"
    elif fmt == "pdf":
        body, content_type = export.notes_pdf(state, title=f"{title} — notes"), "application/pdf"
    else:
        body, content_type = export.notes_markdown(state).encode("utf-8"), "text/markdown; charset=utf-8"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@audit.reads("classrooms.CollabContribution")
@login_required
@require_GET
def collab_contributions(request, session_id: int):
    """Per student: what they drew and wrote in the session's board and notes (from authorship)."""
    session, role = _session(request, session_id, staff=True)
    people: dict[int, dict] = {}
    read = []
    for kind, document in collab_services.documents_ensure(session).items():
        # Read, not folded here: the log after the latest checkpoint is attributed in memory (a page view
        # writes nothing; the compactor folds it on its own schedule).
        rows, tail = selectors.collab_work(document)
        read += rows
        folded = {row.user_id: Counts(**{f: getattr(row, f) for f in _COUNT_FIELDS}) for row in rows}
        for user_id, total in merge_counts(folded, tail).items():
            people.setdefault(user_id, {"board": None, "notes": None})[kind] = total
    users = {u.pk: u for u in User.objects.filter(pk__in=list(people))}
    for user_id in list(people):
        if user_id not in users:
            del people[user_id]  # an account deleted since
        else:
            people[user_id]["user"] = users[user_id]
    read += [u for uid, u in users.items() if uid not in {r.user_id for r in read}]
    audit.record_request_access(request, read, purpose="collab.contributions", role=role)
    enrolled = dict(session.course.enrollments.filter(is_active=True).values_list("user_id", "role"))
    students = sorted((p for uid, p in people.items() if enrolled.get(uid) == Role.STUDENT),
                      key=lambda p: p["user"].public_name.lower())
    silent = (session.course.enrollments.filter(is_active=True, role=Role.STUDENT)
              .exclude(user_id__in=list(people)).select_related("user").order_by("user__last_name"))
    return render(request, "classrooms/collab_contributions.html", {
        "session": session, "students": students, "staff": [p for uid, p in people.items()
                                                            if enrolled.get(uid) in _TEACHING],
        "silent": [e.user for e in silent],
    })


# --- course images ------------------------------------------------------------------------------------------

def _asset_json(session: LiveSession, f: CourseFile) -> dict:
    return {"id": f.pk, "name": f.name, "url": f"/sessions/{session.pk}/collab/assets/{f.pk}/",
            "width": f.width, "height": f.height}


def _course_image_bytes(session: LiveSession, src: str) -> bytes | None:
    prefix = f"/sessions/{session.pk}/collab/assets/"
    if not src.startswith(prefix):
        return None
    try:
        file_id = int(src[len(prefix):].strip("/"))
    except ValueError:
        return None
    data = CourseFile.objects.filter(course_id=session.course_id, pk=file_id).values_list("data", flat=True).first()
    return bytes(data) if data is not None else None


@login_required
@require_http_methods(["GET", "POST"])
def collab_assets(request, session_id: int):
    session, _role = _session(request, session_id)
    if request.method == "POST":
        upload = request.FILES.get("file")
        if upload is None:
            return _error(400, "invalid", "Choose an image file.")
        if upload.size > 2 * settings.AULA_COURSE_FILE_MAX_BYTES:
            return _error(400, "invalid", "The image is too large.")
        try:
            f = collab_services.course_file_add(course=session.course, actor=request.user, name=upload.name,
                                                data=upload.read())
        except PermissionDenied as exc:
            return _error(403, "forbidden", str(exc))
        except ValidationError as exc:
            return _error(400, "invalid", "; ".join(exc.messages))
        return JsonResponse(_asset_json(session, f), status=201)
    files = CourseFile.objects.filter(course_id=session.course_id).only(
        "pk", "name", "width", "height", "created_at")[:200]
    return JsonResponse({"assets": [_asset_json(session, f) for f in files],
                         "can_upload": selectors.can_teach(request.user, session.course)})


@login_required
@require_GET
def collab_asset(request, session_id: int, asset_id: int):
    session, _role = _session(request, session_id)
    f = CourseFile.objects.filter(course_id=session.course_id, pk=asset_id).first()
    if f is None:
        raise Http404("No such image")
    response = HttpResponse(bytes(f.data), content_type=f.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=86400"
    response["Last-Modified"] = f.created_at.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    return response
