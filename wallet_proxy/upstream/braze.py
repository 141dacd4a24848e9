"""Braze REST client for triggered sends, with bounded retries and a client-side rate limiter.

No Flask here: the CLI can reuse it. Braze's facts (SPEC, "Braze triggered sends"):
`POST {BRAZE_REST_URL}/campaigns/trigger/send` or `/canvas/trigger/send`, `Authorization: Bearer KEY`,
at most 50 recipients a call; 250,000 requests/hour shared by the send endpoints, 250/minute for
broadcasts and any call with an `audience`
(https://braze.com/docs/api/api_limits, https://braze.com/docs/api/endpoints/messaging/send_messages/
post_send_triggered_campaigns). Every answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`
(epoch seconds of the window's end): `Reset` says when the hourly window ends, not when to retry, so
it is honoured only when a 429 or `Remaining: 0` says the window is spent; a 5xx is retried with
backoff. Answers are `{"message", "errors"}`; a 201 may carry non-fatal `errors` and, for a canvas, a
`notice` meaning nothing was sent (https://braze.com/docs/api/errors). A 404 means our
BRAZE_REST_URL is wrong.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass

import requests
import urllib3.exceptions

from ..errors import ApiError, OutcomeUnknown, UpstreamError, UpstreamUnavailable
from .pacing import TokenBucket, backoff, parse_retry_after

log = logging.getLogger(__name__)

PATHS = {"campaign": "/campaigns/trigger/send", "canvas": "/canvas/trigger/send"}
HOURLY_LIMIT = 250_000  # Braze: requests/hour shared by the REST API key
BROADCAST_PER_MINUTE = 250  # Braze: trigger sends to a whole segment or audience


class BrazeRejected(ApiError):
    """Braze refused the send with a 4xx; `status` is Braze's, `message` and `braze_errors` are Braze's."""

    status, code, message = 400, "braze_rejected", "Braze rejected the send"

    def __init__(self, message=None, *, braze_errors=(), **kwargs):
        super().__init__(message, **kwargs)
        self.braze_errors = list(braze_errors)


@dataclass(frozen=True)
class Accepted:
    """Braze's 2xx: its dispatch id, its whole answer, and the `notice` / non-fatal `errors` in it.

    With a `notice` (a paused or archived canvas) Braze sent nothing, whatever the status says.
    """

    dispatch_id: str
    status: int
    answer: dict
    notice: str | None = None
    errors: tuple = ()

    @property
    def sent(self) -> bool:
        return self.notice is None


class RateLimiter:
    """Keeps us under Braze's request limits; waits for a slot or says how long to wait.

    Two buckets of `pacing.TokenBucket`'s interface: the hourly one every call takes from, and the
    per-minute one broadcasts and `audience` calls take from too. In-process buckets by default; the
    Redis-backed ones share the budget across processes.
    """

    def __init__(self, hourly: int = HOURLY_LIMIT, broadcast_per_minute: int = BROADCAST_PER_MINUTE,
                 monotonic=time.monotonic, sleep=time.sleep, buckets=None):
        if buckets is None:
            per_minute_burst = max(1, broadcast_per_minute // 25)
            buckets = (TokenBucket.for_window(hourly, 3600.0, burst=max(1, hourly // 250), clock=monotonic),
                       TokenBucket.for_window(broadcast_per_minute, 60.0, burst=per_minute_burst,
                                              clock=monotonic))
        self.hourly, self.broadcast = buckets
        self.monotonic = monotonic
        self.sleep = sleep

    @classmethod
    def shared(cls, redis_client, api_key: str, hourly: int = HOURLY_LIMIT,
               broadcast_per_minute: int = BROADCAST_PER_MINUTE, monotonic=time.monotonic, sleep=time.sleep):
        """One budget for every process sharing `api_key` and this Redis (buckets in Redis, Lua-atomic)."""
        from .budget import RedisTokenBucket, budget_name

        buckets = (RedisTokenBucket.for_window(redis_client, budget_name(api_key, "hour"), hourly, 3600.0,
                                               burst=max(1, hourly // 250)),
                   RedisTokenBucket.for_window(redis_client, budget_name(api_key, "minute"),
                                               broadcast_per_minute, 60.0,
                                               burst=max(1, broadcast_per_minute // 25)))
        return cls(hourly, broadcast_per_minute, monotonic=monotonic, sleep=sleep, buckets=buckets)

    def try_acquire(self, broadcast: bool) -> float:
        """Take a slot and answer 0.0, or take nothing and answer the seconds until one may be free."""
        if broadcast:
            wait = self.broadcast.take()
            if wait > 0:
                return wait
        wait = self.hourly.take()
        if wait > 0 and broadcast:
            self.broadcast.refund()  # the call is not made: its per-minute token goes back
        return wait

    def acquire(self, broadcast: bool, deadline: float) -> None:
        """Take a slot, sleeping at most until `deadline` (monotonic); else raise UpstreamUnavailable."""
        while True:
            wait = self.try_acquire(broadcast)
            if wait <= 0:
                return
            if self.monotonic() + wait > deadline:
                raise UpstreamUnavailable("Braze's request limit is used up; retry later", retry_after=wait)
            self.sleep(wait)


def reset_in(value, clock) -> float | None:
    """Seconds until Braze's `X-RateLimit-Reset` (epoch seconds of the window's end), None if garbage."""
    try:
        epoch = float(str(value).strip())
    except ValueError:
        return None
    return max(0.0, epoch - clock()) if math.isfinite(epoch) else None


def window_spent(status: int, headers) -> bool:
    """True when Braze says its rate window is used up: a 429, or `X-RateLimit-Remaining: 0`."""
    if status == 429:
        return True
    remaining = headers.get("X-RateLimit-Remaining") if headers else None
    try:
        return remaining is not None and float(str(remaining).strip()) <= 0
    except ValueError:
        return False


def retry_delay(headers, attempt: int, *, base: float, cap: float, clock, rng, status: int = 429) -> float:
    """Seconds before retry `attempt` (1-based) after an answer with `status` and `headers`.

    `Retry-After` is a retry time whatever the status. `X-RateLimit-Reset` is the end of Braze's hourly
    window, sent on every answer: waiting for it after a 500 would turn a blip into a 40-minute
    outage, so it counts only when the window is spent (`window_spent`). Otherwise: backoff with jitter.
    """
    told = parse_retry_after(headers.get("Retry-After"), now=clock) if headers else None
    reset = headers.get("X-RateLimit-Reset") if headers else None
    if told is None and reset and window_spent(status, headers):
        told = reset_in(reset, clock)
    if told is not None:
        # a little jitter on top, so many waiting senders do not return in the same instant
        return max(0.0, told) + rng() * min(base, 1.0)
    return backoff(attempt, base=base, cap=cap, rng=rng)


def _nothing_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection failed before any byte of the request could reach Braze."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the real cause
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                               urllib3.exceptions.NameResolutionError))


class BrazeClient:
    """Sends one trigger body to Braze: 2xx gives a dispatch id, anything else an ApiError.

    Retries are safe only when Braze cannot have acted: a 429/5xx answer or a failed connect. A read
    timeout or a dropped connection after sending is `OutcomeUnknown` and never retried (at most once).
    """

    def __init__(self, base_url: str, api_key: str, session: requests.Session, *, timeout: float = 10.0,
                 connect_timeout: float = 2.0, retry_budget: float = 20.0, max_attempts: int = 6,
                 backoff_base: float = 0.5, backoff_cap: float = 8.0, limiter: RateLimiter | None = None,
                 clock=time.time, monotonic=time.monotonic, sleep=time.sleep, rng=random.random):
        self.base = base_url.rstrip("/")
        self.session = session
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": f"Bearer {api_key}"}
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_budget = retry_budget
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng
        self.limiter = limiter or RateLimiter(monotonic=monotonic, sleep=sleep)

    def deadline(self) -> float:
        """A monotonic deadline for one request's retries (the retry budget from now)."""
        return self.monotonic() + self.retry_budget

    def send(self, kind: str, body: dict, deadline: float | None = None) -> Accepted:
        """POST `body` to the `kind` ("campaign" or "canvas") trigger endpoint; return Braze's 2xx."""
        url = self.base + PATHS[kind]
        deadline = self.deadline() if deadline is None else deadline
        # Braze's 250/minute applies to broadcasts and to any call with an `audience`
        # (https://braze.com/docs/api/endpoints/messaging/send_messages/post_send_triggered_campaigns)
        broadcast = body.get("broadcast") is True or "audience" in body
        data = json.dumps(body, separators=(",", ":")).encode()
        if self.monotonic() >= deadline:
            # The send's budget went on earlier chunks: starting another call now would outlast the
            # drain window a rollout gives this request (wallet_proxy/web/drain.py).
            raise UpstreamUnavailable("the Braze time budget of this request is spent; repeat it to send "
                                      "the rest", retry_after=1)
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire(broadcast, deadline)
            error = self._attempt(url, data)
            if isinstance(error, Accepted):
                return error
            delay = retry_delay(error.headers, attempt, base=self.backoff_base, cap=self.backoff_cap,
                                clock=self.clock, rng=self.rng, status=error.status)
            if attempt >= self.max_attempts or self.monotonic() + delay > deadline:
                log.warning("Braze %s still failing after %d attempt(s): %s", kind, attempt, error.message)
                raise UpstreamUnavailable(f"{error.message}; gave up after {attempt} attempt(s)",
                                          retry_after=max(1.0, delay))
            log.info("Braze %s: %s; retry %d in %.2fs", kind, error.message, attempt, delay)
            self.sleep(delay)

    def _attempt(self, url: str, data: bytes):
        """One call: Braze's 2xx (`Accepted`), a retryable `_Retry`, or raise a final ApiError."""
        try:
            response = self.session.post(url, data=data, headers=self._headers, allow_redirects=False,
                                         timeout=(min(self.connect_timeout, self.timeout), self.timeout))
        except requests.exceptions.ConnectTimeout:
            return _Retry("Braze did not accept a connection in time")
        except requests.exceptions.ReadTimeout as exc:
            # The body went out: Braze may be sending right now. Retrying could send twice.
            raise OutcomeUnknown(f"Braze did not answer within {self.timeout:.2f}s after the send was "
                                 "made; it may have been sent, so it is not retried") from exc
        except requests.exceptions.ConnectionError as exc:
            if _nothing_sent(exc):
                return _Retry("Braze refused the connection")
            raise OutcomeUnknown("the connection to Braze dropped after the send was made; it may have "
                                 "been sent, so it is not retried") from exc
        except requests.exceptions.RequestException as exc:
            raise UpstreamError(f"Braze call failed: {type(exc).__name__}") from exc
        return self._answer(response)

    def _answer(self, response: requests.Response):
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        message = data.get("message")
        message = str(message)[:500] if message else None
        errors = data.get("errors")
        errors = tuple(str(e)[:500] for e in errors) if isinstance(errors, list) else (
            (str(errors)[:500],) if errors else ())
        if status == 429 or status >= 500:
            return _Retry(f"Braze answered HTTP {status}" + (f" ({message})" if message else ""),
                          response.headers, status)
        if status in (401, 403):
            # Our BRAZE_API_KEY is wrong or lacks the permission: the caller cannot fix that.
            log.error("Braze refused this service's API key (HTTP %s): check BRAZE_API_KEY and its "
                      "campaigns.trigger.send / canvas.trigger.send permissions", status)
            raise UpstreamError("Braze refused this service's API key")
        if status == 404:
            # Braze answers 404 for an invalid URL (https://braze.com/docs/api/errors): our BRAZE_REST_URL.
            log.error("Braze answered 404 Not Found: BRAZE_REST_URL (%s) is probably wrong; it must be your "
                      "Braze instance's REST endpoint, e.g. https://rest.iad-01.braze.com", self.base)
            raise UpstreamError("Braze answered 404 Not Found: this service's BRAZE_REST_URL is wrong")
        if 400 <= status < 500:
            raise BrazeRejected(message or f"Braze answered HTTP {status}", status=status,
                                braze_errors=errors)
        if 200 <= status < 300:
            dispatch_id = data.get("dispatch_id")
            if not isinstance(dispatch_id, str) or not dispatch_id:
                # Braze accepted (2xx), so the send happened: never report it as failed or resend it.
                log.warning("Braze answered HTTP %s without a dispatch_id", status)
                dispatch_id = "unknown-dispatch-id"
            notice = data.get("notice")
            notice = str(notice)[:500] if notice else None
            return Accepted(dispatch_id, status, data, notice, errors)
        raise UpstreamError(f"Braze answered an unexpected HTTP {status}")


class _Retry:
    """A failure after which nothing was sent, so another attempt is safe."""

    def __init__(self, message: str, headers=None, status: int = 0):
        self.message = message
        self.headers = headers or {}
        self.status = status
