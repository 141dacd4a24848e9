"""One error hierarchy; `wallet_proxy.web.http` maps it to the SPEC's JSON errors in one handler."""
from __future__ import annotations

import json
import math


class ApiError(Exception):
    """An error with an HTTP status and a stable code; `message` is safe to show a caller."""

    status = 500
    code = "internal"
    message = "internal error"

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


# Errors that count against the SessionM circuit breaker (SPEC: timeouts, 5xx, refused, garbage).
BREAKER_FAILURES = (UpstreamError, UpstreamUnavailable, UpstreamTimeout)
