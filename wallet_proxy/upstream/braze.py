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

import logging
import random
import time
from dataclasses import dataclass

import requests

from ..errors import ApiError, OutcomeUnknown, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .core import CredentialsRefused
from .pacing import TokenBucket
from .retry import RetryPolicy, answered, reset_in, window_spent  # noqa: F401 (reset_in, window_spent: API)
from .transport import Reply, Request, Transport, may_have_reached
from ..braze_limits import PATHS  # one place knows Braze's paths

log = logging.getLogger(__name__)

HOURLY_LIMIT = 250_000  # Braze: requests/hour shared by the REST API key
BROADCAST_PER_MINUTE = 250  # Braze: trigger sends to a whole segment or audience


class BrazeKeyRefused(CredentialsRefused):
    """Braze refused this service's key (401/403): no later call can succeed, a bulk run stops (502)."""


def check_status(reply: Reply, base: str, permission: str) -> None:
    """The one reading of a Braze status, for every Braze client (triggers, `/users/track`).

    429/5xx: nothing was done and another try is safe, so a retryable `UpstreamUnavailable` carrying the
    reply (the retry policy reads its headers; the relay door passes it on). 401/403: our BRAZE_API_KEY
    is wrong or lacks `permission` (logged loudly). 404: an invalid URL (https://braze.com/docs/api/errors),
    i.e. our BRAZE_REST_URL. Other statuses outside 2xx/4xx: unexpected. 2xx and other 4xx return: what
    they mean is the endpoint's.
    """
    status = reply.status
    if status == 429 or status >= 500:
        message = reply.data.get("message") if isinstance(reply.data, dict) else None
        raise answered(UpstreamUnavailable(f"Braze answered HTTP {status}"
                                           + (f" ({str(message)[:200]})" if message else ""),
                                           status=429 if status == 429 else None), reply)
    if status in (401, 403):
        log.error("Braze refused this service's API key (HTTP %s): check BRAZE_API_KEY and its %s "
                  "permission", status, permission)
        raise BrazeKeyRefused(f"Braze refused this service's API key ({permission})")
    if status == 404:
        log.error("Braze answered 404 Not Found: BRAZE_REST_URL (%s) is probably wrong; it must be your "
                  "Braze instance's REST endpoint, e.g. https://rest.iad-01.braze.com", base)
        raise UpstreamError("Braze answered 404 Not Found: this service's BRAZE_REST_URL is wrong")
    if not 200 <= status < 500:
        raise UpstreamError(f"Braze answered an unexpected HTTP {status}")


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
        RetryPolicy(monotonic=self.monotonic, sleep=self.sleep).wait_for_token(
            lambda: self.try_acquire(broadcast), deadline, "Braze", status=503)


def retry_delay(headers, attempt: int, *, base: float, cap: float, clock, rng, status: int = 429) -> float:
    """Seconds before retry `attempt` (1-based) after an answer with `status` and `headers`: the one
    policy's reading (`RetryPolicy.delay`): `Retry-After`, else `X-RateLimit-Reset` when the window is
    spent, else backoff with jitter."""
    return RetryPolicy(base=base, cap=cap, clock=clock, rng=rng).delay(attempt, status, headers)


class BrazeClient:
    """Sends one trigger body to Braze: 2xx gives a dispatch id, anything else an ApiError.

    Retries are safe only when Braze cannot have acted: a 429/5xx answer or a failed connect. A read
    timeout or a dropped connection after sending is `OutcomeUnknown` and never retried (at most once).
    Calls go through the one transport; retries, the rate-token wait and the time budget are the one
    `RetryPolicy`'s (built from the keyword arguments unless `policy` is given).
    """

    def __init__(self, base_url: str, api_key: str, session: requests.Session, *, timeout: float = 10.0,
                 connect_timeout: float = 2.0, retry_budget: float = 20.0, max_attempts: int = 6,
                 backoff_base: float = 0.5, backoff_cap: float = 8.0, limiter: RateLimiter | None = None,
                 clock=time.time, monotonic=time.monotonic, sleep=time.sleep, rng=random.random,
                 policy: RetryPolicy | None = None, transport: Transport | None = None):
        self.base = base_url.rstrip("/")
        self.transport = transport or Transport(session)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": f"Bearer {api_key}"}
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_budget = retry_budget
        self.policy = policy or RetryPolicy(attempts=max_attempts, base=backoff_base, cap=backoff_cap,
                                            clock=clock, monotonic=monotonic, sleep=sleep, rng=rng)
        self.monotonic = self.policy.monotonic
        self.limiter = limiter or RateLimiter(monotonic=self.monotonic, sleep=self.policy.sleep)

    def deadline(self, budget: float | None = None) -> float:
        """A monotonic deadline for one request's retries: `budget` seconds (the retry budget) from now."""
        return self.monotonic() + (self.retry_budget if budget is None else budget)

    def send(self, kind: str, body: dict, deadline: float | None = None) -> Accepted:
        """POST `body` to the `kind` ("campaign" or "canvas") trigger endpoint; return Braze's 2xx.

        Retrying stops at `deadline` (monotonic; whoever waits for the answer sets it): past it, the
        last 429/5xx is raised as `UpstreamUnavailable` with Braze's answer on it (`reply`).
        """
        url = self.base + PATHS[kind]
        deadline = self.deadline() if deadline is None else deadline
        # Braze's 250/minute applies to broadcasts and to any call with an `audience`
        # (https://braze.com/docs/api/endpoints/messaging/send_messages/post_send_triggered_campaigns)
        broadcast = body.get("broadcast") is True or "audience" in body

        if self.monotonic() >= deadline:
            # The send's budget went on earlier chunks: starting another call now would outlast the
            # drain window a rollout gives this request (wallet_proxy/web/drain.py).
            raise UpstreamUnavailable("the Braze time budget of this request is spent; repeat it to send "
                                      "the rest", retry_after=1)

        def attempt() -> Accepted:
            # one call never outlasts the deadline by much: its caller stops waiting then
            left = deadline - self.monotonic()
            timeout = min(self.timeout, max(left, MIN_ATTEMPT_TIME))
            return self._answer(self._call(Request("POST", url, name="Braze", timeout=timeout,
                                                   headers=self._headers, json=body,
                                                   connect_timeout=self.connect_timeout)))

        def retrying(error, number, delay):
            log.info("Braze %s: %s; retry %d in %.2fs", kind, error.message, number, delay)

        def give_up(error, number, delay):
            log.warning("Braze %s still failing after %d attempt(s): %s", kind, number, error.message)
            gave_up = UpstreamUnavailable(f"{error.message}; gave up after {number} attempt(s)",
                                          retry_after=max(1.0, delay))
            gave_up.reply = getattr(error, "reply", None)
            return gave_up

        return self.policy.run(attempt, deadline=deadline, take=lambda: self.limiter.try_acquire(broadcast),
                               on_retry=retrying, give_up=give_up, what="Braze",
                               spent_status=503)  # SessionM retries a 503 + Retry-After

    def _call(self, request: Request) -> Reply:
        """One call through the transport; a failure after the send may have sent: never retried."""
        try:
            return self.transport.send(request)
        except ApiError as exc:
            if not may_have_reached(exc):
                raise UpstreamUnavailable("Braze refused the connection or did not accept it in time",
                                          retry_after=1) from exc
            if isinstance(exc, (UpstreamUnavailable, UpstreamTimeout)):
                # The body went out: Braze may be sending right now. Retrying could send twice.
                raise OutcomeUnknown(f"Braze did not answer within {request.timeout:.2f}s after the send "
                                     "was made, or dropped the connection; it may have been sent, so it "
                                     "is not retried") from exc
            raise

    def _answer(self, reply: Reply) -> Accepted:
        status = reply.status
        data = reply.data if isinstance(reply.data, dict) else {}
        message = data.get("message")
        message = str(message)[:500] if message else None
        errors = data.get("errors")
        errors = tuple(str(e)[:500] for e in errors) if isinstance(errors, list) else (
            (str(errors)[:500],) if errors else ())
        check_status(reply, self.base, "campaigns.trigger.send / canvas.trigger.send")
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


MIN_ATTEMPT_TIME = 0.25  # seconds one call gets even when the deadline is closer
