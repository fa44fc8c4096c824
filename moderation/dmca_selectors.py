"""DMCA reads and permission checks: who sees a case, who may answer or manage it, strikes and the timeline.

Platform staff for DMCA are superusers and staff accounts granted the moderation DMCA permissions (a trust &
safety group): `is_staff` alone is not enough, because school administrators are staff too.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet
from django.utils import timezone

from moderation.models import AuditEntry, DmcaCase, DmcaStrike


def _staff_with(user, perm: str) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or (user.is_staff and user.has_perm(perm))


def is_dmca_staff(user) -> bool:
    return _staff_with(user, "moderation.view_dmcacase")


def can_manage_cases(user) -> bool:
    """Record a court action (and any other staff step of a case)."""
    return _staff_with(user, "moderation.change_dmcacase")


def is_uploader(user, case: DmcaCase) -> bool:
    # An account terminated under the repeat-infringer policy can no longer sign in, so it answers nothing.
    return bool(user is not None and user.is_authenticated and user.is_active and case.uploader_id == user.pk)


def can_view_case(user, case: DmcaCase) -> bool:
    return is_dmca_staff(user) or is_uploader(user, case)


def can_counter_notice(user, case: DmcaCase) -> bool:
    return is_uploader(user, case) and case.status == DmcaCase.Status.DISABLED


def case_for(user, case_id: int) -> DmcaCase | None:
    """The case when this person may see it, else None (the page answers 404: not even its existence shows)."""
    case = (DmcaCase.objects.select_related("uploader", "channel", "court_action_by")
            .filter(pk=case_id).first())
    return case if case is not None and can_view_case(user, case) else None


def cases_of_uploader(user) -> QuerySet[DmcaCase]:
    if user is None or not user.is_authenticated:
        return DmcaCase.objects.none()
    return DmcaCase.objects.filter(uploader=user).order_by("-created_at")


def active_strikes(user_id: int, *, now: dt.datetime | None = None) -> QuerySet[DmcaStrike]:
    now = now or timezone.now()
    return DmcaStrike.objects.filter(user_id=user_id, removed_at__isnull=True, expires_at__gt=now)


def active_strike_count(user_id: int, *, now: dt.datetime | None = None) -> int:
    return active_strikes(user_id, now=now).count()


def case_timeline(case: DmcaCase) -> list[AuditEntry]:
    """Every audited step of the case, oldest first (from its ledger)."""
    return list(AuditEntry.objects.filter(ledger=case.ledger, stage="dmca", target_type="dmca_case",
                                          target_id=str(case.pk)).order_by("index"))


def restore_countdown(case: DmcaCase) -> dt.datetime | None:
    """The moment the material comes back, while that is still pending."""
    return case.restore_not_before if case.status == DmcaCase.Status.COUNTER else None
