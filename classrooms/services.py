"""Every write to identity, tenancy, courses and enrollments: one function per change, atomic and audited.

Pages, API, admin, management commands and consumers call these; nothing else writes these models.
django-auditlog records each save (the actor comes from the request, socket or task context).
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from classrooms import selectors
from classrooms.models import (
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


def upsert(model, *, defaults: dict, **lookup):
    """get-or-create, then save only the fields that differ: re-running a sync or seed writes nothing
    (and so audits nothing) when nothing changed."""
    obj, created = model.objects.get_or_create(**lookup, defaults=defaults)
    if not created:
        changed = [k for k, v in defaults.items() if getattr(obj, k) != v]
        if changed:
            for k in changed:
                setattr(obj, k, defaults[k])
            obj.save()
    return obj


def _check_staff(actor: User | None, institution_id: int) -> None:
    """School staff may only change their own institution; None is a system actor (seed, sync, task)."""
    if actor is not None and not selectors.is_school_staff(actor, institution_id):
        raise PermissionDenied("not staff of this institution")


def district_upsert(*, slug: str, name: str) -> District:
    return upsert(District, slug=slug, defaults={"name": name})


def institution_upsert(*, district: District, slug: str, name: str, timezone: str = "UTC",
                       school_authorizes_coppa: bool = False) -> Institution:
    return upsert(Institution, slug=slug,
                  defaults={"district": district, "name": name, "timezone": timezone,
                            "school_authorizes_coppa": school_authorizes_coppa})


def user_upsert(*, email: str, username: str | None = None, password: str | None = None,
                first_name: str = "", last_name: str = "", display_name: str = "",
                date_of_birth: dt.date | None = None, is_staff: bool = False) -> User:
    """Create or update a person by email. `password` is set only when the account is created."""
    email = User.objects.normalize_email(email).lower()
    with transaction.atomic():
        user = User.objects.select_for_update().filter(email__iexact=email).first()
        fields = {"first_name": first_name, "last_name": last_name,
                  "display_name": display_name or first_name, "date_of_birth": date_of_birth}
        if user is None:
            user = User(email=email, username=username or email, is_staff=is_staff, **fields)
            if password is not None:
                user.set_password(password)
            else:
                user.set_unusable_password()
        else:
            changed = {k: v for k, v in fields.items() if getattr(user, k) != v}
            if is_staff and not user.is_staff:
                changed["is_staff"] = True
            if not changed:
                return user
            for k, v in changed.items():
                setattr(user, k, v)
        user.full_clean(exclude=["password"])
        user.save()
    return user


def membership_grant(*, user: User, institution: Institution, role: str, grade_level: str = "",
                     actor: User | None = None) -> Membership:
    _check_staff(actor, institution.pk)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            user=user, institution=institution, role=role,
            defaults={"grade_level": grade_level, "is_active": True},
        )
        if not created and (not membership.is_active or membership.grade_level != grade_level):
            membership.is_active, membership.grade_level = True, grade_level
            membership.save()
        if role == Role.STAFF and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
    return membership


def district_admin_grant(*, user: User, district: District) -> DistrictRole:
    role, _ = DistrictRole.objects.get_or_create(user=user, district=district)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    return role


def guardianship_link(*, guardian: User, student: User, institution: Institution,
                      relationship: str = "parent", actor: User | None = None) -> Guardianship:
    _check_staff(actor, institution.pk)
    return upsert(Guardianship, guardian=guardian, student=student,
                  defaults={"institution": institution, "relationship": relationship})


def course_save(*, course: Course, actor: User | None = None) -> Course:
    """Create or update a course; staff may only place courses in their own institution."""
    _check_staff(actor, course.institution_id)
    if course.pk:
        previous = Course.objects.only("institution_id").get(pk=course.pk)
        if previous.institution_id != course.institution_id:
            raise ValidationError({"institution": "A course cannot move to another institution."})
    course.full_clean()
    course.save()
    return course


def course_upsert(*, institution: Institution, code: str, title: str, term: str = "") -> Course:
    return upsert(Course, institution=institution, code=code, term=term, defaults={"title": title})


def enrollment_upsert(*, course: Course, user: User, role: str, actor: User | None = None) -> Enrollment:
    """Enroll `user` in `course` with `role`, re-activating a dropped enrollment."""
    _check_staff(actor, course.institution_id)
    with transaction.atomic():
        enrollment = Enrollment.objects.select_for_update().filter(course=course, user=user).first()
        if enrollment is None:
            enrollment = Enrollment(course=course, user=user, institution_id=course.institution_id)
        elif enrollment.role == role and enrollment.is_active \
                and enrollment.institution_id == course.institution_id:
            return enrollment
        enrollment.role, enrollment.is_active = role, True
        enrollment.institution_id = course.institution_id
        enrollment.full_clean(validate_unique=False)
        enrollment.save()
    return enrollment


def enrollment_save(*, enrollment: Enrollment, actor: User | None = None) -> Enrollment:
    """Admin form path: the institution always follows the course, never the form."""
    _check_staff(actor, enrollment.course.institution_id)
    enrollment.institution_id = enrollment.course.institution_id
    enrollment.full_clean()
    enrollment.save()
    return enrollment


def enrollment_drop(*, enrollment: Enrollment, actor: User | None = None) -> Enrollment:
    _check_staff(actor, enrollment.institution_id)
    if enrollment.is_active:
        enrollment.is_active = False
        enrollment.save(update_fields=["is_active", "updated_at"])
    return enrollment


def live_session_save(*, session: LiveSession, actor: User | None = None) -> LiveSession:
    _check_staff(actor, session.course.institution_id)
    session.institution_id = session.course.institution_id
    if session.created_by_id is None and actor is not None:
        session.created_by = actor
    session.full_clean()
    session.save()
    return session


def live_session_upsert(*, course: Course, title: str, scheduled_start: dt.datetime | None = None,
                        created_by: User | None = None, video_url: str = "") -> LiveSession:
    return upsert(LiveSession, course=course, title=title,
                  defaults={"institution_id": course.institution_id, "scheduled_start": scheduled_start,
                            "created_by": created_by, "video_url": video_url})
