"""The contract between moderation and the apps that own user text (class chat, stream chat, Q&A, ...).

Moderation never imports a domain app's services: each app registers, in its AppConfig.ready(), an adapter
per source that can find a piece of content and show, hide, mask or restore it, and enforce a timeout or
ban in its rooms. Moderation authorises the reviewer itself, so adapters act as the system (no actor check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from moderation.pipeline import Context


@dataclass(frozen=True)
class ContentRef:
    source: str
    object_id: str
    ctx: Context
    author_id: int
    text: str
    visible: bool


class ContentAdapter(Protocol):
    def resolve(self, object_id: str, viewer=None) -> ContentRef | None:
        """The content, or None if it does not exist or `viewer` (when given) cannot see it."""

    def approve(self, object_id: str, actor) -> None:
        """Held content goes out to the room (a no-op when it is already visible)."""

    def remove(self, object_id: str, actor, reason: str) -> None:
        """Nobody but moderators sees it any more (held content is rejected)."""

    def restore(self, object_id: str, actor, text: str) -> None:
        """Undo `remove` or `censor`: `text` (as sent, from the queue item) is shown again."""

    def censor(self, object_id: str, actor, text: str) -> None:
        """Show `text` (the masked form) instead of the original."""

    def restrict(self, *, user_id: int, ref: ContentRef, scope: str, until, actor, reason: str) -> None:
        """Enforce a timeout (`until`) or ban (`until` None) in the app's own rooms, if it has its own
        mechanism; class rooms read moderation's Sanction rows directly and do nothing here."""

    def unrestrict(self, *, user_id: int, ref: ContentRef, scope: str, actor) -> None:
        ...

    def notify_author(self, ref: ContentRef, type_: str, data: dict) -> None:
        """Tell the author, live if they are connected (pending review, approved, removed, sanction)."""


_adapters: dict[str, ContentAdapter] = {}


def register(source: str, adapter: ContentAdapter) -> None:
    _adapters[source] = adapter


def adapter(source: str) -> ContentAdapter:
    try:
        return _adapters[source]
    except KeyError:
        raise LookupError(f"no content adapter registered for {source!r}") from None


def resolve(source: str, object_id: str, viewer=None) -> ContentRef | None:
    found = _adapters.get(source)
    return found.resolve(str(object_id), viewer) if found else None
