"""Live media: a creator's channel, its streams and the roles of people around it.

Streams are not school data: they are not tenant-scoped by institution but by channel ownership and roles.
"""

from django.conf import settings
from django.db import models


class Channel(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="channels")
    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class ChannelRole(models.Model):
    """Non-owner roles on a channel: moderators (non-admin) and subscribers/members."""

    class Kind(models.TextChoices):
        MODERATOR = "moderator", "Moderator"
        MEMBER = "member", "Subscriber/member"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="roles")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="channel_roles")
    role = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "user", "role"], name="channel_role_unique")]

    def __str__(self) -> str:
        return f"{self.user} – {self.get_role_display()} of {self.channel}"


class Stream(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        LIVE = "live", "Live"
        ENDED = "ended", "Ended"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="streams")
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    scheduled_start = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    player_url = models.URLField(blank=True, help_text="HLS or embed URL from the external video provider")
    recording_url = models.URLField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-scheduled_start", "-id"]

    def __str__(self) -> str:
        return self.title


class Follow(models.Model):
    """A user following a channel: notified when it goes live (per their preferences); the follow's age
    gates followers-only chat."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="follows")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="follows")
    created_at = models.DateTimeField(auto_now_add=True)
    notify = models.BooleanField(default=True, help_text="Notify this follower when the channel goes live")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "user"], name="follow_unique")]
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user} follows {self.channel}"


class NotificationPreference(models.Model):
    """How one user wants to hear that a followed channel went live (per channel: Follow.notify). A user
    without a row gets the defaults (both on)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="stream_notification_preference")
    live_in_page = models.BooleanField(default=True, help_text="A notice in open Aula pages when a channel goes live")
    live_email = models.BooleanField(default=True, help_text="An email when a channel goes live")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Notification preferences of {self.user}"


class LiveNotification(models.Model):
    """One delivery of one "channel is live" notice to one follower by one channel (in page, email).

    Unique per (stream, user, kind): a fan-out or an email chunk that runs twice finds the row and does not
    notify twice. Not audit-logged: stream notices are not school records, and there is one row per follower."""

    class Kind(models.TextChoices):
        IN_PAGE = "in_page", "In page"
        EMAIL = "email", "Email"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RETRYING = "retrying", "Retrying after a transient error"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="notifications")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_notifications")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    tries = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "user", "kind"], name="live_notification_unique")]
        indexes = [models.Index(fields=["stream", "kind", "status"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} notice of {self.stream} to {self.user}: {self.status}"
