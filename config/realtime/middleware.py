"""WebSocket handshake guards: an exact origin allowlist and session authentication.

The origin check compares scheme, host and port exactly against AULA_WS_ALLOWED_ORIGINS (Channels'
AllowedHostsOriginValidator treats a leading-dot ALLOWED_HOSTS entry as "any subdomain", which would
admit sibling sites). The auth middleware resolves the user once at connect and does not wrap `send`,
so broadcasts pay nothing per frame for it (Channels' SessionMiddleware wraps every send).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from config.realtime.batching import coalesced

logger = logging.getLogger("aula.realtime.security")

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(value: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(value.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname.lower(), port


def origin_allowed(origin: str | None, allowlist: list[str] | None = None) -> bool:
    if not origin:
        return False
    candidate = normalise_origin(origin)
    if candidate is None:
        return False
    allowed = {normalise_origin(o) for o in (allowlist if allowlist is not None else settings.AULA_WS_ALLOWED_ORIGINS)}
    return candidate in allowed


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class OriginAllowlistMiddleware:
    """Refuses the handshake (HTTP 403) unless the Origin header is exactly an allowed origin."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(_header(scope, b"origin")):
            logger.warning("websocket refused: origin not allowed path=%s", scope.get("path"))
            await _count_origin_refusal(scope.get("path", ""))
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4403})
            return
        return await self.app(scope, receive, send)


async def _count_origin_refusal(path: str) -> None:
    from config.realtime import stats

    try:
        await stats.record_origin_refusal(path)
    except Exception:  # counting never changes the answer
        logger.debug("origin refusal not counted", exc_info=True)


def _session_data(keys: list[str]) -> dict[str, dict]:
    """Sync, for many session keys at once: one cache round trip (cache and cached_db engines; the
    database only for misses, which refills the cache). An unknown or expired session reads as {}."""
    from importlib import import_module

    engine = import_module(settings.SESSION_ENGINE)
    stores = {key: engine.SessionStore(key) for key in dict.fromkeys(keys) if key}
    data: dict[str, dict] = {}
    if stores and hasattr(engine.SessionStore, "cache_key"):
        first = next(iter(stores.values()))
        by_cache_key = {store.cache_key: key for key, store in stores.items()}
        try:
            data = {by_cache_key[k]: v for k, v in first._cache.get_many(list(by_cache_key)).items()
                    if isinstance(v, dict)}
        except Exception:  # cache away: fall back to loading each (the database for cached_db)
            data = {}
    for key, store in stores.items():
        if key not in data:
            data[key] = store.load()  # applies expiry: a flushed or expired session has no user id
    return data


def users_from_sessions(keys: list[str | None]) -> list[tuple]:
    """Sync and batched (a join storm's connects go together, config/realtime/batching.py): for each
    session key, (user, session_key) or (AnonymousUser(), None). Same rules as django.contrib.auth.get_user:
    a known backend, an active user, and a password unchanged since login (the session auth hash)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
    from django.utils.crypto import constant_time_compare

    data = _session_data([k for k in keys if k])
    wanted: dict[str, set] = {}
    for key in keys:
        session = data.get(key) if key else None
        if session and session.get(BACKEND_SESSION_KEY) in settings.AUTHENTICATION_BACKENDS \
                and SESSION_KEY in session:
            wanted.setdefault(session[BACKEND_SESSION_KEY], set()).add(session[SESSION_KEY])
    users: dict[tuple[str, str], object] = {}
    for backend_path, ids in wanted.items():
        backend = load_backend(backend_path)
        batch = getattr(backend, "get_users", None)
        found = batch(list(ids)) if batch is not None else {i: backend.get_user(i) for i in ids}
        users.update({(backend_path, str(i)): u for i, u in found.items() if u is not None})
    out = []
    for key in keys:
        session = data.get(key) if key else None
        user = users.get((session.get(BACKEND_SESSION_KEY), str(session.get(SESSION_KEY)))) if session else None
        session_hash = session.get(HASH_SESSION_KEY) if session else None
        if user is None or not session_hash or not constant_time_compare(session_hash, user.get_session_auth_hash()):
            out.append((AnonymousUser(), None))
        else:
            out.append((user, key))
    return out


_user_from_session = coalesced(users_from_sessions)


class SessionUserMiddleware:
    """Puts `user` and `session_key` into the scope from the Django session cookie."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            cookies = parse_cookies(_header(scope, b"cookie") or "")
            user, session_key = await _user_from_session(cookies.get(settings.SESSION_COOKIE_NAME))
            scope = {**scope, "user": user, "session_key": session_key}
        return await self.app(scope, receive, send)


def parse_cookies(raw: str) -> dict[str, str]:
    from http.cookies import SimpleCookie

    jar = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:
        return {}
    return {k: m.value for k, m in jar.items()}


def session_still_valid(session_key: str | None, user_id: int) -> bool:
    """Sync: is this socket's login still live (not logged out, not expired, same user, still active)?"""
    return sessions_still_valid([(session_key, user_id)])[0]


def sessions_still_valid(pairs: list[tuple[str | None, int]]) -> list[bool]:
    """Sync, batched for a room's sockets: one cache round trip for the sessions (cached_db; the database
    only for misses) and one query for the users. A session is valid while it still names the user, the
    user is active and the password has not changed since login (Django's session auth hash)."""
    from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
    from django.utils.crypto import constant_time_compare

    from classrooms.models import User

    data = _session_data([key for key, _ in pairs if key])
    wanted = {uid for key, uid in pairs if key and str(data[key].get(SESSION_KEY)) == str(uid)}
    # `= ANY(array)`: one parameter, however many sockets (Django's `pk__in` builds one per id: a visible
    # share of a 5,000-viewer room's re-check).
    users = {u.pk: u for u in User.objects.raw(
        "SELECT id, password FROM classrooms_user WHERE id = ANY(%s) AND is_active", [[int(i) for i in wanted]])}
    out = []
    for key, uid in pairs:
        user = users.get(uid) if key else None
        session = data.get(key) or {}
        out.append(user is not None and str(session.get(SESSION_KEY)) == str(uid)
                   and constant_time_compare(session.get(HASH_SESSION_KEY) or "", user.get_session_auth_hash()))
    return out
