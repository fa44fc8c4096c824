"""The one COPPA gate: may Aula collect this user's personal information through this feature now?

A user under 13 (by `User.date_of_birth`) may use a feature in `PersonalInfoFeature` only while a parent's
verifiable consent that is not revoked covers it, or while the school's authorization covers it at a school
where the child is an active student. Pages, the REST API and the WebSocket consumers all ask
`can_collect_personal_info` (or `consent_block_reason`, for the words to show).

Cost: nothing for anyone 13 or older, or with no date of birth (an attribute of the loaded user). For a
child, two queries the first time, then the answer is kept on the user object: for the rest of a request,
or for a socket until its periodic re-check drops it (`forget_cover`), so a chat frame never pays a query.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from compliance.models import ParentalConsent, PersonalInfoFeature, SchoolAuthorization

_CACHE_ATTR = "_aula_coppa_cover"

CONSENT_REQUIRED = "consent_required"  # the WebSocket error code and the page's reason code

_WHY = {
    PersonalInfoFeature.CHAT: "Chat is off for you until a parent's consent is recorded by your school "
                              "(students under 13 need it, under the US COPPA rule).",
    PersonalInfoFeature.FREE_TEXT: "Written answers are off for you until a parent's consent is recorded by "
                                   "your school (students under 13 need it, under the US COPPA rule).",
    PersonalInfoFeature.COLLAB: "Drawing and writing on the shared board and notes are off for you until a "
                                "parent's consent is recorded by your school (students under 13 need it, under "
                                "the US COPPA rule).",
}


@dataclass(frozen=True)
class Cover:
    """What covers a child now: features a parent consented to, and per school the features it authorizes."""

    consented: frozenset[str]
    by_school: dict[int, frozenset[str]]


def consent_block_reason(user, feature: str, *, institution_id: int | None = None) -> str | None:
    """Why `user`'s personal information may not be collected through `feature` now, or None when it may.

    `institution_id` is the school where the collection happens (a live session's school): only that
    school's authorization counts. Without it, any of the child's schools' authorizations counts."""
    if feature not in PersonalInfoFeature.values:
        raise ValueError(f"{feature!r} is not a PersonalInfoFeature")
    if not getattr(user, "is_authenticated", False) or not user.is_under_13:
        return None
    cover = _cover(user)
    if feature in cover.consented:
        return None
    schools = cover.by_school.values() if institution_id is None else [cover.by_school.get(institution_id, ())]
    if any(feature in features for features in schools):
        return None
    return _WHY[feature]


def can_collect_personal_info(user, feature: str, *, institution_id: int | None = None) -> bool:
    return consent_block_reason(user, feature, institution_id=institution_id) is None


def forget_cover(user) -> None:
    """Drop the kept answer (a socket's periodic re-check), so a revoked consent takes effect."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def _cover(user) -> Cover:
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    now = timezone.now()
    today = timezone.localdate()
    consented: set[str] = set()
    for scope in ParentalConsent.objects.filter(student=user, revoked_at__isnull=True, given_at__lte=now) \
            .values_list("scope", flat=True):
        consented.update(scope or ())
    by_school: dict[int, set[str]] = {}
    authorizations = (
        SchoolAuthorization.objects
        .filter(revoked_at__isnull=True, authorized_on__lte=today)
        .filter(Q(expires_on__isnull=True) | Q(expires_on__gte=today))
        .filter(Q(institution_id__in=_student_memberships(user).values("institution_id"))
                | Q(institution_id__in=_student_enrollments(user).values("institution_id")))
        .values_list("institution_id", "scope")
    )
    for institution_id, scope in authorizations:
        by_school.setdefault(institution_id, set()).update(scope or ())
    cover = Cover(frozenset(consented), {k: frozenset(v) for k, v in by_school.items()})
    setattr(user, _CACHE_ATTR, cover)
    return cover


def _student_memberships(user):
    from classrooms.models import Membership, Role

    return Membership.objects.filter(user=user, role=Role.STUDENT, is_active=True)


def _student_enrollments(user):
    from classrooms.models import Enrollment, Role

    return Enrollment.objects.filter(user=user, role=Role.STUDENT, is_active=True)


def consents_for(student) -> list[ParentalConsent]:
    """A child's consent records, newest first (the guardian page and the admin)."""
    return list(ParentalConsent.objects.filter(student=student).select_related("institution"))
