"""Timed exams. The foundation holds the exam itself; attempts, questions and grading build on it."""

from django.db import models

from classrooms.models import TenantQuerySet


class Exam(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        CLOSED = "closed", "Closed"

    institution = models.ForeignKey("classrooms.Institution", on_delete=models.PROTECT, related_name="+")
    course = models.ForeignKey("classrooms.Course", on_delete=models.CASCADE, related_name="exams")
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    opens_at = models.DateTimeField(null=True, blank=True)
    closes_at = models.DateTimeField(null=True, blank=True)
    time_limit_minutes = models.PositiveIntegerField(default=60)
    attempts_allowed = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-opens_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(closes_at__isnull=True) | models.Q(opens_at__isnull=True)
                | models.Q(closes_at__gt=models.F("opens_at")),
                name="exam_closes_after_opens",
            ),
        ]

    def __str__(self) -> str:
        return self.title
