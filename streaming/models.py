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
