"""Compliance: the district API's clients, OneRoster rostering data, district exports and dispositions."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from classrooms.models import TenantQuerySet


def _client_ref() -> str:
    return secrets.token_hex(8)


class DistrictAPIClient(models.Model):
    """An OAuth2 client-credentials application that acts for one district in the REST API."""

    district = models.ForeignKey("classrooms.District", on_delete=models.CASCADE, related_name="api_clients")
    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE, related_name="district_client"
    )
    name = models.CharField(max_length=200)
    reference = models.CharField(max_length=32, default=_client_ref, unique=True)
    scopes = models.CharField(
        max_length=200, default="roster.read",
        help_text="Space-separated OAuth2 scopes this client may request (roster.read roster.write "
        "results.read audit.read district.export).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.district})"


# --- OneRoster rostering: what a district's SIS sends that Aula's own models do not hold -------------------


class DistrictScopedQuerySet(TenantQuerySet):
    """District-level rows (terms, the course catalog, exports): seen through any school of their district."""

    tenant_field = "district__institutions"
    tenant_via_many = True


class RosterStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    TO_BE_DELETED = "tobedeleted", "To be deleted"


class AcademicSession(models.Model):
    """A OneRoster academic session: a school year, semester, term or grading period of one district."""

    class Kind(models.TextChoices):
        SCHOOL_YEAR = "schoolYear", "School year"
        SEMESTER = "semester", "Semester"
        TERM = "term", "Term"
        GRADING_PERIOD = "gradingPeriod", "Grading period"

    district = models.ForeignKey("classrooms.District", on_delete=models.CASCADE, related_name="academic_sessions")
    sourced_id = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=RosterStatus.choices, default=RosterStatus.ACTIVE)
    title = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    start_date = models.DateField()
    end_date = models.DateField()
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    school_year = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DistrictScopedQuerySet.as_manager()

    class Meta:
        ordering = ["start_date", "id"]
        constraints = [
            models.UniqueConstraint(fields=["district", "sourced_id"], name="academic_session_sourced_id_unique"),
            models.CheckConstraint(condition=models.Q(end_date__gte=models.F("start_date")),
                                   name="academic_session_ends_after_start"),
        ]

    def __str__(self) -> str:
        return self.title


class CatalogCourse(models.Model):
    """A OneRoster course: the catalog entry that a district's classes (Aula courses) are offerings of."""

    district = models.ForeignKey("classrooms.District", on_delete=models.CASCADE, related_name="catalog_courses")
    sourced_id = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=RosterStatus.choices, default=RosterStatus.ACTIVE)
    title = models.CharField(max_length=200)
    course_code = models.CharField(max_length=100, blank=True)
    school_year = models.ForeignKey(AcademicSession, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    org = models.ForeignKey("classrooms.Institution", on_delete=models.SET_NULL, null=True, blank=True,
                            related_name="+", help_text="Empty when the course belongs to the whole district.")
    grades = models.JSONField(default=list, blank=True)
    subjects = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DistrictScopedQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["district", "sourced_id"], name="catalog_course_sourced_id_unique"),
        ]

    def __str__(self) -> str:
        return self.title


class RosterLink(models.Model):
    """The district SIS's sourcedId of an Aula row (a school, a class, a person, an enrollment).

    SourcedIds are unique within one district's SIS only, so they live here per district, never on the shared
    rows: two districts may both send "s-1", and a person may be rostered by two districts. `data` keeps the
    OneRoster fields Aula has no column for (a class's course and terms, a person's identifier and grades)."""

    class Kind(models.TextChoices):
        DISTRICT = "district", "District"
        ORG = "org", "School"
        CLASS = "class", "Class"
        USER = "user", "User"
        ENROLLMENT = "enrollment", "Enrollment"

    district = models.ForeignKey("classrooms.District", on_delete=models.CASCADE, related_name="roster_links")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    sourced_id = models.CharField(max_length=255)
    object_id = models.BigIntegerField()
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DistrictScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["district", "kind", "sourced_id"], name="roster_link_sourced_id_unique"),
            models.UniqueConstraint(fields=["district", "kind", "object_id"], name="roster_link_object_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.sourced_id} → {self.object_id}"


# --- district data: export and disposition -------------------------------------------------------------------


class DistrictExport(models.Model):
    """One export of all of a district's data (docs/api.md: a zip of OneRoster CSVs and Aula JSON lines)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    district = models.ForeignKey("classrooms.District", on_delete=models.CASCADE, related_name="exports")
    requested_by = models.ForeignKey(DistrictAPIClient, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="exports")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    file = models.FileField(upload_to="district-exports/", blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = DistrictScopedQuerySet.as_manager()

    class Meta:
        ordering = ["id"]


class DispositionCertificate(models.Model):
    """A district's student data deleted on request, and the certificate that says what, how much, when, by
    whom (data privacy agreements require one). The certificate body is kept with its SHA-256."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"

    district = models.ForeignKey("classrooms.District", on_delete=models.PROTECT, related_name="dispositions")
    requested_by = models.CharField(max_length=200, help_text="Who at the district asked (name, role).")
    performed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    reference = models.CharField(max_length=32, default=_client_ref, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    counts = models.JSONField(default=dict, blank=True)
    certificate = models.JSONField(default=dict, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = DistrictScopedQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
