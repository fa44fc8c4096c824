"""Domain signals of live classes, for other apps to observe without classrooms importing them."""

from django.dispatch import Signal

# A poll answer was stored (not sent for a replayed one). kwargs: answer (PollAnswer), session_id. Sent inside
# the answer's transaction, so a receiver's own writes (an outbox row) commit or roll back with it.
poll_answered = Signal()
