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
    # Set while the recording is taken down (moderation/dmca.py): no page or event shows or plays it.
    recording_disabled_at = models.DateTimeField(null=True, blank=True)
    recording_disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Exact peak of distinct concurrent viewers (streaming/audience.py), persisted throttled and at the end.
    peak_viewers = models.PositiveIntegerField(default=0)
    peak_viewers_at = models.DateTimeField(null=True, blank=True)
    # Chat settings, set by the creator and moderators (streaming.services.chat_settings_set).
    chat_slow_seconds = models.PositiveIntegerField(default=0, help_text="Seconds between two messages of one person")
    chat_followers_only = models.BooleanField(default=False)
    chat_follow_minutes = models.PositiveIntegerField(default=0, help_text="Minimum follow age for followers-only")
    chat_members_only = models.BooleanField(default=False)
    chat_emote_only = models.BooleanField(default=False)
    chat_hold_all = models.BooleanField(default=False, help_text="Hold every message for review")
    chat_lockdown = models.BooleanField(default=False)
    # The settings lockdown overrode, as they were when it started; lifting lockdown puts them back.
    chat_before_lockdown = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-scheduled_start", "-id"]

    def __str__(self) -> str:
        return self.title

    @property
    def recording_available(self) -> bool:
        return bool(self.recording_url) and self.recording_disabled_at is None


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


class StreamChatMessage(models.Model):
    """One chat message of a stream. `cseq` is the stream chat's own order (given when it becomes visible)."""

    class Status(models.TextChoices):
        VISIBLE = "visible", "Visible"
        HELD = "held", "Held for review"
        REJECTED = "rejected", "Rejected"

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="chat_messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_messages")
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VISIBLE)
    cseq = models.BigIntegerField(null=True, blank=True)
    client_ref = models.CharField(max_length=64, blank=True)
    sentiment = models.FloatField(null=True, blank=True, help_text="VADER compound score, -1..1")
    created_at = models.DateTimeField(auto_now_add=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream", "author", "client_ref"], condition=~models.Q(client_ref=""),
                                    name="stream_chat_ref_unique"),
            models.UniqueConstraint(fields=["stream", "cseq"], name="stream_chat_cseq_unique"),
        ]
        indexes = [models.Index(fields=["stream", "cseq"]), models.Index(fields=["stream", "status"])]

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.cseq or '-'} by {self.author_id}"


class StreamChatBan(models.Model):
    """A person barred from a channel's stream chats: a timeout until `until`, or a ban when `until` is empty."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="chat_bans")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_chat_bans")
    until = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "user"], name="stream_chat_ban_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} barred from {self.channel_id}"


class StreamPoll(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="polls")
    question = models.CharField(max_length=300)
    options = models.JSONField(help_text="List of option labels (single choice)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.question


class StreamPollVote(models.Model):
    poll = models.ForeignKey(StreamPoll, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    choice = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["poll", "user"], name="stream_poll_vote_once")]


class StreamQuestion(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ANSWERED = "answered", "Answered"
        DISMISSED = "dismissed", "Dismissed"
        HELD = "held", "Held for review"  # by moderation: on the board only once a moderator approves it

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="questions")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    body = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    upvotes = models.PositiveIntegerField(default=0)
    sentiment = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["stream", "status", "-upvotes"])]


class StreamQuestionVote(models.Model):
    question = models.ForeignKey(StreamQuestion, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["question", "user"], name="stream_question_vote_once")]
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
