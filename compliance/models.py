"""Compliance: the district API's clients, FERPA's record of disclosures and the access-entry view of auditlog."""

from __future__ import annotations

import secrets

from auditlog.models import LogEntry
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
        "results.read audit.read).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.district})"


class Disclosure(models.Model):
    """FERPA's record of disclosures (34 CFR 99.32): one row per student per disclosure of personally
    identifiable information to a party outside the school. Append-only (compliance.audit.APPEND_ONLY and a
    database trigger); kept as long as the student's records."""

    class Basis(models.TextChoices):
        SCHOOL_OFFICIAL = "school_official", "School official with legitimate educational interest (99.31(a)(1))"
        OTHER_SCHOOL = "other_school", "School where the student seeks to enroll (99.31(a)(2))"
        AUDIT_EVALUATION = "audit_evaluation", "Audit or evaluation of education programs (99.31(a)(3))"
        FINANCIAL_AID = "financial_aid", "Financial aid (99.31(a)(4))"
        STUDIES = "studies", "Studies for or on behalf of the school (99.31(a)(6))"
        SUBPOENA = "subpoena", "Judicial order or subpoena (99.31(a)(9))"
        EMERGENCY = "emergency", "Health or safety emergency (99.31(a)(10), 99.36)"
        CONSENT = "consent", "Written consent of the parent or eligible student (99.30)"

    class Via(models.TextChoices):
        API = "api", "District API"
        VENDOR_EXPORT = "vendor_export", "Vendor export"
        MANUAL = "manual", "Entered by school staff"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    # SET_NULL: deleting a student's account (COPPA deletion) keeps the anonymous fact of the disclosure.
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                related_name="ferpa_disclosures")
    receiving_party = models.CharField(max_length=200)
    basis = models.CharField("legal basis", max_length=32, choices=Basis.choices)
    legitimate_interest = models.CharField(
        max_length=500, help_text="The legitimate interest, or the emergency and the threat (99.32(a)(3), (5)).")
    data_categories = models.JSONField(default=list, help_text="Which kinds of records were disclosed.")
    disclosed_at = models.DateTimeField()
    via = models.CharField(max_length=16, choices=Via.choices)
    disclosed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    disclosed_by_name = models.CharField(max_length=254, blank=True)
    api_client = models.ForeignKey(DistrictAPIClient, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    reference = models.CharField(max_length=100, blank=True,
                                 help_text="Idempotency key of an automatic disclosure (a retried export "
                                           "is recorded once).")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-disclosed_at", "-id"]
        indexes = [models.Index(fields=["student", "disclosed_at"]),
                   models.Index(fields=["institution", "disclosed_at"])]
        constraints = [
            models.UniqueConstraint(fields=["reference", "student"], condition=~models.Q(reference=""),
                                    name="disclosure_reference_once"),
        ]

    def __str__(self) -> str:
        return f"Disclosure to {self.receiving_party} on {self.disclosed_at:%Y-%m-%d}"


class AccessEntryQuerySet(models.QuerySet):
    tenant_field = "additional_data__institution"  # for classrooms.selectors.scoped_to


class AccessEntryManager(models.Manager.from_queryset(AccessEntryQuerySet)):
    def get_queryset(self):
        return super().get_queryset().filter(action=LogEntry.Action.ACCESS)


class AccessEntry(LogEntry):
    """A read of a student record (auditlog's ACCESS entries), for the admin's "who accessed" answer."""

    objects = AccessEntryManager()

    class Meta:
        proxy = True
        verbose_name = "student record access"
        verbose_name_plural = "student record accesses"
        ordering = ["-timestamp"]
