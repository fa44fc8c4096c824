"""LTI reads: Aula's published key set, the courses a teacher may link an LMS course to."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from classrooms.models import (
    Course,
    Enrollment,
    ExternalIdentity,
    LtiContext,
    LtiLaunch,
    LtiResourceLink,
    LtiToolKey,
    Role,
    User,
)


def jwks() -> dict:
    """Every key not yet retired: the signing key and those still inside their overlap."""
    now = timezone.now()
    keys = LtiToolKey.objects.filter(Q(retire_at__isnull=True) | Q(retire_at__gt=now)).values_list("public_jwk",
                                                                                                   flat=True)
    return {"keys": list(keys)}


def linkable_courses(user: User, context: LtiContext) -> QuerySet[Course]:
    """Active courses the user teaches in the platform's district."""
    taught = Enrollment.objects.filter(user=user, is_active=True, role__in=[Role.TEACHER, Role.TA]) \
        .values("course_id")
    return Course.objects.filter(pk__in=taught, is_active=True,
                                 institution__district_id=context.platform.district_id).select_related("institution")


def launched_as_teacher(user: User, context: LtiContext) -> bool:
    """The LMS said this person teaches this LMS course (a launch with a teacher's role reached Aula)."""
    return LtiLaunch.objects.filter(user=user, context=context, role__in=[Role.TEACHER, Role.TA]).exists()


def links_for_target(kind: str, target_id: int, course_id: int) -> QuerySet[LtiResourceLink]:
    """Placements of one Aula activity in LMS courses linked to its course, on active platforms."""
    return LtiResourceLink.objects.filter(target=kind, target_id=target_id, context__course_id=course_id,
                                          context__platform__is_active=True).select_related("context__platform")


def grade_link_for(kind: str, target_id: int, course_id: int, student_id: int) -> LtiResourceLink | None:
    """The placement whose grade column receives one student's result. Only platforms the student has an
    identity on (a user id there to grade). When the activity is placed in several LMS courses (one per
    section), the one the student launched from wins, then a placement that was launched at all, then the
    newest: a result never goes to another section's column while the student's own is known."""
    links = list(links_for_target(kind, target_id, course_id).order_by("-id"))
    if not links:
        return None
    graded_on = {(i, d) for i, d in ExternalIdentity.objects.filter(
        kind=ExternalIdentity.Kind.LTI, user_id=student_id,
        issuer__in={link.context.platform.issuer for link in links}).values_list("issuer", "district_id")}
    links = [link for link in links if (link.context.platform.issuer, link.context.platform.district_id) in graded_on]
    if not links:
        return None
    came_from = set(LtiLaunch.objects.filter(user_id=student_id, context_id__in={link.context_id for link in links})
                    .values_list("context_id", flat=True))
    links.sort(key=lambda link: (link.context_id not in came_from, not link.resource_link_id))  # stable: newest
    return links[0]
