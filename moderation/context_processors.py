"""Template context for the site header: does this person have a review queue (asked once per page, lazily)."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject


def moderation(request):
    def reviewer() -> bool:
        from moderation.selectors import is_reviewer

        known = getattr(request, "moderation_reviewer", None)  # the queue page asked already
        if known is not None:
            return known
        user = getattr(request, "user", None)
        return bool(user is not None and user.is_authenticated and is_reviewer(user))

    return {"is_moderation_reviewer": SimpleLazyObject(reviewer)}
