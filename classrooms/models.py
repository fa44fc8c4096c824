"""Identity, tenancy and the classroom room model: District → Institution → Course → LiveSession.

Every student-related row carries an `institution` foreign key; `TenantQuerySet.visible_to(user)` is the
one scoping mechanism (see classrooms/selectors.py), used by pages, admin, API and consumers alike.
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Role(models.TextChoices):
    """Roles within an institution (Membership) or a course (Enrollment)."""

    STUDENT = "student", "Student"
    TEACHER = "teacher", "Teacher"
    TA = "ta", "Teaching assistant"
    STAFF = "staff", "School staff"


class TenantQuerySet(models.QuerySet):
    """Rows that belong to one institution. `tenant_field` names the path to it."""

    tenant_field = "institution"

    def visible_to(self, user):
        """Only the rows of institutions `user` may see (the one tenant-scoping rule, in selectors)."""
        from classrooms.selectors import scoped

        return scoped(self, user)


class District(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class InstitutionQuerySet(TenantQuerySet):
    tenant_field = "id"


class Institution(models.Model):
    """A school: the tenant boundary for student data."""

    district = models.ForeignKey(District, on_delete=models.PROTECT, related_name="institutions")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    timezone = models.CharField(max_length=64, default="UTC")
    # COPPA: the school may consent on parents' behalf for educational use only (FTC COPPA FAQ N.1).
    school_authorizes_coppa = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = InstitutionQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AulaUserManager(UserManager):
    def get_by_natural_key(self, username):
        return self.get(**{f"{self.model.USERNAME_FIELD}__iexact": username})


class User(AbstractUser):
    """Everyone: students, teachers, staff, guardians, district admins, creators and viewers."""

    email = models.EmailField(unique=True)
    display_name = models.CharField(max_length=80, blank=True)
    date_of_birth = models.DateField(null=True, blank=True)

    objects = AulaUserManager()

    REQUIRED_FIELDS = ["email"]

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(models.functions.Lower("username"), name="user_username_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.display_name or self.username

    @property
    def public_name(self) -> str:
        return self.display_name or self.first_name or self.username

    def age_on(self, day: dt.date) -> int | None:
        if not self.date_of_birth:
            return None
        b = self.date_of_birth
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))

    @property
    def is_under_13(self) -> bool:
        age = self.age_on(timezone.localdate())
        return age is not None and age < 13


class MembershipQuerySet(TenantQuerySet):
    def active(self):
        return self.filter(is_active=True)


class Membership(models.Model):
    """A user's role at one institution. School staff use the admin for their institution only."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    grade_level = models.CharField(max_length=16, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "institution", "role"], name="membership_unique")]
        indexes = [models.Index(fields=["institution", "role"])]

    def __str__(self) -> str:
        return f"{self.user} – {self.get_role_display()} at {self.institution}"


class DistrictRole(models.Model):
    """District administrators see every institution of their district."""

    class Kind(models.TextChoices):
        ADMIN = "admin", "District administrator"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="district_roles")
    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="roles")
    role = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ADMIN)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "district", "role"], name="district_role_unique")]

    def __str__(self) -> str:
        return f"{self.user} – {self.get_role_display()} of {self.district}"


class Guardianship(models.Model):
    """A guardian linked to a student at one institution (for consent and records requests)."""

    guardian = models.ForeignKey(User, on_delete=models.CASCADE, related_name="wards")
    student = models.ForeignKey(User, on_delete=models.CASCADE, related_name="guardians")
    institution = models.ForeignKey(Institution, on_delete=models.CASCADE, related_name="guardianships")
    relationship = models.CharField(max_length=40, default="parent")
    verified_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["guardian", "student"], name="guardianship_unique"),
            models.CheckConstraint(condition=~Q(guardian=models.F("student")), name="guardian_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.guardian} ({self.relationship}) of {self.student}"


class Course(models.Model):
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="courses")
    code = models.CharField(max_length=40)
    title = models.CharField(max_length=200)
    term = models.CharField(max_length=40, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["institution", "code", "term"], name="course_code_unique")]

    def __str__(self) -> str:
        return f"{self.code} {self.title}"


class EnrollmentQuerySet(TenantQuerySet):
    def active(self):
        return self.filter(is_active=True)


class Enrollment(models.Model):
    class CourseRole(models.TextChoices):
        TEACHER = Role.TEACHER.value, Role.TEACHER.label
        TA = Role.TA.value, Role.TA.label
        STUDENT = Role.STUDENT.value, Role.STUDENT.label

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="enrollments")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="enrollments")
    role = models.CharField(max_length=16, choices=CourseRole.choices)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EnrollmentQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["course", "user"], name="enrollment_unique")]
        indexes = [models.Index(fields=["user", "is_active"])]

    def __str__(self) -> str:
        return f"{self.user} – {self.get_role_display()} in {self.course}"


class LiveSession(models.Model):
    """One live class meeting of a course: the room that chat, polls, presence and the whiteboard share."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        LIVE = "live", "Live"
        ENDED = "ended", "Ended"

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="live_sessions")
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    scheduled_start = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    video_url = models.URLField(blank=True, help_text="External video provider link (Aula does not carry video).")
    video_fallback_url = models.URLField(blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-scheduled_start", "-id"]

    def __str__(self) -> str:
        return f"{self.title} ({self.course.code})"

    @property
    def room_key(self) -> str:
        """Stable server-side name of the real-time room (never from client input)."""
        return f"i{self.institution_id}.ls{self.pk}"
