"""Compliance: the district API's clients now; FERPA access records, COPPA consent and retention next."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


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


# --- COPPA: parental consent, school authorization, deletion and retention (docs/compliance.md) ----------

class PersonalInfoFeature(models.TextChoices):
    """Features that collect a child's personal information: gated for users under 13 until a parent's
    verifiable consent or the school's authorization covers them (compliance/coppa/selectors.py)."""

    CHAT = "chat", "Chat in live classes"
    FREE_TEXT = "free_text", "Free-text answers to polls"


def _all_features() -> list[str]:
    return list(PersonalInfoFeature.values)


class ParentalConsent(models.Model):
    """A parent's verifiable consent for one child, as recorded by the school (16 CFR 312.5)."""

    class Method(models.TextChoices):
        SIGNED_FORM = "signed_form", "Signed consent form (paper or scanned)"
        PAYMENT = "payment", "Monetary transaction with notice"
        CALL = "call", "Phone or video call with trained staff"
        ID_CHECK = "id_check", "Government ID checked and deleted"
        KNOWLEDGE = "knowledge", "Knowledge-based authentication"
        FACE_MATCH = "face_match", "Face match to government ID"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.CASCADE, related_name="+")
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="parental_consents")
    guardian = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="+", help_text="The parent's account, when they have one.")
    guardian_name = models.CharField(max_length=200, help_text="The parent or legal guardian who consented.")
    method = models.CharField(max_length=16, choices=Method.choices)
    evidence_reference = models.CharField(
        max_length=200, help_text="Where the evidence is kept (form number, call log id); never the document.")
    scope = models.JSONField(default=_all_features, help_text="The features consented to.")
    third_party_disclosure = models.BooleanField(
        default=False, help_text="Separate consent to disclose the child's information to third parties.")
    given_at = models.DateTimeField(help_text="When the parent consented.")
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")

    class Meta:
        ordering = ["-given_at", "-id"]
        indexes = [models.Index(fields=["student", "revoked_at"])]
        constraints = [
            models.CheckConstraint(condition=~models.Q(evidence_reference=""), name="consent_has_evidence"),
        ]

    def __str__(self) -> str:
        return f"Consent #{self.pk} ({self.get_method_display()})"


class SchoolAuthorization(models.Model):
    """The school consenting on parents' behalf, for the school's educational purpose only (FTC COPPA FAQ N)."""

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.CASCADE,
                                    related_name="coppa_authorizations")
    scope = models.JSONField(default=_all_features, help_text="The features the school authorizes.")
    authorized_on = models.DateField(help_text="First day the authorization applies.")
    expires_on = models.DateField(null=True, blank=True, help_text="Last day it applies (empty: until revoked).")
    signatory = models.CharField(max_length=200, help_text="The school official who authorized, and their title.")
    evidence_reference = models.CharField(max_length=200)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-authorized_on", "-id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(evidence_reference=""), name="school_authorization_evidence"),
        ]

    def __str__(self) -> str:
        return f"School authorization #{self.pk} from {self.authorized_on}"


class ChildDataDeletion(models.Model):
    """A request to delete a child's personal information, and afterwards the tokenised record that it was
    done: once completed, `student` is empty and only `subject_token` (a keyed hash of the user id) remains."""

    class Origin(models.TextChoices):
        GUARDIAN = "guardian", "Requested by a guardian"
        SCHOOL = "school", "Requested through the school"
        RETENTION = "retention", "Retention period ended"

    subject_token = models.CharField(max_length=64, db_index=True)
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+")
    institution = models.ForeignKey("classrooms.Institution", on_delete=models.SET_NULL, null=True, related_name="+")
    origin = models.CharField(max_length=16, choices=Origin.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    completed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    completed_at = models.DateTimeField(null=True, blank=True)
    removed = models.JSONField(default=dict, blank=True, help_text="What was removed, counted per store.")

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["subject_token"], condition=models.Q(completed_at__isnull=True),
                                    name="one_open_deletion_per_child"),
        ]

    def __str__(self) -> str:
        return f"Deletion {self.subject_token[:12]}…"


class RetentionRun(models.Model):
    """One run of the scheduled COPPA retention purge, with what it removed (the audit of the purge)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    policy = models.JSONField(help_text="The retention settings the run applied.")
    removed = models.JSONField(default=dict)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Retention run {self.started_at:%Y-%m-%d %H:%M}"
