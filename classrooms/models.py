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

from config import secrets


class Role(models.TextChoices):
    """Roles within an institution (Membership) or a course (Enrollment)."""

    STUDENT = "student", "Student"
    TEACHER = "teacher", "Teacher"
    TA = "ta", "Teaching assistant"
    STAFF = "staff", "School staff"


class TenantQuerySet(models.QuerySet):
    """Rows that belong to one institution. `tenant_field` names the path to it."""

    tenant_field = "institution"
    tenant_via_many = False  # True when tenant_field crosses a to-many relation (a row seen through many schools)

    def visible_to(self, user):
        """Only the rows of institutions `user` may see (the one tenant-scoping rule, in selectors)."""
        from classrooms.selectors import scoped

        return scoped(self, user)


class DistrictQuerySet(TenantQuerySet):
    """A district is seen through any of its schools (a to-many path: scoping keeps each district once)."""

    tenant_field = "institutions"
    tenant_via_many = True


class District(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    local_passwords = models.BooleanField(
        default=True, help_text="People of this district may sign in with an Aula password. Off: only through the "
        "district's identity provider (single sign-on) or an LMS launch.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)  # OneRoster dateLastModified (district API delta sync)

    objects = DistrictQuerySet.as_manager()

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
    updated_at = models.DateTimeField(auto_now=True)  # OneRoster dateLastModified (district API delta sync)

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


class ExternalIdentity(models.Model):
    """An Aula account as another system of the district knows it: an LMS platform's LTI subject, an OIDC
    identity provider's `sub` or a SAML NameID. Found by (kind, issuer, subject); never by email alone."""

    class Kind(models.TextChoices):
        LTI = "lti", "LTI platform"
        OIDC = "oidc", "OpenID Connect identity provider"
        SAML = "saml", "SAML 2.0 identity provider"

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="external_identities")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="external_identities")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    issuer = models.CharField(max_length=255, help_text="LTI platform issuer, OIDC issuer or SAML IdP entity id.")
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "issuer", "subject"], name="external_identity_unique"),
        ]
        indexes = [models.Index(fields=["user", "kind"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.issuer} / {self.subject}"


# --- LTI 1.3 (Aula as a tool inside a district's LMS; docs/lti.md) -------------------------------------------

class LtiPlatformQuerySet(TenantQuerySet):
    tenant_field = "district__institutions"
    tenant_via_many = True


class LtiPlatform(models.Model):
    """An LMS registration: the platform's issuer and endpoints, the client id it gave Aula, its deployments."""

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="lti_platforms")
    name = models.CharField(max_length=200, help_text="e.g. 'Canvas (district)'")
    issuer = models.CharField(max_length=255, help_text="The platform's issuer (iss), e.g. https://canvas.instructure.com")
    client_id = models.CharField(max_length=255, help_text="The client id the platform assigned to Aula.")
    deployment_ids = models.JSONField(default=list, blank=True, help_text="Deployment ids accepted from this platform.")
    auth_login_url = models.URLField(max_length=500, help_text="OIDC authorization endpoint.")
    auth_token_url = models.URLField(max_length=500, help_text="OAuth2 token endpoint (services).")
    auth_audience = models.CharField(max_length=500, blank=True, help_text="Token audience when not the token URL.")
    keyset_url = models.URLField(max_length=500, help_text="The platform's public JWKS URL.")
    trust_email = models.BooleanField(
        default=False, help_text="Link this LMS's users to existing Aula accounts of the district by email address. "
                                 "Turn on only if the LMS verifies addresses and users cannot change their own; "
                                 "staff and administrator accounts are never linked by email.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LtiPlatformQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "client_id"], name="lti_platform_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.issuer})"


class LtiRegistrationInvite(models.Model):
    """A district admin's single-use link for LTI Dynamic Registration: pasted into the LMS's "add a tool by URL",
    it names the district the new registration belongs to (the LMS opens it without an Aula session). Only a
    hash of the secret part of the link is stored."""

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="lti_invites")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True, editable=False)
    platform = models.ForeignKey(LtiPlatform, on_delete=models.SET_NULL, null=True, blank=True, editable=False,
                                 related_name="+")

    objects = LtiPlatformQuerySet.as_manager()

    def __str__(self) -> str:
        return f"LTI registration link for {self.district} ({'used' if self.used_at else 'open'})"


class LtiToolKey(models.Model):
    """Aula's own signing keys (RS256), published at /lti/jwks.json. The newest active key signs; keys stay
    published until `retire_at` so that platforms holding a cached key set still verify older signatures."""

    kid = models.CharField(max_length=100, unique=True)
    private_key = secrets.EncryptedTextField(help_text="PEM, encrypted at rest (AULA_SECRET_KEYS).")
    public_jwk = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    retire_at = models.DateTimeField(null=True, blank=True, help_text="Unpublished after this time.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.kid


class LtiContext(models.Model):
    """An LMS course (context) and the Aula course it is linked to."""

    platform = models.ForeignKey(LtiPlatform, on_delete=models.CASCADE, related_name="contexts")
    context_id = models.CharField(max_length=255)
    title = models.CharField(max_length=255, blank=True)
    course = models.ForeignKey("Course", on_delete=models.CASCADE, null=True, blank=True, related_name="lti_contexts")
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    memberships_url = models.URLField(max_length=500, blank=True)
    lineitems_url = models.URLField(max_length=500, blank=True)
    roster_synced_at = models.DateTimeField(null=True, blank=True)
    roster_report = models.JSONField(default=dict, blank=True, help_text="The last roster reconciliation (NRPS).")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["platform", "context_id"], name="lti_context_unique")]

    def __str__(self) -> str:
        return self.title or self.context_id


class LtiResourceLink(models.Model):
    """A placement of an Aula live session or exam in an LMS course (made by deep linking), with its grade
    column (AGS line item) once Aula created or was given one."""

    class Target(models.TextChoices):
        SESSION = "session", "Live session"
        EXAM = "exam", "Exam"

    context = models.ForeignKey(LtiContext, on_delete=models.CASCADE, related_name="resource_links")
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    resource_link_id = models.CharField(max_length=255, blank=True, help_text="Set at the first launch.")
    target = models.CharField(max_length=16, choices=Target.choices)
    target_id = models.PositiveBigIntegerField()
    title = models.CharField(max_length=255)
    lineitem_url = models.URLField(max_length=500, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["context", "resource_link_id"], condition=~models.Q(resource_link_id=""),
                                    name="lti_resource_link_unique"),
        ]
        indexes = [models.Index(fields=["target", "target_id"])]

    def __str__(self) -> str:
        return self.title


class LtiLaunch(models.Model):
    """Every accepted launch (the audit trail of who came in from the LMS, as what, to what)."""

    platform = models.ForeignKey(LtiPlatform, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    context = models.ForeignKey(LtiContext, on_delete=models.SET_NULL, null=True, related_name="+")
    resource_link = models.ForeignKey(LtiResourceLink, on_delete=models.SET_NULL, null=True, blank=True,
                                      related_name="+")
    message_type = models.CharField(max_length=64)
    role = models.CharField(max_length=16, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["platform", "at"])]


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


class Feature(models.TextChoices):
    """Classroom features a teacher can lock for the class or for one student."""

    CHAT = "chat", "Chat"
    HAND = "hand", "Hand raise"
    POLLS = "polls", "Polls"
    REACTIONS = "reactions", "Reactions"
    WHITEBOARD = "whiteboard", "Whiteboard"
    NOTES = "notes", "Shared notes"


class SessionControl(models.Model):
    """Class-wide live state of a session: locks and the class timer (one row per session)."""

    session = models.OneToOneField(LiveSession, on_delete=models.CASCADE, related_name="control", primary_key=True)
    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    locked_features = models.JSONField(default=list, blank=True)
    timer_label = models.CharField(max_length=80, blank=True)
    timer_started_at = models.DateTimeField(null=True, blank=True)
    timer_ends_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()


class ParticipantState(models.Model):
    """Per-student controls in one session: muted, locked features, screen share, removal."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="participant_states")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    locked_features = models.JSONField(default=list, blank=True)
    can_screen_share = models.BooleanField(default=False)
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    removed_reason = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "user"], name="participant_state_unique")]


class ChatMessage(models.Model):
    """A class chat message. A message the moderation pipeline holds has no `seq` (and no room event) until a
    moderator approves it: the class never sees it, its author sees it as pending review."""

    class Status(models.TextChoices):
        VISIBLE = "visible", "Visible"
        HELD = "held", "Held for review"
        REJECTED = "rejected", "Rejected"

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="chat_messages")
    author = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    body = models.TextField(max_length=2000)
    seq = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.VISIBLE)
    client_ref = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    delete_reason = models.CharField(max_length=200, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["session", "seq"]
        indexes = [models.Index(fields=["session", "-seq"])]
        constraints = [
            # A client retry with the same reference never posts twice.
            models.UniqueConstraint(fields=["session", "author", "client_ref"], condition=~models.Q(client_ref=""),
                                    name="chat_client_ref_unique"),
        ]


class Poll(models.Model):
    class Kind(models.TextChoices):
        SINGLE = "single", "Single choice"
        MULTIPLE = "multiple", "Multiple choice"
        OPEN = "open", "Open text"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    class Results(models.TextChoices):
        LIVE = "live", "Shown live"
        ON_CLOSE = "on_close", "Shown when closed"

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="polls")
    question = models.CharField(max_length=500)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    anonymous = models.BooleanField(default=False)
    is_quiz = models.BooleanField(default=False)
    results_visibility = models.CharField(max_length=16, choices=Results.choices, default=Results.LIVE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["session", "id"]


class PollOption(models.Model):
    poll = models.ForeignKey(Poll, on_delete=models.CASCADE, related_name="options")
    position = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=200)
    is_correct = models.BooleanField(default=False)

    class Meta:
        ordering = ["poll", "position"]
        constraints = [models.UniqueConstraint(fields=["poll", "position"], name="poll_option_position_unique")]


class PollAnswer(models.Model):
    """One respondent's answer. For anonymous polls `user` is null and `respondent` is a keyed hash."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    poll = models.ForeignKey(Poll, on_delete=models.CASCADE, related_name="answers")
    user = models.ForeignKey(User, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    respondent = models.CharField(max_length=64)
    attempt_id = models.UUIDField()
    option_positions = models.JSONField(default=list, blank=True)
    text = models.CharField(max_length=1000, blank=True)
    # Held or removed by moderation: the answer counts, its text is not shown in the results.
    text_hidden = models.BooleanField(default=False)
    is_correct = models.BooleanField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["poll", "respondent"], name="poll_answer_once")]


class HandRaise(models.Model):
    class Lowered(models.TextChoices):
        SELF = "self", "Lowered by the student"
        TEACHER = "teacher", "Lowered by the teacher"
        CALLED = "called", "Called on"
        ALL = "all", "Teacher lowered all"
        LEFT = "left", "Session ended"

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="hand_raises")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    raised_at = models.DateTimeField(auto_now_add=True)
    lowered_at = models.DateTimeField(null=True, blank=True)
    lowered_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    lowered_reason = models.CharField(max_length=16, choices=Lowered.choices, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["session", "raised_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], condition=models.Q(lowered_at__isnull=True),
                                    name="one_raised_hand_per_student"),
        ]


class AttendanceInterval(models.Model):
    """One connection's stay in a session (written when it closes or is swept as a ghost)."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="attendance_intervals")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    conn_id = models.CharField(max_length=40)
    joined_at = models.DateTimeField()
    left_at = models.DateTimeField()
    active_seconds = models.FloatField(default=0)
    idle_seconds = models.FloatField(default=0)
    away_seconds = models.FloatField(default=0)
    resumed = models.BooleanField(default=False)
    end_reason = models.CharField(max_length=16)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["conn_id"], name="attendance_interval_conn_unique")]
        indexes = [models.Index(fields=["session", "user"])]


class AttendanceRecord(models.Model):
    """A student's attendance in a session, derived from intervals and engagement (docs/attendance.md)."""

    class Status(models.TextChoices):
        PRESENT = "present", "Present"
        LATE = "late", "Late"
        PARTIAL = "partial", "Partial"
        ABSENT = "absent", "Absent"

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="attendance")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices)
    first_join = models.DateTimeField(null=True)
    last_leave = models.DateTimeField(null=True)
    present_seconds = models.PositiveIntegerField(default=0)
    active_seconds = models.PositiveIntegerField(default=0)
    idle_seconds = models.PositiveIntegerField(default=0)
    reconnects = models.PositiveIntegerField(default=0)
    chat_messages = models.PositiveIntegerField(default=0)
    poll_answers = models.PositiveIntegerField(default=0)
    hand_raises = models.PositiveIntegerField(default=0)
    engagement_score = models.FloatField(default=0)
    computed_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["session", "user"]
        constraints = [models.UniqueConstraint(fields=["session", "user"], name="attendance_record_unique")]


# --- shared whiteboard and notes (docs/collab.md) -------------------------------------------------------

class CollabDocument(models.Model):
    """One shared Yjs document of a live session: its whiteboard or its notes."""

    class Kind(models.TextChoices):
        BOARD = "board", "Whiteboard"
        NOTES = "notes", "Notes"

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(LiveSession, on_delete=models.CASCADE, related_name="collab_documents")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    # Last accepted update (an edit), for "saved at" and the compactor's choice of documents.
    edited_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "kind"], name="collab_document_unique")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of session {self.session_id}"


class CollabUpdate(models.Model):
    """The append log: one accepted Yjs update (v1 encoding) as its author sent it. Folded into checkpoints."""

    id = models.BigAutoField(primary_key=True)
    document = models.ForeignKey(CollabDocument, on_delete=models.CASCADE, related_name="updates")
    author = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    data = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["document", "id"])]


class CollabCheckpoint(models.Model):
    """The whole document state after every update up to `upto`: the base a document loads from, and the
    versions of the history slider (at most one a minute is kept)."""

    document = models.ForeignKey(CollabDocument, on_delete=models.CASCADE, related_name="checkpoints")
    upto = models.BigIntegerField()
    state = models.BinaryField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["document", "upto"]
        indexes = [models.Index(fields=["document", "-upto"])]


class CollabClient(models.Model):
    """Which person a Yjs replica (`client_id`) writes as, bound at its first accepted update. Authorship
    colours and the refusal of updates that write as someone else rest on it."""

    document = models.ForeignKey(CollabDocument, on_delete=models.CASCADE, related_name="clients")
    client_id = models.BigIntegerField()
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["document", "client_id"], name="collab_client_unique")]


class CollabContribution(models.Model):
    """Per person, what the compactor folded from the log (the uncompacted tail is added on read)."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    document = models.ForeignKey(CollabDocument, on_delete=models.CASCADE, related_name="contributions")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    updates = models.PositiveIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)
    elements_added = models.PositiveIntegerField(default=0)
    elements_removed = models.PositiveIntegerField(default=0)
    elements_edited = models.PositiveIntegerField(default=0)
    chars_added = models.PositiveIntegerField(default=0)
    chars_removed = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField(null=True)
    last_at = models.DateTimeField(null=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["document", "user"], name="collab_contribution_unique")]


class CourseFile(models.Model):
    """An image a teacher added to a course's files, placed on whiteboards (re-encoded on upload: no
    metadata, no active content). Kept in PostgreSQL: small, backed up and tenant-scoped with the rest."""

    institution = models.ForeignKey(Institution, on_delete=models.PROTECT, related_name="+")
    course = models.ForeignKey(Course, on_delete=models.CASCADE, related_name="files")
    uploaded_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=40)
    data = models.BinaryField()
    size = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["course", "sha256"], name="course_file_unique_content")]

    def __str__(self) -> str:
        return self.name


# --- Single sign-on ---------------------------------------------------------------------------------------------

class IdentityProvider(models.Model):
    """A district's identity provider (OIDC or SAML 2.0) behind a "Sign in with …" button (classrooms/sso.py).

    It never creates accounts: the person it asserts is mapped to someone the district already rostered (a
    OneRoster sourcedId, an LTI subject or a verified email), then linked as an `ExternalIdentity`. Credentials
    are encrypted at rest (`config.secrets`); IdP certificates are a list so a new one can be added before the
    IdP switches to it."""

    class Kind(models.TextChoices):
        OIDC = "oidc", "OpenID Connect"
        SAML = "saml", "SAML 2.0"

    class MapsTo(models.TextChoices):
        SOURCED_ID = "sourced_id", "OneRoster sourcedId of a person of this district"
        LTI_SUBJECT = "lti_subject", "LTI subject of a person of this district"
        EMAIL = "email", "Verified email of a person rostered in this district"

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="identity_providers")
    slug = models.SlugField(max_length=64, help_text="In the provider's URLs (/sso/<district>/<slug>/…).")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    display_name = models.CharField(max_length=80, help_text='Shown on the button: "Sign in with <display name>".')
    enabled = models.BooleanField(default=True)
    # OpenID Connect
    oidc_issuer = models.URLField(blank=True, help_text="Issuer; discovery is read from "
                                  "<issuer>/.well-known/openid-configuration and must name this issuer.")
    oidc_client_id = models.CharField(max_length=255, blank=True)
    oidc_client_secret = secrets.EncryptedTextField(blank=True)
    oidc_scopes = models.CharField(max_length=255, default="openid email profile", blank=True)
    # SAML 2.0
    saml_entity_id = models.CharField(max_length=255, blank=True, help_text="The IdP's entity id (Issuer).")
    saml_sso_url = models.URLField(blank=True, help_text="The IdP's single sign-on URL (HTTP-Redirect binding).")
    saml_idp_certificates = models.TextField(
        blank=True, help_text="The IdP's signing certificates, PEM, one or more (during a rotation: old and new).")
    saml_sign_requests = models.BooleanField(default=False, help_text="Sign AuthnRequests with the SP key below.")
    saml_sp_private_key = secrets.EncryptedTextField(blank=True)
    saml_sp_certificate = models.TextField(blank=True, help_text="The SP's certificate, PEM (in our metadata).")
    # Who the asserted person is
    identity_claim = models.CharField(
        max_length=128, default="sub", help_text="OIDC claim or SAML attribute holding the value mapped below; "
        "for SAML, 'NameID' means the subject's NameID.")
    maps_to = models.CharField(max_length=16, choices=MapsTo.choices, default=MapsTo.SOURCED_ID)
    lti_issuer = models.CharField(max_length=255, blank=True, help_text="With LTI subject mapping: the LMS "
                                  "platform's issuer (blank: any LTI platform of this district).")
    email_domains = models.CharField(
        max_length=500, blank=True, help_text="Comma-separated. Emails this provider asserts must be in one of "
        "them; the login page also finds the district by these domains.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["district", "display_name"]
        constraints = [
            models.UniqueConstraint(fields=["district", "slug"], name="identity_provider_slug_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.get_kind_display()}, {self.district})"

    @property
    def issuer(self) -> str:
        """The issuer an `ExternalIdentity` of this provider records."""
        return self.oidc_issuer if self.kind == self.Kind.OIDC else self.saml_entity_id

    @property
    def domains(self) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in self.email_domains.split(",") if d.strip()]

    @property
    def mapped_claim(self) -> str:
        """The claim (OIDC) or attribute (SAML) whose value is mapped. `identity_claim` defaults to "sub", an
        OIDC claim: for SAML, blank or "sub" means the subject's NameID (a SAML assertion has no "sub")."""
        claim = (self.identity_claim or "").strip()
        if self.kind == self.Kind.SAML:
            return "NameID" if claim in {"", "sub"} else claim
        return claim or "sub"

    @property
    def idp_certificates(self) -> list[str]:
        """Each PEM certificate in `saml_idp_certificates` (python3-saml's x509certMulti)."""
        end = "-----END CERTIFICATE-----"
        return [block.strip() + "\n" + end for block in self.saml_idp_certificates.split(end) if block.strip()]
