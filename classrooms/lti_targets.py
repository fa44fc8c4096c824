"""What a teacher can place in an LMS course (deep linking) and where a launch of it lands.

Classrooms registers live sessions; other apps register their own kinds from their AppConfig.ready (exams
registers exams), so that classrooms never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Target:
    kind: str
    id: int
    course_id: int
    title: str
    url: str                      # where a launch lands (a path in Aula)
    score_maximum: float | None   # a grade column in the LMS (AGS line item) when set
    detail: str = ""              # shown in the picker (when, how long)


class Provider(Protocol):
    def for_course(self, course_id: int) -> list[Target]: ...

    def get(self, target_id: int) -> Target | None: ...


_providers: dict[str, Provider] = {}


def register(kind: str, provider: Provider) -> None:
    _providers[kind] = provider


def kinds() -> list[str]:
    return list(_providers)


def for_course(course_id: int) -> list[Target]:
    return [t for p in _providers.values() for t in p.for_course(course_id)]


def get(kind: str, target_id: int) -> Target | None:
    provider = _providers.get(kind)
    return provider.get(target_id) if provider else None


class SessionTargets:
    """Live sessions: a launch opens the room; the class's quiz results become one LMS grade (percent correct)."""

    def _target(self, s) -> Target:
        from django.urls import reverse

        when = f"{s.scheduled_start:%Y-%m-%d %H:%M} UTC" if s.scheduled_start else s.get_status_display()
        return Target("session", s.pk, s.course_id, s.title, reverse("session-room", args=[s.pk]), 100.0,
                      f"Live session · {when}")

    def for_course(self, course_id: int) -> list[Target]:
        from classrooms.models import LiveSession

        return [self._target(s) for s in LiveSession.objects.filter(course_id=course_id).order_by("-id")[:200]]

    def get(self, target_id: int) -> Target | None:
        from classrooms.models import LiveSession

        s = LiveSession.objects.filter(pk=target_id).first()
        return self._target(s) if s else None
