"""Domain signals of exams, for other apps to observe without exams importing them."""

from django.dispatch import Signal

# A deadline wave submitted these attempts together (a bulk update: no post_save per attempt). kwargs:
# attempts (list of Attempt). Sent inside the closing transaction: a receiver's writes commit with it.
attempts_submitted = Signal()
