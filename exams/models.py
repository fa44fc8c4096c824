"""Timed exams: authoring (questions, banks, sections, settings), accommodations, attempts, answers,
the hash-chained integrity log, grading and the outbound LMS grade-sync queue.

Every time is absolute UTC. An attempt's deadline is fixed from the student's own start (plus their
accommodations) and capped by the exam's close, unless the close was extended for that student.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from classrooms.models import TenantQuerySet


class Exam(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        CLOSED = "closed", "Closed"

    class Expiry(models.TextChoices):
        AUTO_SUBMIT = "auto_submit", "Submit automatically at the deadline"
        GRACE = "grace", "Grace period in which only Submit is allowed"
        DISCARD = "discard", "Unsubmitted attempts are not counted"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    course = models.ForeignKey("classrooms.Course", on_delete=models.CASCADE, related_name="exams")
    title = models.CharField(max_length=200)
    instructions = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    opens_at = models.DateTimeField(null=True, blank=True)
    closes_at = models.DateTimeField(null=True, blank=True)
    time_limit_minutes = models.PositiveIntegerField(default=60)
    attempts_allowed = models.PositiveSmallIntegerField(default=1)
    shuffle_questions = models.BooleanField(default=True)
    shuffle_options = models.BooleanField(default=True)
    sequential = models.BooleanField(default=False, help_text="No going back to earlier questions.")
    expiry_policy = models.CharField(max_length=16, choices=Expiry.choices, default=Expiry.AUTO_SUBMIT)
    grace_minutes = models.PositiveSmallIntegerField(default=0)
    show_review = models.BooleanField(default=False, help_text="Students may review answers after release.")
    grades_released_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-opens_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(closes_at__isnull=True) | Q(opens_at__isnull=True) | Q(closes_at__gt=models.F("opens_at")),
                name="exam_closes_after_opens",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class QuestionBank(models.Model):
    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    course = models.ForeignKey("classrooms.Course", on_delete=models.CASCADE, related_name="question_banks")
    title = models.CharField(max_length=200)

    objects = TenantQuerySet.as_manager()

    def __str__(self) -> str:
        return self.title


class Question(models.Model):
    class Kind(models.TextChoices):
        SINGLE = "single", "Single choice"
        MULTIPLE = "multiple", "Multiple choice"
        TRUE_FALSE = "true_false", "True / false"
        NUMERIC = "numeric", "Numeric"
        SHORT = "short", "Short text"
        ESSAY = "essay", "Essay (graded by hand)"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    bank = models.ForeignKey(QuestionBank, on_delete=models.CASCADE, related_name="questions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    prompt = models.TextField()
    options = models.JSONField(default=list, blank=True, help_text="Choice labels, in authoring order.")
    correct = models.JSONField(default=list, blank=True,
                               help_text="Indexes of correct options; [true]/[false]; accepted short answers.")
    numeric_answer = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    numeric_tolerance = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    points = models.DecimalField(max_digits=7, decimal_places=2, default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    def __str__(self) -> str:
        return self.prompt[:60]


class Section(models.Model):
    """A part of an exam: fixed questions and/or N questions drawn at random from a bank."""

    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="sections")
    position = models.PositiveSmallIntegerField()
    title = models.CharField(max_length=200, blank=True)
    questions = models.ManyToManyField(Question, blank=True, related_name="+")
    draw_bank = models.ForeignKey(QuestionBank, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    draw_count = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["exam", "position"]
        constraints = [models.UniqueConstraint(fields=["exam", "position"], name="section_position_unique")]


class Accommodation(models.Model):
    """A student's standing accommodation, applied to every exam."""

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    student = models.ForeignKey("classrooms.User", on_delete=models.CASCADE, related_name="exam_accommodations")
    time_multiplier = models.DecimalField(max_digits=4, decimal_places=2, default=1)
    extra_minutes = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=200, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["institution", "student"], name="accommodation_unique"),
            models.CheckConstraint(condition=Q(time_multiplier__gte=1), name="accommodation_multiplier_min"),
        ]


class CloseExtension(models.Model):
    """The exam's close moved later for one student (so an accommodation is not cut short)."""

    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="close_extensions")
    student = models.ForeignKey("classrooms.User", on_delete=models.CASCADE, related_name="+")
    closes_at = models.DateTimeField()
    granted_by = models.ForeignKey("classrooms.User", on_delete=models.SET_NULL, null=True, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exam", "student"], name="close_extension_unique")]


class Attempt(models.Model):
    class State(models.TextChoices):
        NOT_STARTED = "not_started", "Not started"
        IN_PROGRESS = "in_progress", "In progress"
        OVERDUE = "overdue", "Overdue (grace: submit only)"
        SUBMITTED = "submitted", "Submitted"
        ABANDONED = "abandoned", "Abandoned (not counted)"

    class FinishReason(models.TextChoices):
        STUDENT = "student", "Submitted by the student"
        DEADLINE = "deadline", "Submitted automatically at the deadline"
        GRACE_END = "grace_end", "Submitted automatically at the end of the grace period"
        DISCARDED = "discarded", "Not submitted before the deadline"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    exam = models.ForeignKey(Exam, on_delete=models.CASCADE, related_name="attempts")
    student = models.ForeignKey("classrooms.User", on_delete=models.CASCADE, related_name="exam_attempts")
    number = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(max_length=16, choices=State.choices, default=State.NOT_STARTED)
    seed = models.BigIntegerField()
    layout = models.JSONField(default=list, blank=True,
                              help_text="[{question, options: [authoring indexes in display order]}] from the seed")
    started_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True, db_index=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    extra_minutes = models.PositiveIntegerField(default=0, help_text="Granted during the attempt.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="The recorded finish (the deadline "
                                       "when the server closed the attempt).")
    finalized_at = models.DateTimeField(null=True, blank=True, help_text="When the server actually finalised.")
    finish_reason = models.CharField(max_length=16, choices=FinishReason.choices, blank=True)
    score = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    max_score = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    needs_manual_grading = models.BooleanField(default=False)
    graded_at = models.DateTimeField(null=True, blank=True)
    log_head = models.CharField(max_length=64, blank=True, help_text="Hash of the last integrity log entry.")
    log_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["exam", "student", "number"]
        constraints = [models.UniqueConstraint(fields=["exam", "student", "number"], name="attempt_number_unique")]
        indexes = [
            models.Index(fields=["state", "deadline"]),
            models.Index(fields=["state", "grace_until"]),
            # Submitted but not graded yet: the after-close sweeper's work list (tiny, unlike all attempts).
            models.Index(fields=["finalized_at"], condition=Q(state="submitted", max_score__isnull=True),
                         name="attempt_after_close_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.exam} – {self.student} #{self.number}"

    @property
    def is_open(self) -> bool:
        return self.state in {self.State.IN_PROGRESS, self.State.OVERDUE}


class Answer(models.Model):
    """The latest saved answer to one question of one attempt, with a per-answer version."""

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="+")
    version = models.PositiveIntegerField()
    value = models.JSONField(null=True, blank=True)
    flagged = models.BooleanField(default=False)
    saved_at = models.DateTimeField(auto_now=True)
    client_saved_at = models.DateTimeField(null=True, blank=True)
    points = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    graded_by = models.ForeignKey("classrooms.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    feedback = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["attempt", "question"], name="answer_unique")]


class IntegrityEvent(models.Model):
    """Every interaction with an attempt, in order, hash-chained per attempt (tamper-evident)."""

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="integrity_log")
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=32)
    server_time = models.DateTimeField()
    client_time = models.DateTimeField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["attempt", "index"]
        constraints = [models.UniqueConstraint(fields=["attempt", "index"], name="integrity_index_unique")]


class GradeSync(models.Model):
    """Outbound LMS grade delivery for one result (an exam attempt, or a student's quiz score in a live session):
    idempotent per result, retried with backoff. Delivered over LTI AGS when the activity was placed in the LMS
    through LTI (`lti_link`), else to the grade webhook (exams/lms.py)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failing (retrying)"
        DEAD = "dead", "Gave up"
        NO_TARGET = "no_target", "No LMS connected"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    attempt = models.OneToOneField(Attempt, on_delete=models.CASCADE, related_name="grade_sync", null=True,
                                   blank=True)
    session = models.ForeignKey("classrooms.LiveSession", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="+", help_text="A live session's quiz score (with `student`).")
    student = models.ForeignKey("classrooms.User", on_delete=models.CASCADE, related_name="+")
    lti_link = models.ForeignKey("classrooms.LtiResourceLink", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="+", help_text="The LMS placement whose grade column receives it.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    idempotency_key = models.CharField(max_length=64, unique=True)
    payload = models.JSONField()
    tries = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    next_try_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "student"], condition=models.Q(session__isnull=False),
                                    name="grade_sync_session_student_unique"),
            models.CheckConstraint(condition=models.Q(attempt__isnull=False) | models.Q(session__isnull=False),
                                   name="grade_sync_has_source"),
        ]
        indexes = [models.Index(fields=["status", "next_try_at"])]

    @property
    def transport(self) -> str:
        return "lti" if self.lti_link_id else "webhook"


class Notification(models.Model):
    """One notice per attempt and kind (submitted, graded): the unique key makes a retry send once."""

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=32)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["attempt", "kind"], name="notification_once")]
