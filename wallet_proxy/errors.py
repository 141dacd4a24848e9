"""One error hierarchy; `wallet_proxy.web.http` maps it to the SPEC's JSON errors in one handler."""
from __future__ import annotations

import json
import math


def release(exc: BaseException | None) -> None:
    """Drop the tracebacks of an error once it is answered, and of the errors it was raised from.

    A traceback holds every frame it passed through, and their locals hold the error again (the
    request's log line, the single flight that handed it to each waiter): a reference cycle, which
    only Python's cyclic garbage collector frees. Every error answer left 20-35 such objects; under
    overload (hundreds of refusals a second, each kept alive by its pacing) they survived into the
    oldest generation and made its collections take 100-200 ms every ~2 s, a stall of the whole
    event loop in which SessionM's answers waited unread (bench/RESULTS.md, "Overload (T4)").
    Answered, an error needs its code and message only; the log has had its traceback.
    """
    pending = [exc]
    seen = set()
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        pending += (error.__cause__, error.__context__)


class ApiError(Exception):
    """An error with an HTTP status and a stable code; `message` is safe to show a caller."""

    status = 500
    code = "internal"
    message = "internal error"
    headers: dict | None = None  # extra answer headers (e.g. Braze's X-RateLimit-* on the relay door)

    def __init__(self, message: str | None = None, *, retry_after: float | None = None,
                 details: dict | None = None, status: int | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.retry_after = retry_after
        self.details = details
        if status is not None:
            self.status = status

    def body(self) -> dict:
        """The JSON error object of the SPEC."""
        error = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"ok": False, "error": error}

    def encode(self) -> bytes:
        """The answer's body: compact JSON and a newline, whichever path answers."""
        return (json.dumps(self.body(), separators=(",", ":")) + "\n").encode()

    def retry_after_header(self) -> str | None:
        """Whole seconds for `Retry-After` (at least 1), or None when there is none."""
        return None if self.retry_after is None else str(max(1, math.ceil(self.retry_after)))


class InvalidRequest(ApiError):
    status, code, message = 400, "invalid_request", "invalid request"


def field_problems(messages, prefix: str = "") -> list[str]:
    """A validation error's messages (marshmallow's nested dict) as "dotted.path: reason" lines.

    The one formatter of field errors: request bodies and queries (400) and SessionM payloads (502)
    all name a bad field this way, e.g. "recipients.3.external_user_id: Missing data for required field."
    """
    if not isinstance(messages, dict):
        messages = {"_schema": messages}
    lines = []
    for name, value in messages.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            lines.extend(field_problems(value, path + "."))
        elif isinstance(value, (list, tuple)):
            lines.append(f"{path}: {' '.join(map(str, value))}")
        else:
            lines.append(f"{path}: {value}")
    return lines


def invalid_fields(what: str, messages) -> InvalidRequest:
    """A 400 naming every bad field of `what` (a body, a query) and why; `details` keeps the structure."""
    details = messages if isinstance(messages, dict) else {"_schema": messages}
    return InvalidRequest(f"invalid {what}: " + "; ".join(field_problems(details)), details=details)


class Unauthorized(ApiError):
    status, code, message = 401, "unauthorized", "missing or wrong credentials"


class BadSignature(ApiError):
    status, code, message = 403, "bad_signature", "missing or wrong sig for this user id"


class Forbidden(ApiError):
    status, code, message = 403, "forbidden", "this client may not use this route"


class NotFound(ApiError):
    status, code, message = 404, "not_found", "no such route"


class UserNotFound(ApiError):
    status, code, message = 404, "user_not_found", "SessionM does not know this user"


class MethodNotAllowed(ApiError):
    status, code, message = 405, "method_not_allowed", "method not allowed on this route"


class Conflict(ApiError):
    status, code, message = 409, "conflict", "conflict"


class UpstreamRefused(ApiError):
    """SessionM refused our request as invalid (VALIDATION, MISSING_DATA, ARGUMENT_ERROR inside a 200).

    Retrying the same request cannot help, so it is a 422, which Braze does not retry."""

    status, code, message = 422, "upstream_refused", "SessionM refused the request as invalid"


class PayloadTooLarge(ApiError):
    status, code, message = 413, "payload_too_large", "request body too large"


class UnsupportedMediaType(ApiError):
    status, code, message = 415, "unsupported_media_type", "send the body as Content-Type: application/json"


class RateLimited(ApiError):
    status, code, message = 429, "rate_limited", "too many requests"


class AuthThrottled(RateLimited):
    """Too many failed authentications from this address or for this client name (any door)."""

    code, message = "too_many_failures", "too many failed sign-ins: wait and try again"


class Internal(ApiError):
    status, code, message = 500, "internal", "internal error"


class UpstreamError(ApiError):
    """The upstream answered something we cannot use (garbage, schema mismatch, refused our key)."""

    status, code, message = 502, "upstream_error", "upstream answered something unusable"


class UpstreamUnavailable(ApiError):
    """The upstream is down, throttling, or we chose not to call it (breaker, no slot)."""

    status, code, message = 503, "upstream_unavailable", "upstream unavailable"


class NotConfigured(ApiError):
    status, code, message = 503, "not_configured", "this route's upstream is not configured"


class UpstreamTimeout(ApiError):
    status, code, message = 504, "upstream_timeout", "upstream did not answer in time"


class OutcomeUnknown(ApiError):
    """The upstream may have acted: a timeout after the request was sent. Never retried blindly."""

    status, code, message = 504, "outcome_unknown", "upstream timed out after the request was sent"


class BrazeShaped(ApiError):
    """An error on the Braze-compatible door: ours, plus Braze's top-level `message` and `errors` list.

    Braze answers errors as `{"message": ..., "errors": [...]}` (https://braze.com/docs/api/errors), and
    Braze client libraries read `message` (one fails with KeyError('message') without it).
    """

    def __init__(self, inner: ApiError):
        super().__init__(inner.message, retry_after=inner.retry_after, details=inner.details,
                         status=inner.status)
        self.code = inner.code
        self.headers = inner.headers  # Braze's X-RateLimit-* when its 429/5xx is relayed
        self.inner = inner

    def body(self) -> dict:
        body = self.inner.body()
        errors = list(getattr(self.inner, "braze_errors", None) or ())
        if not errors and isinstance(self.inner, InvalidRequest) and isinstance(self.inner.details, dict):
            errors = field_problems(self.inner.details)  # one "field: reason" line per bad field
        body["message"] = self.inner.message
        body["errors"] = errors or [self.inner.message]
        braze = getattr(self.inner, "braze_body", None)
        if isinstance(braze, dict):  # Braze's own 429/5xx body, relayed as Braze gave it
            body.update(braze)
            body.setdefault("errors", [])
        return body


# Errors that count against the SessionM circuit breaker (SPEC: timeouts, 5xx, refused, garbage).
BREAKER_FAILURES = (UpstreamError, UpstreamUnavailable, UpstreamTimeout)


class ConnectionAbandoned(BaseException):
    """The worker gives up a connection (web/worker.py): its client is too slow or it gave way.

    A BaseException, like gevent.Timeout, so that no `except Exception` in the app, Flask or
    gunicorn turns it into an answer on a connection that is being dropped: it unwinds to the
    worker's connection loop, which closes the socket.
    """

    reason = "connection abandoned"


class BodyTimeout(ConnectionAbandoned):
    """A request body did not arrive within its time (whole body, or between two of its bytes)."""

    reason = "request body too slow"


class WriteTimeout(ConnectionAbandoned):
    """An answer could not be written for the write timeout: the client stopped reading."""

    reason = "client stopped reading"


class ClosedUnanswered(Exception):
    """Not an answer: a kept-alive upstream connection was closed before any reply (the server's idle
    timeout raced our send). A transport sends an idempotent request once more, else maps it."""
