"""The durable side of a room: its sequence counter and its event log (the source for resume)."""

from django.db import models


class RoomSequence(models.Model):
    """Last sequence number handed out in a room. Its row lock orders a room's writes."""

    room_key = models.CharField(max_length=90, primary_key=True)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.room_key}@{self.last_seq}"


class RoomEvent(models.Model):
    """Every event that matters, stored before it is broadcast; clients resume from here by seq."""

    room_key = models.CharField(max_length=90)
    seq = models.BigIntegerField()
    type = models.CharField(max_length=64)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room_key", "seq"], name="room_event_seq_unique")]
        ordering = ["room_key", "seq"]

    def __str__(self) -> str:
        return f"{self.room_key}#{self.seq} {self.type}"
