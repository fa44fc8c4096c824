"""System checks for Aula's own security settings (run by `manage.py check --deploy`)."""

from __future__ import annotations

from importlib.metadata import version

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from config.realtime.middleware import normalise_origin


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


@register(Tags.security, deploy=True)
def websocket_security(app_configs=None, **kwargs):
    issues = []
    origins = settings.AULA_WS_ALLOWED_ORIGINS
    if not origins:
        issues.append(Error("AULA_WS_ALLOWED_ORIGINS is empty: no browser can open a WebSocket.", id="aula.E001"))
    for origin in origins:
        if normalise_origin(origin) is None or not origin.startswith("https://") or "*" in origin:
            issues.append(Error(f"WebSocket origin {origin!r} is not an exact https:// origin.", id="aula.E002"))
    if _version_tuple(version("daphne")) < (4, 2, 2):
        issues.append(Error("daphne < 4.2.2 accepts unbounded WebSocket frames; upgrade.", id="aula.E003"))
    if not (1024 <= settings.AULA_WS_SERVER_MAX_BYTES <= 1048576):
        issues.append(Warning("AULA_WS_SERVER_MAX_BYTES should be at most 1 MiB.", id="aula.W001"))
    if settings.AULA_WS_MAX_MESSAGE_BYTES > settings.AULA_WS_SERVER_MAX_BYTES:
        issues.append(Warning("AULA_WS_MAX_MESSAGE_BYTES exceeds the server's frame limit.", id="aula.W002"))
    return issues
