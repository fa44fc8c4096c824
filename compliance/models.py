"""Compliance: the district API's clients, OneRoster rostering data, district exports and dispositions, COPPA
consent and deletion records, FERPA's record of disclosures and the access-entry view of auditlog."""

from __future__ import annotations

import datetime as dt
import secrets

from auditlog.models import LogEntry
from django.conf import settings
from django.db import models

from classrooms.models import TenantQuerySet
from config.secrets import EncryptedTextField


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


# --- COPPA: parental consent, school authorization, deletion and retention (docs/compliance.md) ----------

class PersonalInfoFeature(models.TextChoices):
    """Features that collect a child's personal information: gated for users under 13 until a parent's
    verifiable consent or the school's authorization covers them (compliance/coppa/selectors.py)."""

    CHAT = "chat", "Chat in live classes"
    FREE_TEXT = "free_text", "Free-text answers to polls"
    COLLAB = "collab", "Writing on the shared whiteboard and notes"


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


# --- OneRoster 1.2 sync from the district's SIS (compliance/sis_sync.py, docs/rostering.md) ----------------


def _sis_resources() -> dict:
    return {}


class SisConnection(models.Model):
    """A district's SIS: its OneRoster 1.2 rostering service and the OAuth2 client credentials Aula uses."""

    district = models.OneToOneField("classrooms.District", on_delete=models.CASCADE, related_name="sis_connection")
    base_url = models.URLField(
        max_length=500, help_text="The rostering service's base, e.g. https://sis.example/ims/oneroster/rostering/v1p2")
    token_url = models.URLField(max_length=500, help_text="The OAuth2 token endpoint (client credentials).")
    client_id = models.CharField(max_length=255)
    client_secret = EncryptedTextField(help_text="Stored encrypted (AULA_SECRET_KEYS); never displayed.")
    scope = models.CharField(
        max_length=500, blank=True,
        default="https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly",
        help_text="Space-separated OAuth2 scopes to request (empty: none).")
    sync_interval = models.DurationField(default=dt.timedelta(hours=1),
                                         help_text="How often a delta sync starts (HH:MM:SS).")
    page_size = models.PositiveIntegerField(default=1000, help_text="Records per request (limit).")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DistrictScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"SIS of {self.district}"


class SisRunQuerySet(TenantQuerySet):
    tenant_field = "connection__district__institutions"
    tenant_via_many = True


class SisRun(models.Model):
    """One sync of a district's SIS: its mode, where it has reached (resumable), and its report."""

    class Mode(models.TextChoices):
        DELTA = "delta", "Delta (changes since the last successful run)"
        FULL = "full", "Full reconciliation"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    connection = models.ForeignKey(SisConnection, on_delete=models.CASCADE, related_name="runs")
    mode = models.CharField(max_length=8, choices=Mode.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    requested_by = models.CharField(max_length=200, blank=True, help_text="Who asked (an admin user, the schedule).")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last page applied.")
    server_started_at = models.DateTimeField(
        null=True, blank=True, help_text="The SIS's clock (HTTP Date) when the run began: the next delta's watermark.")
    watermark = models.DateTimeField(
        null=True, blank=True, help_text="Delta: records modified after this time (with an overlap) were asked for.")
    checkpoint = models.JSONField(
        default=dict, blank=True, help_text="Resume point: {'resource': name, 'offset': n, 'total': n}.")
    counts = models.JSONField(
        default=_sis_resources, blank=True,
        help_text="Per resource: created, updated, deleted, unchanged, errors.")
    issue_count = models.PositiveIntegerField(default=0, help_text="Record errors and conflicts, also those not kept.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker started or resumed the run.")
    error = models.TextField(blank=True, help_text="Why the run failed (never a credential).")

    objects = SisRunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["connection"], condition=models.Q(status__in=["pending", "running"]),
                                    name="sis_run_one_active_per_connection"),
        ]

    def __str__(self) -> str:
        return f"{self.get_mode_display()} #{self.pk} ({self.status})"


class SisRunIssue(models.Model):
    """A record a run could not apply (invalid) or that contradicts Aula's data (conflict)."""

    class Kind(models.TextChoices):
        INVALID = "invalid", "Invalid record"
        CONFLICT = "conflict", "Conflict"
        DELETED = "deleted", "Deleted: no longer listed (full reconciliation)"
        RUN = "run", "Run"

    run = models.ForeignKey(SisRun, on_delete=models.CASCADE, related_name="issues")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    resource = models.CharField(max_length=32)
    sourced_id = models.CharField(max_length=255, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class SisRecord(models.Model):
    """What a district's SIS last sent for one sourcedId: a digest (updated vs unchanged) and the last run that
    listed it (a full reconciliation deletes what the SIS no longer lists)."""

    connection = models.ForeignKey(SisConnection, on_delete=models.CASCADE, related_name="records")
    resource = models.CharField(max_length=32)
    sourced_id = models.CharField(max_length=255)
    digest = models.CharField(max_length=32)
    last_seen_run = models.ForeignKey(SisRun, on_delete=models.SET_NULL, null=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "resource", "sourced_id"], name="sis_record_unique"),
        ]


class RosterCsvImport(models.Model):
    """A OneRoster CSV bundle a platform administrator imported from the admin, and its report (the archive
    itself is not kept)."""

    district = models.ForeignKey("classrooms.District", on_delete=models.CASCADE, related_name="roster_imports")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    filename = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64)
    applied = models.BooleanField(default=False)
    report = models.JSONField(default=dict, blank=True, help_text="created/updated per file, or every failing row.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DistrictScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.filename or 'bundle'} → {self.district}"
