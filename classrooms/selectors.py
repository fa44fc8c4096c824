"""Reads and permission checks for identity, tenancy and courses — the single tenant-scoping mechanism.

`institution_ids_for(user)` decides which institutions a user may see; every tenant-scoped queryset goes
through `TenantQuerySet.visible_to(user)`, which calls it. Pages, admin, API and consumers use these.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet

from classrooms.models import (  # noqa: I001
    Course,
    District,
    DistrictRole,
    Enrollment,
    Guardianship,
    Institution,
    LiveSession,
    Membership,
    Role,
    User,
)

_CACHE_ATTR = "_aula_institution_ids"


def institution_ids_for(user: User | AnonymousUser | None) -> frozenset[int] | None:
    """Institutions whose rows `user` may read. None means every institution (platform superuser).

    Cached on the user object for the life of a request or a socket connection check.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return None
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    ids = set(Membership.objects.filter(user=user, is_active=True).values_list("institution_id", flat=True))
    ids |= set(Enrollment.objects.filter(user=user, is_active=True).values_list("institution_id", flat=True))
    ids |= set(Guardianship.objects.filter(guardian=user).values_list("institution_id", flat=True))
    district_ids = DistrictRole.objects.filter(user=user).values_list("district_id", flat=True)
    ids |= set(Institution.objects.filter(district_id__in=district_ids).values_list("id", flat=True))
    result = frozenset(ids)
    setattr(user, _CACHE_ATTR, result)
    return result


def forget_scope(user: User) -> None:
    """Drop the cached scope, e.g. before a socket re-checks its user's access."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def staff_institution_ids(user: User) -> frozenset[int] | None:
    """Institutions the user administers in the Django admin (school staff, district admins)."""
    if user.is_superuser:
        return None
    ids = set(Membership.objects.filter(user=user, role=Role.STAFF, is_active=True)
              .values_list("institution_id", flat=True))
    district_ids = DistrictRole.objects.filter(user=user).values_list("district_id", flat=True)
    ids |= set(Institution.objects.filter(district_id__in=district_ids).values_list("id", flat=True))
    return frozenset(ids)


def districts_visible_to(user: User) -> QuerySet[District]:
    ids = institution_ids_for(user)
    if ids is None:
        return District.objects.all()
    return District.objects.filter(institutions__id__in=ids).distinct()


def users_visible_to(user: User) -> QuerySet[User]:
    """People connected to an institution the viewer may see (by membership, enrollment or guardianship)."""
    ids = institution_ids_for(user)
    if ids is None:
        return User.objects.all()
    subquery = (
        Q(memberships__institution_id__in=ids)
        | Q(enrollments__institution_id__in=ids)
        | Q(guardians__institution_id__in=ids)
        | Q(wards__institution_id__in=ids)
        | Q(pk=user.pk)
    )
    return User.objects.filter(pk__in=User.objects.filter(subquery).values("pk"))


def users_in_district(district: District) -> QuerySet[User]:
    inst = Institution.objects.filter(district=district).values("pk")
    return User.objects.filter(
        pk__in=User.objects.filter(
            Q(memberships__institution_id__in=inst) | Q(enrollments__institution_id__in=inst)
        ).values("pk")
    )


def courses_for(user: User) -> QuerySet[Course]:
    """Courses the user takes or teaches (a student's and a teacher's home page)."""
    return Course.objects.visible_to(user).filter(
        enrollments__user=user, enrollments__is_active=True
    ).distinct()


def enrollment_role(user: User, course: Course) -> str | None:
    if not user.is_authenticated:
        return None
    return (
        Enrollment.objects.filter(user=user, course=course, is_active=True)
        .values_list("role", flat=True)
        .first()
    )


def live_sessions_for(user: User) -> QuerySet[LiveSession]:
    return LiveSession.objects.visible_to(user).select_related("course", "institution")


def can_join_session(user: User, session: LiveSession) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    ids = institution_ids_for(user)
    if ids is not None and session.institution_id not in ids:
        return False
    return enrollment_role(user, session.course) is not None


def can_teach(user: User, course: Course) -> bool:
    return enrollment_role(user, course) in {Role.TEACHER, Role.TA}


def is_school_staff(user: User, institution_id: int) -> bool:
    ids = staff_institution_ids(user)
    return ids is None or institution_id in ids


def scoped_to(queryset: QuerySet, ids: frozenset[int] | None) -> QuerySet:
    """Restrict a TenantQuerySet to institution ids (None: no restriction, platform superuser)."""
    if ids is None:
        return queryset
    return queryset.filter(**{f"{queryset.tenant_field}__in": ids})


def scoped(queryset: QuerySet, user) -> QuerySet:
    """Apply a user's tenant scope to any TenantQuerySet."""
    return scoped_to(queryset, institution_ids_for(user))


# --- live sessions: permissions and state --------------------------------------------------------------

def can_moderate(user: User, session: LiveSession) -> bool:
    """Teachers and TAs of the session's course (re-checked on every privileged action)."""
    if not user.is_authenticated or not user.is_active:
        return False
    ids = institution_ids_for(user)
    if ids is not None and session.institution_id not in ids:
        return False
    return enrollment_role(user, session.course) in {Role.TEACHER, Role.TA}


def participant_state(session: LiveSession, user: User):
    from classrooms.models import ParticipantState

    return ParticipantState.objects.filter(session=session, user=user).first()


def session_control(session: LiveSession):
    from classrooms.models import SessionControl

    return SessionControl.objects.filter(session=session).first()


def feature_block_reason(session: LiveSession, user: User, feature: str) -> str | None:
    """Why `user` may not use `feature` now, or None. Teachers and TAs are never blocked."""
    if session.status == LiveSession.Status.ENDED:
        return "The session has ended."
    role = enrollment_role(user, session.course)
    if role is None:
        return "You are not in this class."
    if role in {Role.TEACHER, Role.TA}:
        return None
    state = participant_state(session, user)
    if state is not None and state.removed_at is not None:
        return "You were removed from this session."
    control = session_control(session)
    if control is not None and feature in control.locked_features:
        return f"The teacher has turned off {feature} for the class."
    if state is not None and feature in state.locked_features:
        return f"The teacher has turned off {feature} for you."
    return None


def is_removed(session: LiveSession, user: User) -> bool:
    state = participant_state(session, user)
    return state is not None and state.removed_at is not None


def hand_queue(session: LiveSession):
    from classrooms.models import HandRaise

    return list(HandRaise.objects.filter(session=session, lowered_at__isnull=True)
                .select_related("user").order_by("raised_at", "id"))


def recent_chat(session: LiveSession, limit: int = 100):
    from classrooms.models import ChatMessage

    rows = (ChatMessage.objects.filter(session=session, deleted_at__isnull=True)
            .select_related("author").order_by("-seq")[:limit])
    return list(reversed(rows))


def poll_answers_for_results(poll) -> list[tuple[list[int], str]]:
    from classrooms.models import PollAnswer

    return [(a["option_positions"], a["text"]) for a in
            PollAnswer.objects.filter(poll=poll).values("option_positions", "text")]
