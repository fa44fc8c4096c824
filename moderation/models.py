"""Moderation records: policies and pattern lists, the one review queue, sanctions and appeals, the audit chain.

Content lives in its own app (a class chat message, a stream chat message, a question); a queue item points
at it by `source` + `object_id` and keeps a snapshot of the text as it was screened. School content is
tenant-scoped by `institution` (the one scoping rule, classrooms.selectors.scoped); stream content by its
channel's owner and moderators (streaming.selectors.can_moderate).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from classrooms.models import TenantQuerySet


class Category(models.TextChoices):
    """What an item is about: the classifier's categories, a pattern list's hit, a user report."""

    OFFENSIVE = "offensive", "Offensive language"
    HARASSMENT = "harassment", "Harassment"
    SEXUAL = "sexual", "Sexual content"
    SELF_HARM = "self_harm", "Self-harm risk"
    SPAM = "spam", "Spam"
    PATTERN = "pattern", "Pattern list"
    REPORT = "report", "User report"
    DEGRADED = "degraded", "Unscreened (classifier down)"
    ROOM_RULE = "room_rule", "Held by the room's settings"


class Action(models.TextChoices):
    """What the pipeline does with a message, weakest first (the strongest applicable one wins)."""

    ALLOW = "allow", "Allow"
    NOTIFY = "notify", "Notify the teacher or moderators"
    FLAG = "flag", "Show, and queue for review"
    CENSOR = "censor", "Show with the matched words masked"
    HOLD = "hold", "Hold for review"
    BLOCK = "block", "Block"


ACTION_STRENGTH = {a: i for i, a in enumerate(Action.values)}


class Scoped(models.Model):
    """A policy or list applies to one scope: a school, one course in it, or a stream channel. With none of
    the three it is platform-wide (set by platform staff)."""

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="+")
    course = models.ForeignKey("classrooms.Course", on_delete=models.CASCADE, null=True, blank=True,
                               related_name="+", help_text="Only this course's rooms (needs its school too)")
    channel = models.ForeignKey("streaming.Channel", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="+")

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def scope_label(self) -> str:
        if self.course_id:
            return f"course {self.course_id}"
        if self.institution_id:
            return f"school {self.institution_id}"
        if self.channel_id:
            return f"channel {self.channel_id}"
        return "platform"


class ModerationPolicy(Scoped):
    """Per-category thresholds and the degraded-mode choice for one scope. A course's policy overrides its
    school's, which overrides the platform defaults (settings.AULA_MODERATION_THRESHOLDS)."""

    class FailMode(models.TextChoices):
        CLOSED = "closed", "Hold everything while the classifier is down"
        OPEN = "open", "Let messages through on pattern matching alone"

    # {"harassment": {"flag": 0.5, "hold": 0.7, "block": 0.95}, ...}; a missing level is not applied.
    thresholds = models.JSONField(default=dict, blank=True)
    fail_mode = models.CharField(max_length=8, choices=FailMode.choices, default=FailMode.OPEN)
    classifier_enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")

    class Meta:
        verbose_name_plural = "moderation policies"
        constraints = [
            models.UniqueConstraint(fields=["institution"], condition=Q(course__isnull=True, channel__isnull=True),
                                    name="modpolicy_one_per_school"),
            models.UniqueConstraint(fields=["course"], condition=Q(course__isnull=False),
                                    name="modpolicy_one_per_course"),
            models.UniqueConstraint(fields=["channel"], condition=Q(channel__isnull=False),
                                    name="modpolicy_one_per_channel"),
            models.UniqueConstraint(fields=["fail_mode"], condition=Q(institution__isnull=True, course__isnull=True,
                                                                      channel__isnull=True),
                                    name="modpolicy_one_platform"),
            models.CheckConstraint(condition=Q(course__isnull=True) | Q(institution__isnull=False),
                                   name="modpolicy_course_has_school"),
            models.CheckConstraint(condition=Q(channel__isnull=True) | Q(institution__isnull=True),
                                   name="modpolicy_school_or_channel"),
        ]

    def __str__(self) -> str:
        return f"Policy for {self.scope_label}"


class PatternList(Scoped):
    """A named list of terms, wildcards and regular expressions with one action."""

    name = models.CharField(max_length=120)
    action = models.CharField(max_length=8, choices=[(a, label) for a, label in Action.choices if a != "allow"],
                              default=Action.HOLD)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(course__isnull=True) | Q(institution__isnull=False),
                                   name="patternlist_course_has_school"),
            models.CheckConstraint(condition=Q(channel__isnull=True) | Q(institution__isnull=True),
                                   name="patternlist_school_or_channel"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_action_display()}, {self.scope_label})"


class PatternRule(models.Model):
    class Kind(models.TextChoices):
        TERM = "term", "Term (whole word, look-alikes folded)"
        WILDCARD = "wildcard", "Wildcard (* any letters, ? one letter)"
        REGEX = "regex", "Regular expression (on the folded text)"

    pattern_list = models.ForeignKey(PatternList, on_delete=models.CASCADE, related_name="rules")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TERM)
    pattern = models.CharField(max_length=300)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pattern_list", "id"]
        constraints = [models.UniqueConstraint(fields=["pattern_list", "kind", "pattern"], name="patternrule_unique")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.pattern}"


class Source(models.TextChoices):
    """Where a piece of user text was shown (or would have been)."""

    CLASS_CHAT = "class_chat", "Class chat"
    STREAM_CHAT = "stream_chat", "Stream chat"
    STREAM_QUESTION = "stream_question", "Stream Q&A"
    POLL_TEXT = "poll_text", "Poll answer"
    DISPLAY_NAME = "display_name", "Display name"
    WHITEBOARD = "whiteboard", "Whiteboard or notes"


class ModerationItem(models.Model):
    """One entry of the review queue: held or flagged content, or content users reported."""

    class Status(models.TextChoices):
        OPEN = "open", "Waiting"
        CLAIMED = "claimed", "Being reviewed"
        DECIDED = "decided", "Decided"

    class Reason(models.TextChoices):
        HELD = "held", "Held by the pipeline"
        FLAGGED = "flagged", "Flagged by the pipeline (shown)"
        REPORTED = "reported", "Reported by users"

    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        CONTEXT = "context", "Acceptable in educational context"
        REMOVE = "remove", "Remove"
        CENSOR = "censor", "Censor"
        WARN = "warn", "Warn the author"
        TIMEOUT = "timeout", "Time the author out"
        BAN = "ban", "Ban the author"

    class Tier(models.IntegerChoices):
        ROOM = 1, "Teacher or stream moderator"
        OWNER = 2, "School administrator or channel owner"
        TRUST_SAFETY = 3, "District or platform trust & safety"
        LEGAL = 4, "Legal"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="+")
    course = models.ForeignKey("classrooms.Course", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    channel = models.ForeignKey("streaming.Channel", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    source = models.CharField(max_length=16, choices=Source.choices)
    object_id = models.CharField(max_length=64, help_text="The content's id in its own app")
    room_id = models.BigIntegerField(null=True, blank=True, help_text="Live session or stream of the content")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    text = models.TextField(help_text="The text as screened (shown to reviewers only, escaped)")
    category = models.CharField(max_length=12, choices=Category.choices)
    scores = models.JSONField(default=dict, blank=True)
    matches = models.JSONField(default=list, blank=True)
    reason = models.CharField(max_length=8, choices=Reason.choices)
    visible = models.BooleanField(default=False, help_text="Others can see the content now")
    minors = models.BooleanField(default=False, help_text="Shown in a live class of minors")
    severity = models.PositiveSmallIntegerField(default=0, help_text="0-100")
    report_count = models.PositiveIntegerField(default=0)
    reporter_accuracy = models.FloatField(default=0.0)
    priority = models.IntegerField(default=0, db_index=True)
    tier = models.PositiveSmallIntegerField(choices=Tier.choices, default=Tier.ROOM)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    assigned_to = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    claimed_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(help_text="SLA: escalated to the next tier when still open at this time")
    escalated_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(max_length=8, choices=Decision.choices, blank=True)
    decision_note = models.CharField(max_length=500, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    reversed_at = models.DateTimeField(null=True, blank=True, help_text="The decision was undone (once)")
    # Bumped by every change: a page shows the version it read, and a stale claim or decision is refused.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "created_at"]
        permissions = [
            ("platform_trust_safety", "Review stream items at the trust & safety tier (platform staff)"),
            ("legal_review", "Review items escalated to the legal tier"),
        ]
        indexes = [
            models.Index(fields=["status", "-priority", "created_at"], name="moditem_queue"),
            models.Index(fields=["institution", "status"], name="moditem_school"),
            models.Index(fields=["channel", "status"], name="moditem_channel"),
            models.Index(fields=["status", "due_at"], name="moditem_due"),
        ]
        constraints = [
            # One open item per piece of content: reports and later hits join it.
            models.UniqueConstraint(fields=["source", "object_id"], condition=~Q(status="decided"),
                                    name="moditem_one_open_per_content"),
            models.CheckConstraint(condition=Q(institution__isnull=True) | Q(channel__isnull=True),
                                   name="moditem_school_or_channel"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_source_display()} ({self.get_category_display()})"


class UserReport(models.Model):
    """A person flagged a message they saw; the report joins the content's open item."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        UPHELD = "upheld", "Upheld"
        DISMISSED = "dismissed", "Dismissed"

    item = models.ForeignKey(ModerationItem, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=300, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "reporter"], name="userreport_once")]
        indexes = [models.Index(fields=["reporter", "outcome"])]


class Sanction(models.Model):
    """A consequence for a person (warning, timeout, ban) in a scope; reversible, appealable."""

    class Kind(models.TextChoices):
        WARN = "warn", "Warning"
        TIMEOUT = "timeout", "Timeout"
        BAN = "ban", "Ban"

    class Scope(models.TextChoices):
        ROOM = "room", "This class or stream"
        CHANNEL = "channel", "The whole channel"
        INSTITUTION = "institution", "The whole school"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    scope = models.CharField(max_length=12, choices=Scope.choices)
    institution = models.ForeignKey("classrooms.Institution", on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="+")
    course = models.ForeignKey("classrooms.Course", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    channel = models.ForeignKey("streaming.Channel", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    item = models.ForeignKey(ModerationItem, on_delete=models.SET_NULL, null=True, blank=True,
                             related_name="sanctions")
    reason = models.CharField(max_length=500)
    issued_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    revoke_reason = models.CharField(max_length=500, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "revoked_at"], name="sanction_user_live")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.user_id} ({self.get_scope_display()})"


class Appeal(models.Model):
    """The author asks for a decision to be looked at again; a different moderator decides."""

    class Status(models.TextChoices):
        OPEN = "open", "Waiting"
        UPHELD = "upheld", "Decision upheld"
        OVERTURNED = "overturned", "Decision overturned"

    item = models.ForeignKey(ModerationItem, on_delete=models.CASCADE, related_name="appeals")
    sanction = models.ForeignKey(Sanction, on_delete=models.SET_NULL, null=True, blank=True, related_name="appeals")
    appellant = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    statement = models.TextField(max_length=2000)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "appellant"], name="appeal_once_per_item")]


class AuditLedger(models.Model):
    """The head of one hash chain (a school's, a channel's, or the platform's): rows are locked to append."""

    key = models.CharField(max_length=32, primary_key=True)
    head = models.CharField(max_length=64, default="")
    count = models.PositiveBigIntegerField(default=0)


class AuditEntry(models.Model):
    """One moderation action, automated or human, append-only (a database trigger refuses UPDATE and
    DELETE) and hash-chained per ledger so that an edit made around the trigger is evident."""

    ledger = models.CharField(max_length=32)
    index = models.PositiveBigIntegerField()
    at = models.DateTimeField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, null=True, blank=True,
                              related_name="+", db_constraint=False)
    stage = models.CharField(max_length=16, help_text="classifier, patterns, pipeline, human, escalation, dmca, system")
    action = models.CharField(max_length=32)
    target_type = models.CharField(max_length=32)
    target_id = models.CharField(max_length=64)
    category = models.CharField(max_length=12, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    rule = models.CharField(max_length=120, blank=True, help_text="Pattern rule or model version")
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["ledger", "index"]
        constraints = [models.UniqueConstraint(fields=["ledger", "index"], name="modaudit_chain_order")]
        indexes = [models.Index(fields=["at"], name="modaudit_at"), models.Index(fields=["target_type", "target_id"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.ledger}#{self.index} {self.action}"


# --- DMCA (moderation/dmca.py) -------------------------------------------------------------------------


class DmcaMaterial(models.TextChoices):
    """Kinds of material a DMCA notice can name. Stream recordings are the only material Aula holds today;
    a clip or an upload would be one more kind here and one more entry in moderation.dmca.MATERIALS."""

    STREAM_RECORDING = "stream_recording", "Stream recording"


class DmcaCase(models.Model):
    """One piece of material taken down under 17 U.S.C. §512(c): its notices, the uploader's counter-notice,
    the statutory restoration window and its outcome. State changes only through moderation.dmca."""

    class Status(models.TextChoices):
        DISABLED = "disabled", "Material disabled"
        COUNTER = "counter", "Counter-notice received: restoration scheduled"
        COURT = "court", "Court action filed: stays disabled"
        RESTORED = "restored", "Material restored"

    material_type = models.CharField(max_length=32, choices=DmcaMaterial.choices)
    material_id = models.CharField(max_length=64)
    material_title = models.CharField(max_length=200, blank=True, help_text="As it was when the case opened")
    channel = models.ForeignKey("streaming.Channel", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+")
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="dmca_cases")
    ledger = models.CharField(max_length=32, help_text="The audit ledger of every step of this case")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DISABLED)
    created_at = models.DateTimeField()
    disabled_at = models.DateTimeField()
    counter_received_at = models.DateTimeField(null=True, blank=True)
    restore_not_before = models.DateTimeField(null=True, blank=True,
                                              help_text="Start of the 11th business day after the counter-notice")
    restore_by = models.DateTimeField(null=True, blank=True,
                                      help_text="End of the 14th business day after the counter-notice")
    court_action_at = models.DateTimeField(null=True, blank=True)
    court_action_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                        related_name="+")
    court_action_note = models.CharField(max_length=500, blank=True)
    restored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "DMCA case"
        constraints = [
            # A second notice about material already taken down joins its open case.
            models.UniqueConstraint(fields=["material_type", "material_id"], condition=~Q(status="restored"),
                                    name="dmcacase_one_open_per_material"),
            models.CheckConstraint(condition=Q(status="disabled") | Q(counter_received_at__isnull=False),
                                   name="dmcacase_counter_before_restore"),
        ]
        indexes = [models.Index(fields=["status", "restore_not_before"], name="dmcacase_due")]

    def __str__(self) -> str:
        return f"DMCA case #{self.pk} ({self.get_material_type_display()} {self.material_id})"


class DmcaNotice(models.Model):
    """A complete notice of claimed infringement (§512(c)(3)); incomplete ones are refused and never stored."""

    case = models.ForeignKey(DmcaCase, on_delete=models.PROTECT, related_name="notices")
    received_at = models.DateTimeField()
    signature = models.CharField(max_length=200)
    copyrighted_work = models.TextField(max_length=2000)
    material_url = models.CharField(max_length=500)
    description = models.TextField(max_length=2000, blank=True)
    complainant_name = models.CharField(max_length=200)
    complainant_address = models.TextField(max_length=500)
    complainant_phone = models.CharField(max_length=50)
    complainant_email = models.EmailField()
    good_faith = models.BooleanField(help_text="Good-faith belief that the use is not authorized")
    accurate_under_penalty = models.BooleanField(
        help_text="Accurate, and under penalty of perjury authorized to act for the owner")
    uploader_notified_at = models.DateTimeField(null=True, blank=True)
    counter_forwarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["received_at", "id"]
        verbose_name = "DMCA notice"

    def __str__(self) -> str:
        return f"Notice #{self.pk} on case #{self.case_id}"


class DmcaCounterNotice(models.Model):
    """The uploader's counter-notification (§512(g)(3)); one per case."""

    case = models.OneToOneField(DmcaCase, on_delete=models.PROTECT, related_name="counter_notice")
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                     related_name="+")
    received_at = models.DateTimeField()
    signature = models.CharField(max_length=200)
    material_identification = models.TextField(max_length=2000)
    material_location = models.CharField(max_length=500)
    mistake_under_penalty = models.BooleanField(
        help_text="Under penalty of perjury: good-faith belief of mistake or misidentification")
    name = models.CharField(max_length=200)
    address = models.TextField(max_length=500)
    phone = models.CharField(max_length=50)
    consents_to_jurisdiction = models.BooleanField()
    accepts_service = models.BooleanField()

    class Meta:
        verbose_name = "DMCA counter-notice"

    def __str__(self) -> str:
        return f"Counter-notice on case #{self.case_id}"


class DmcaStrike(models.Model):
    """The repeat-infringer ledger: one strike per case against its uploader, active until it expires or is
    removed (the material was restored after a counter-notice)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dmca_strikes")
    case = models.OneToOneField(DmcaCase, on_delete=models.PROTECT, related_name="strike")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "DMCA strike"
        indexes = [models.Index(fields=["user", "removed_at", "expires_at"], name="dmcastrike_active")]

    def __str__(self) -> str:
        return f"Strike on {self.user_id} (case #{self.case_id})"
