"""Wire protocol constants shared by every real-time route (documented in docs/protocol.md)."""

from __future__ import annotations

from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field

from config.realtime.transport import encode_frame


class CloseCode(IntEnum):
    """Aula's close codes. Daphne lets an application send only 1000 and 3000–4999, so ours are 4xxx."""

    NORMAL = 1000
    UNAUTHENTICATED = 4401  # not signed in, logged out, session expired, account disabled
    FORBIDDEN = 4403  # origin not allowed, not enrolled, other tenant
    NOT_FOUND = 4404  # the room does not exist (or is not visible to you)
    REMOVED = 4408  # removed from this session by the teacher; rejoin refused
    ENDED = 4409  # the session has ended; reconnecting is refused
    TOO_MANY_CONNECTIONS = 4429  # per-user connection cap reached
    SERVER_RESTART = 4503  # server going away; reconnect with backoff


class ErrorCode:
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELDS = "invalid_fields"
    TOO_LARGE = "too_large"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID = "invalid"
    UNAVAILABLE = "temporarily_unavailable"
    SERVER_ERROR = "server_error"


def error_frame(code: str, message: str, *, ref: str | None = None, **details) -> str:
    return encode_frame("error", {"code": code, "message": message, "ref": ref, "details": details})


def ack_frame(ref: str | None, **data) -> str:
    return encode_frame("ack", {"ref": ref, **data})


class Inbound(BaseModel):
    """Base of every client → server message: a `type` and an optional client reference echoed in replies."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: str
    ref: str | None = Field(default=None, max_length=64)


class Ping(Inbound):
    pass
