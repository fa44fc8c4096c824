"""LTI reads: Aula's published key set, the courses a teacher may link an LMS course to."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from classrooms.models import Course, Enrollment, LtiContext, LtiLaunch, LtiToolKey, Role, User


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
