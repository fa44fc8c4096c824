"""Domain signals of the streaming app, for observers (notifications, analytics) that the writer must not import."""

from django.dispatch import Signal

# Sent on commit when a stream goes live. kwargs: stream (streaming.models.Stream).
stream_went_live = Signal()
# Sent on commit when a stream ends. kwargs: stream.
stream_ended = Signal()
