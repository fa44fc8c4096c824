"""Domain signals of live classes, for other apps to observe without classrooms importing them."""

from django.dispatch import Signal

# A poll answer was stored (not sent for a replayed one), after its commit. kwargs: answer (PollAnswer),
# session_id, dims (school, course, segment = course role, grade; empty person dimensions for an anonymous
# poll). Receivers must not query per answer: thousands arrive within seconds.
poll_answered = Signal()

# A live session ended, after its commit. kwargs: session_id. (Exams sends its quiz results to the LMS.)
session_ended = Signal()
