"""COPPA writes: consent and school authorization records, revocation, deletion of a child's personal
information everywhere it lives, and the retention purge. Each is atomic and audited.

Who may act: school staff for their own school (the admin), a verified guardian for their own child (the
guardian page: revoke consent, ask for deletion), and the system (None: the retention task).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from classrooms import selectors as classroom_selectors
from classrooms.models import Guardianship, Institution, User
from compliance.models import (
    ChildDataDeletion,
    ParentalConsent,
    PersonalInfoFeature,
    RetentionRun,
    SchoolAuthorization,
)

logger = logging.getLogger("aula.compliance")


def subject_token(user_id: int) -> str:
    """A keyed hash of a user id: lets a deletion record be matched to a later question ("was child 123
    deleted?") by someone holding the key, without storing who the child was."""
    key = settings.AULA_COPPA_TOKEN_KEY.encode()
    return hmac.new(key, f"aula-user:{user_id}".encode(), hashlib.sha256).hexdigest()


# --- who may act ---------------------------------------------------------------------------------------

def _connected_to(student: User, institution_id: int) -> bool:
    from classrooms.models import Enrollment, Membership

    return (Membership.objects.filter(user=student, institution_id=institution_id).exists()
            or Enrollment.objects.filter(user=student, institution_id=institution_id).exists()
            or Guardianship.objects.filter(student=student, institution_id=institution_id).exists())


def _require_staff_for(actor: User | None, institution_id: int, student: User | None = None) -> None:
    if actor is None:
        return
    if not classroom_selectors.is_school_staff(actor, institution_id):
        raise PermissionDenied("Only staff of this school can do that.")
    if student is not None and not _connected_to(student, institution_id):
        raise ValidationError("That student is not at this school.")


def verified_guardianship(guardian: User, student: User) -> Guardianship | None:
    """The school-verified link between a guardian and a child (only verified guardians act for a child)."""
    return (Guardianship.objects.filter(guardian=guardian, student=student, verified_at__isnull=False)
            .select_related("institution").first())


def _require_staff_or_guardian(actor: User, institution_id: int, student: User) -> None:
    if verified_guardianship(actor, student) is not None:
        return
    _require_staff_for(actor, institution_id, student)


def _clean_scope(scope) -> list[str]:
    scope = sorted(set(scope or ()))
    unknown = [f for f in scope if f not in PersonalInfoFeature.values]
    if unknown or not scope:
        raise ValidationError({"scope": f"Choose one or more of {', '.join(PersonalInfoFeature.values)}."})
    return scope


# --- consent and authorization ---------------------------------------------------------------------------

def consent_record(*, student: User, institution: Institution, guardian_name: str, method: str,
                   evidence_reference: str, scope: list[str], third_party_disclosure: bool = False,
                   given_at: dt.datetime | None = None, guardian: User | None = None,
                   actor: User | None) -> ParentalConsent:
    """Record a parent's verifiable consent (school staff, after checking it by one of the FTC's methods)."""
    _require_staff_for(actor, institution.pk, student)
    consent = ParentalConsent(
        institution=institution, student=student, guardian=guardian, guardian_name=guardian_name.strip(),
        method=method, evidence_reference=evidence_reference.strip(), scope=_clean_scope(scope),
        third_party_disclosure=third_party_disclosure, given_at=given_at or timezone.now(), recorded_by=actor)
    if consent.given_at > timezone.now() + dt.timedelta(minutes=5):
        raise ValidationError({"given_at": "Consent cannot be given in the future."})
    consent.full_clean()
    consent.save()  # audited by django-auditlog (compliance/apps.py registers the model)
    return consent


def consent_revoke(*, consent: ParentalConsent, actor: User) -> ParentalConsent:
    """A guardian withdraws consent (their verified own child), or school staff record the withdrawal.
    Takes effect at once for pages and the API, and within one socket re-check period for open sockets."""
    _require_staff_or_guardian(actor, consent.institution_id, consent.student)
    with transaction.atomic():
        consent = ParentalConsent.objects.select_for_update().get(pk=consent.pk)
        if consent.revoked_at is None:
            consent.revoked_at, consent.revoked_by = timezone.now(), actor
            consent.save(update_fields=["revoked_at", "revoked_by"])
    return consent


def school_authorization_record(*, institution: Institution, scope: list[str], authorized_on: dt.date,
                                signatory: str, evidence_reference: str, expires_on: dt.date | None = None,
                                actor: User | None) -> SchoolAuthorization:
    _require_staff_for(actor, institution.pk)
    if expires_on is not None and expires_on < authorized_on:
        raise ValidationError({"expires_on": "The authorization cannot end before it starts."})
    authorization = SchoolAuthorization(
        institution=institution, scope=_clean_scope(scope), authorized_on=authorized_on, expires_on=expires_on,
        signatory=signatory.strip(), evidence_reference=evidence_reference.strip(), recorded_by=actor)
    authorization.full_clean()
    authorization.save()
    return authorization


def school_authorization_revoke(*, authorization: SchoolAuthorization, actor: User | None) -> SchoolAuthorization:
    _require_staff_for(actor, authorization.institution_id)
    with transaction.atomic():
        authorization = SchoolAuthorization.objects.select_for_update().get(pk=authorization.pk)
        if authorization.revoked_at is None:
            authorization.revoked_at = timezone.now()
            authorization.save(update_fields=["revoked_at"])
    return authorization


# --- deletion --------------------------------------------------------------------------------------------

def deletion_request(*, student: User, institution: Institution, actor: User | None,
                     origin: str = ChildDataDeletion.Origin.SCHOOL) -> ChildDataDeletion:
    """Ask for a child's personal information to be deleted (idempotent: one open request per child).

    A verified guardian asks from the guardian page; staff carry it out from the admin (`child_data_delete`)."""
    if actor is not None:
        _require_staff_or_guardian(actor, institution.pk, student)
    token = subject_token(student.pk)
    with transaction.atomic():
        existing = ChildDataDeletion.objects.select_for_update().filter(
            subject_token=token, completed_at__isnull=True).first()
        if existing is not None:
            return existing
        return ChildDataDeletion.objects.create(subject_token=token, student=student, institution=institution,
                                                origin=origin, requested_by=actor)


def child_data_delete(*, deletion: ChildDataDeletion, actor: User | None) -> ChildDataDeletion:
    """Delete the child's personal information everywhere it lives, close their logins and sockets, and
    keep only the tokenised record (docs/compliance.md lists every store). Safe to run twice."""
    from compliance.coppa import erasure

    if actor is not None:
        if deletion.institution_id is None:
            if not actor.is_superuser:
                raise PermissionDenied("Only platform administrators carry out a request without a school.")
        else:
            _require_staff_for(actor, deletion.institution_id, deletion.student)
    with transaction.atomic():
        deletion = ChildDataDeletion.objects.select_for_update().get(pk=deletion.pk)
        if deletion.completed_at is not None:
            return deletion
        student = deletion.student
        plan = None
        removed: dict[str, int] = {}
        if student is not None:  # None: the account was already gone; the record is completed as is
            plan = erasure.plan(student)
            removed = erasure.erase_database(student, plan, token=deletion.subject_token)
        deletion.student = None
        deletion.completed_at, deletion.completed_by = timezone.now(), actor
        deletion.removed = removed
        deletion.save(update_fields=["student", "completed_at", "completed_by", "removed"])
        if plan is not None:
            # Redis is not part of the transaction: presence and caches go once the deletion is committed.
            transaction.on_commit(lambda: erasure.erase_realtime(plan))
    logger.info("coppa deletion completed token=%s", deletion.subject_token[:16])
    return deletion


# --- retention ----------------------------------------------------------------------------------------------

def retention_policy() -> dict[str, int]:
    return {
        "child_content_days": settings.AULA_RETENTION_CHILD_CONTENT_DAYS,
        "child_inactive_account_days": settings.AULA_RETENTION_CHILD_INACTIVE_DAYS,
        "deletion_record_days": settings.AULA_RETENTION_DELETION_RECORD_DAYS,
    }


def retention_purge(*, now: dt.datetime | None = None) -> RetentionRun:
    """The scheduled purge (docs/compliance.md, "COPPA and retention"). Idempotent: a second run finds
    nothing left to remove. Every run is recorded with what it removed."""
    from compliance.coppa import erasure

    started = timezone.now()
    now = now or started
    policy = retention_policy()
    removed: dict[str, int] = {}

    def add(counts: dict[str, int]) -> None:
        for k, v in counts.items():
            removed[k] = removed.get(k, 0) + v

    # 1. What children wrote (chat, free-text answers) older than the content period.
    add(erasure.erase_child_content(before=now - dt.timedelta(days=policy["child_content_days"])))

    # 2. Children who left: no active enrollment or membership, and no sign-in, for the inactive period.
    cutoff = now - dt.timedelta(days=policy["child_inactive_account_days"])
    for child in _children_gone_since(cutoff, today=now.date()):
        deletion = deletion_request(student=child, institution=_last_school(child), actor=None,
                                    origin=ChildDataDeletion.Origin.RETENTION)
        child_data_delete(deletion=deletion, actor=None)
        removed["accounts"] = removed.get("accounts", 0) + 1

    # 3. The tokenised deletion records themselves are not kept for ever either.
    record_cutoff = now - dt.timedelta(days=policy["deletion_record_days"])
    count, _ = ChildDataDeletion.objects.filter(completed_at__lt=record_cutoff).delete()
    if count:
        removed["deletion_records"] = count

    return RetentionRun.objects.create(started_at=started, finished_at=timezone.now(), policy=policy,
                                       removed=removed)


def _children_gone_since(cutoff: dt.datetime, *, today: dt.date):
    """Users under 13 today with nothing active at any school, not signed in since `cutoff` and created
    before it."""
    from compliance.coppa.erasure import _years_before

    thirteen_years_ago = _years_before(today, 13)
    return (User.objects.filter(date_of_birth__gt=thirteen_years_ago, date_joined__lt=cutoff, is_superuser=False)
            .filter(Q(last_login__isnull=True) | Q(last_login__lt=cutoff))
            .exclude(memberships__is_active=True)
            .exclude(enrollments__is_active=True)
            .distinct())


def _last_school(child: User) -> Institution | None:
    from classrooms.models import Enrollment, Membership

    row = (Membership.objects.filter(user=child).order_by("-created_at").values("institution_id").first()
           or Enrollment.objects.filter(user=child).order_by("-updated_at").values("institution_id").first())
    return Institution.objects.filter(pk=row["institution_id"]).first() if row else None

