"""Braze `/users/track` client for attribute sync: batches of 75, the rate budget, partial failures.

No Flask here: the route and the CLI share it. Braze's facts
(https://www.braze.com/docs/api/endpoints/user_data/post_user_track/,
https://www.braze.com/docs/api/api_limits/, https://www.braze.com/docs/api/errors/):
- `POST {BRAZE_REST_URL}/users/track`, `Authorization: Bearer KEY`, at most 75 attribute objects a call;
- 3,000 requests per 3 seconds; every answer carries `X-RateLimit-Limit/-Remaining/-Reset` (epoch
  seconds); a 429 means the budget is spent until `Reset`;
- a 2xx may carry non-fatal `errors` naming the objects Braze skipped (`index` into `attributes`);
  the other objects were processed. A 4xx is fatal for the whole request: nothing was processed.
Setting an attribute to the value it already has changes nothing, so a call whose answer was lost is
safe to repeat (it costs data points, never a wrong profile).
"""
from __future__ import annotations

import collections
import json
import logging
import random
import time
from dataclasses import dataclass, field

import requests

from ..errors import UpstreamError, UpstreamUnavailable
from .core import CredentialsRefused
from .pacing import TokenBucket, backoff, parse_retry_after

log = logging.getLogger(__name__)

PATH = "/users/track"
MAX_OBJECTS = 75  # Braze: 75 attribute objects per /users/track request
LIMIT, WINDOW = 3000, 3.0  # Braze: 3,000 /users/track requests per 3 seconds
HEADROOM = 0.1  # of the budget left unused (see track_bucket)


class BrazeKeyRefused(CredentialsRefused):
    """Braze refused this service's key (401/403): no later call can succeed, a bulk run stops."""


def track_bucket(limit: int = LIMIT, window: float = WINDOW, clock=time.monotonic) -> TokenBucket:
    """A process's bucket for Braze's budget: never more than `limit` calls in any `window`.

    Braze counts arrivals, we pace departures: a tenth of the budget is kept as headroom, so calls
    that a slow network bunches up on the way still arrive under the limit.
    """
    planned = max(1, int(limit * (1 - HEADROOM)))
    return TokenBucket.for_window(planned, window, burst=max(1, planned // 30), clock=clock)


def track_bucket_shape(limit: int = LIMIT, window: float = WINDOW) -> tuple[float, float]:
    """(rate, capacity) of `track_bucket`, for the Redis bucket every process shares."""
    bucket = track_bucket(limit, window)
    return bucket.rate, bucket.capacity


@dataclass
class TrackResult:
    """Which objects of one `track` call Braze accepted, and why it rejected the others (by index)."""

    accepted: list = field(default_factory=list)
    rejected: dict = field(default_factory=dict)
    calls: int = 0
    retries: int = 0


class _Retry(Exception):
    """Nothing (or nothing certain) was processed and another try is safe: 429, 5xx, connection trouble."""

    def __init__(self, message: str, delay: float | None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.delay = delay
        self.status = status


class BrazeUsersClient:
    """Writes attribute objects to Braze's `/users/track`, retrying what is safe to retry."""

    def __init__(self, base_url: str, api_key: str, session: requests.Session, *, bucket=None,
                 timeout: float = 10.0, connect_timeout: float = 2.0, max_attempts: int = 8,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, retry_budget: float = 120.0,
                 clock=time.time, monotonic=time.monotonic, sleep=time.sleep, rng=random.random):
        self.url = base_url.rstrip("/") + PATH
        self.session = session
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": f"Bearer {api_key}"}
        self.bucket = bucket if bucket is not None else track_bucket(clock=monotonic)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_budget = retry_budget
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng

    def track(self, objects: list, deadline: float | None = None) -> TrackResult:
        """Send up to 75 attribute objects; say which Braze accepted and why it refused the others.

        Raises UpstreamUnavailable (429/5xx/unreachable past the retries or `deadline`, monotonic),
        BrazeKeyRefused (401/403) or UpstreamError (404: our BRAZE_REST_URL). An object refused on its
        own (indexed `errors`, or a 4xx that narrowing the batch down pins on it) is in `rejected`.
        """
        if len(objects) > MAX_OBJECTS:
            raise ValueError(f"at most {MAX_OBJECTS} objects per /users/track call, got {len(objects)}")
        deadline = self.monotonic() + self.retry_budget if deadline is None else deadline
        result = TrackResult()
        work = collections.deque([list(range(len(objects)))])
        while work:
            group = work.popleft()
            status, data = self._post([objects[i] for i in group], deadline, result)
            indexed, vague = _errors(data, len(group))
            for local, reason in indexed.items():
                result.rejected[group[local]] = reason
            rest = [index for local, index in enumerate(group) if local not in indexed]
            ok = 200 <= status < 300
            if ok and not vague:
                result.accepted.extend(rest)  # Braze processed every object it did not name
            elif not rest:
                continue
            elif not indexed and len(rest) == 1:
                # An error about a call of one object is that object's.
                result.rejected[rest[0]] = _reason(vague, status, data)
            elif indexed and not ok:
                work.appendleft(rest)  # a 4xx processed nothing: the objects it did not name go again
            else:
                # Errors we cannot place on an object: halve and resend until each error has its object
                # (repeating an attribute update is harmless; counting an unprocessed one is not).
                half = max(1, len(rest) // 2)
                work.extendleft([rest[half:], rest[:half]] if rest[half:] else [rest[:half]])
        result.accepted.sort()
        return result

    def _post(self, objects: list, deadline: float, result: TrackResult) -> tuple[int, object]:
        """One request, retried on 429/5xx/connection trouble; (status, JSON) of a 2xx or a final 4xx."""
        body = json.dumps({"attributes": objects}, separators=(",", ":")).encode()
        attempt = 0
        while True:
            attempt += 1
            self._slot(deadline)
            try:
                result.calls += 1
                return self._attempt(body)
            except _Retry as retry:
                delay = retry.delay if retry.delay is not None else backoff(
                    attempt, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng)
                if attempt >= self.max_attempts or self.monotonic() + delay > deadline:
                    log.warning("Braze /users/track still failing after %d attempt(s): %s", attempt,
                                retry.message)
                    raise UpstreamUnavailable(f"{retry.message}; gave up after {attempt} attempt(s)",
                                              retry_after=max(1.0, delay),
                                              status=429 if retry.status == 429 else None) from None
                result.retries += 1
                log.info("Braze /users/track: %s; retry %d in %.2fs", retry.message, attempt, delay)
                self.sleep(delay)

    def _slot(self, deadline: float) -> None:
        """Wait for this call's place in the rate budget (shared through Redis when configured)."""
        while True:
            wait = self.bucket.take()
            if wait <= 0:
                return
            if self.monotonic() + wait > deadline:
                raise UpstreamUnavailable("Braze's /users/track budget is spent; retry later", retry_after=wait,
                                          status=429)
            self.sleep(wait)

    def _attempt(self, body: bytes) -> tuple[int, object]:
        try:
            response = self.session.post(self.url, data=body, headers=self._headers, allow_redirects=False,
                                         timeout=(min(self.connect_timeout, self.timeout), self.timeout))
        except requests.exceptions.Timeout as exc:
            raise _Retry(f"Braze did not answer within {self.timeout:.1f}s", None) from exc
        except requests.exceptions.ConnectionError as exc:
            raise _Retry("Braze refused or dropped the connection", None) from exc
        except requests.exceptions.RequestException as exc:
            raise UpstreamError(f"Braze call failed: {type(exc).__name__}") from exc
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        headers = response.headers
        if status == 429 or (200 <= status < 300 and headers.get("X-RateLimit-Remaining") == "0"):
            # The window is spent: nobody (no thread, and through a Redis bucket no process) calls
            # again before Braze's reset.
            wait = self._told_wait(headers)
            if wait:
                self.bucket.hold(wait)
            if status == 429:
                raise _Retry("Braze answered HTTP 429 (rate limit)", wait, 429)
        if status >= 500:
            raise _Retry(f"Braze answered HTTP {status}", parse_retry_after(headers.get("Retry-After"),
                                                                        now=self.clock), status)
        if status in (401, 403):
            log.error("Braze refused this service's API key (HTTP %s): check BRAZE_API_KEY and its "
                      "users.track permission", status)
            raise BrazeKeyRefused("Braze refused this service's API key (users.track)")
        if status == 404:
            raise UpstreamError("Braze answered 404 for /users/track: check BRAZE_REST_URL")
        if not 200 <= status < 500:
            raise UpstreamError(f"Braze answered an unexpected HTTP {status}")
        return status, data

    def _told_wait(self, headers) -> float | None:
        """Seconds Braze told us to wait: `Retry-After`, else until `X-RateLimit-Reset` (epoch seconds)."""
        told = parse_retry_after(headers.get("Retry-After"), now=self.clock)
        if told is not None:
            return told
        reset = headers.get("X-RateLimit-Reset")
        try:
            return max(0.0, float(reset) - self.clock()) if reset else None
        except ValueError:
            return None


def _errors(data, size: int) -> tuple[dict, list]:
    """Braze's `errors`: those naming an attribute object by index ({index: reason}), and the others."""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return {}, []
    if not isinstance(errors, list):
        errors = [errors]
    indexed: dict = {}
    vague: list = []
    for error in errors:
        index = error.get("index") if isinstance(error, dict) else None
        array = error.get("input_array", "attributes") if isinstance(error, dict) else None
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < size and array == "attributes":
            indexed[index] = _text(error)
        elif isinstance(error, dict) and array not in ("attributes", None):
            continue  # about events or purchases: we send none
        else:
            vague.append(_text(error))
    return indexed, vague


def _text(error) -> str:
    if isinstance(error, dict):
        error = error.get("type") or error.get("message") or json.dumps(error)[:200]
    return str(error)[:200]


def _reason(vague: list, status: int, data) -> str:
    message = data.get("message") if isinstance(data, dict) else None
    if vague:
        return f"braze_rejected: {vague[0]}"
    return f"braze_rejected: HTTP {status}" + (f" ({str(message)[:200]})" if message else "")
