"""Exceptions raised by the crmbus client.

Every error the server answers is an RFC 9457 problem document with a stable ``code``; it is
raised as a :class:`CrmbusError` subclass chosen by that code, carrying ``status``, ``code``,
``detail`` and ``errors`` (every violation, as ``FieldError(field, message)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One violation: which field, and what is wrong with it."""

    field: str
    message: str


class CrmbusError(Exception):
    """An error answered by the crmbus server, or the server could not be reached."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail
        self.status = status
        self.code = code
        self.errors: list[FieldError] = list(errors or [])
        self.problem: dict[str, Any] = dict(problem or {})
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{self.detail}"
        if self.code:
            head = f"{head} [{self.code}, HTTP {self.status}]"
        lines = [head]
        # The detail often already names the fields; list each with its message anyway.
        for e in self.errors:
            lines.append(f"  {e.field}: {e.message}")
        return "\n".join(lines)


class ServerUnreachable(CrmbusError):
    """The server could not be reached (connection refused, timeout, 502/503/504), after the
    retries that are safe (a publish is retried with the same event id, so the server's
    producer dedupe stores it once)."""


class InvalidEvent(CrmbusError):
    """The server refused the event as it is (``invalid_event``, ``invalid_request``...)."""


class SchemaViolation(InvalidEvent):
    """The event's ``data`` does not match the JSON Schema registered for its type;
    ``errors`` lists every violation (``data/amount: ...``). Nothing was stored."""


class NotFound(CrmbusError):
    """Something named does not exist (``topic_not_found``, ``subscription_not_found``...)."""


class TopicNotFound(NotFound):
    """The topic does not exist: create it (``crmbus topics create NAME``) or start the
    server with ``server.auto_create_topics = true``."""


class SubscriptionNotFound(NotFound):
    """The subscription does not exist."""


class Conflict(CrmbusError):
    """The request conflicts with what exists (a subscription of the same name on another
    topic, an incompatible schema...)."""


class VersionConflict(Conflict):
    """The event stated its subject's version (``expected_version`` / ``expectedversion``)
    and the subject has moved on: nothing was written. ``current_version`` is the version
    now: read the stream from the version you had, decide again, and publish stating it."""

    @property
    def current_version(self) -> int | None:
        value = self.problem.get("current_version")
        return int(value) if isinstance(value, int) else None


class Unsupported(CrmbusError):
    """The server's backend cannot do this (per-subject streams and expected versions need
    the embedded log; other backends refuse them, HTTP 501, rather than fake them)."""


class Unauthorized(CrmbusError):
    """No API key, or one that is unknown, revoked or expired (HTTP 401): pass
    ``api_key=`` or set ``CRMBUS_API_KEY``."""


class Forbidden(CrmbusError):
    """The API key lacks the scope the call needs (HTTP 403); ``detail`` names it."""


class RateLimited(CrmbusError):
    """Over a rate limit of the key or the topic (HTTP 429); ``retry_after`` is the
    number of seconds the server said to wait, when it said."""

    retry_after: float | None = None


class HandlerError(Exception):
    """Raised by the worker's configuration checks (e.g. a group subscribed to two topics)."""


_BY_CODE: dict[str, type[CrmbusError]] = {
    "schema_violation": SchemaViolation,
    "invalid_event": InvalidEvent,
    "invalid_request": InvalidEvent,
    "topic_not_found": TopicNotFound,
    "subscription_not_found": SubscriptionNotFound,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "rate_limited": RateLimited,
    "version_conflict": VersionConflict,
    "unsupported": Unsupported,
}


def from_problem(status: int, body: Any, fallback: str) -> CrmbusError:
    """The exception for an error answer: ``body`` is the parsed problem document (or
    anything else the server sent)."""
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    detail = body.get("detail") or body.get("title") or fallback
    errors = [
        FieldError(str(e.get("field", "")), str(e.get("message", "")))
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    cls: type[CrmbusError] = _BY_CODE.get(str(code), CrmbusError)
    if cls is CrmbusError:
        if status in (502, 503, 504):
            cls = ServerUnreachable
        elif status == 404:
            cls = NotFound
        elif status == 409:
            cls = Conflict
        elif status in (400, 413, 415, 422):
            cls = InvalidEvent
    return cls(detail, status=status, code=code, errors=errors, problem=body)
