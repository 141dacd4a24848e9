"""Braze `/users/track` client for attribute sync: batches, the rate budget, partial failures.

No Flask here: the route and the CLI share it. Braze's facts
(https://www.braze.com/docs/api/endpoints/user_data/post_user_track/,
https://www.braze.com/docs/api/objects_filters/user_attributes_object/,
https://www.braze.com/docs/api/api_limits/, https://www.braze.com/docs/api/errors/):
- `POST {BRAZE_REST_URL}/users/track`, `Authorization: Bearer KEY`, at most 75 attribute objects a call
  -- 50 on Braze's MAU contracts (CY 24-25), so the size is a setting (`BRAZE_TRACK_BATCH`);
- 3,000 requests per 3 seconds (MAU contracts: hourly and burst limits; `BRAZE_TRACK_RATE`); every
  answer carries `X-RateLimit-Limit/-Remaining/-Reset` (epoch seconds); a 429 means the budget is spent
  until `Reset`;
- an attributes object without `"_update_existing_only": true` CREATES the profile when its
  `external_id` is unknown: every object we send carries it, so a sync never makes phantom profiles;
- a 2xx may carry non-fatal `errors` naming the objects Braze skipped (`index` into `attributes`); the
  other objects were processed. A 4xx is fatal for the whole request: nothing was processed.
Setting an attribute to the value it already has changes nothing, so a call whose answer was lost is
safe to repeat (it costs data points, never a wrong profile). Calls go through the one transport and
the one retry policy (`upstream/retry.py`).
"""
from __future__ import annotations

import collections
import logging
import random
import re
import time
from dataclasses import dataclass, field

import requests

from .. import jsoncodec
from .braze import BrazeKeyRefused, check_status  # noqa: F401 (BrazeKeyRefused: this module's API too)
from .pacing import TokenBucket
from .retry import RetryPolicy, window_spent
from .transport import Reply, Request, Transport, encoded

log = logging.getLogger(__name__)

PATH = "/users/track"
MAX_OBJECTS = 75  # Braze: 75 attribute objects per /users/track request (50 on MAU contracts)
LIMIT, WINDOW = 3000, 3.0  # Braze: 3,000 /users/track requests per 3 seconds
RATE = LIMIT / WINDOW  # the default BRAZE_TRACK_RATE, requests per second
HEADROOM = 0.1  # of the budget left unused (see track_bucket)
UPDATE_ONLY = "_update_existing_only"  # true: Braze never creates a profile for an unknown external_id
# A 4xx that refuses the batch for its size (413, or Braze's message about too many objects).
_SIZE_WORDS = re.compile(r"too (many|large|big)|request (size|limit)|\b(50|75)\b (attribute|object|update)",
                         re.IGNORECASE)


def track_bucket(limit: float = LIMIT, window: float = WINDOW, clock=time.monotonic) -> TokenBucket:
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


class BrazeUsersClient:
    """Writes attribute objects to Braze's `/users/track`, retrying what is safe to retry.

    `batch`: most objects a call (BRAZE_TRACK_BATCH); `bucket`: the rate budget (BRAZE_TRACK_RATE,
    shared through Redis when configured). Retries, the rate-token wait and the time budget are the
    one `RetryPolicy`'s (built from the keyword arguments unless `policy` is given).
    """

    def __init__(self, base_url: str, api_key: str, session: requests.Session, *, bucket=None,
                 batch: int = MAX_OBJECTS, timeout: float = 10.0, connect_timeout: float = 2.0,
                 max_attempts: int = 8, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 retry_budget: float = 120.0, clock=time.time, monotonic=time.monotonic, sleep=time.sleep,
                 rng=random.random, policy: RetryPolicy | None = None, transport: Transport | None = None):
        self.url = base_url.rstrip("/") + PATH
        self.transport = transport or Transport(session)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": f"Bearer {api_key}"}
        self.policy = policy or RetryPolicy(attempts=max_attempts, base=backoff_base, cap=backoff_cap,
                                            clock=clock, monotonic=monotonic, sleep=sleep, rng=rng)
        self.monotonic = self.policy.monotonic
        self.bucket = bucket if bucket is not None else track_bucket(clock=self.monotonic)
        self.batch = max(1, min(int(batch), MAX_OBJECTS))
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_budget = retry_budget

    def track(self, objects: list, deadline: float | None = None) -> TrackResult:
        """Send up to `batch` attribute objects; say which Braze accepted and why it refused the others.

        Raises UpstreamUnavailable (429/5xx/unreachable past the retries or `deadline`, monotonic),
        BrazeKeyRefused (401/403) or UpstreamError (404: our BRAZE_REST_URL). An object refused on its
        own (indexed `errors`, or a 4xx that narrowing the batch down pins on it) is in `rejected`.
        A batch Braze refuses for its size is halved once; a half refused for its size again is
        rejected (BRAZE_TRACK_BATCH is then too large for this workspace's contract), never halved again.
        """
        if len(objects) > self.batch:
            raise ValueError(f"at most {self.batch} objects per /users/track call, got {len(objects)}")
        deadline = self.monotonic() + self.retry_budget if deadline is None else deadline
        # never create a profile: https://www.braze.com/docs/api/objects_filters/user_attributes_object/
        objects = [{**obj, UPDATE_ONLY: True} for obj in objects]
        result = TrackResult()
        work = collections.deque([(list(range(len(objects))), False)])
        while work:
            group, halved_for_size = work.popleft()
            status, data = self._post([objects[i] for i in group], deadline, result)
            ok = 200 <= status < 300
            indexed, vague = _errors(data, len(group))
            for local, reason in indexed.items():
                result.rejected[group[local]] = reason
            rest = [index for local, index in enumerate(group) if local not in indexed]
            if not rest:
                continue
            if ok and (not vague or len(group) > 1):
                # Braze processed every object an error does not name (an error it does not place on an
                # object is logged, and resending processed objects would cost their data points again)
                if vague:
                    log.warning("Braze /users/track accepted %d objects with errors naming none of them: %s",
                                len(group), "; ".join(vague)[:300])
                result.accepted.extend(rest)
            elif not indexed and len(rest) == 1:
                # An error about a call of one object is that object's.
                result.rejected[rest[0]] = _reason(vague, status, data)
            elif indexed:
                work.appendleft((rest, halved_for_size))  # a 4xx processed nothing: the others go again
            elif _size_refusal(status, data):
                if halved_for_size:
                    reason = _reason(vague, status, data) + " (refused for its size after one halving: " \
                                                           "lower BRAZE_TRACK_BATCH)"
                    result.rejected.update({index: reason for index in rest})
                    continue
                half = (len(rest) + 1) // 2
                log.error("Braze refused a /users/track call of %d objects for its size: halving it once; "
                          "set BRAZE_TRACK_BATCH to this workspace's limit (50 on MAU contracts)", len(rest))
                work.extendleft([(rest[half:], True), (rest[:half], True)])
            else:
                # A 4xx we cannot place on an object: halve and resend until each error has its object
                # (a 4xx processed nothing, so nothing is written twice).
                half = max(1, len(rest) // 2)
                work.extendleft([(rest[half:], halved_for_size), (rest[:half], halved_for_size)]
                                if rest[half:] else [(rest[:half], halved_for_size)])
        result.accepted.sort()
        return result

    def _post(self, objects: list, deadline: float, result: TrackResult) -> tuple[int, object]:
        """One request, retried on 429/5xx/connection trouble; (status, JSON) of a 2xx or a final 4xx."""
        body = encoded({"attributes": objects})

        def attempt():
            result.calls += 1
            left = deadline - self.monotonic()
            return self._answer(self.transport.send(Request(
                "POST", self.url, name="Braze /users/track", timeout=min(self.timeout, max(left, 0.25)),
                headers=self._headers, content=body, connect_timeout=self.connect_timeout)))

        def retrying(error, number, delay):
            result.retries += 1
            log.info("Braze /users/track: %s; retry %d in %.2fs", error.message, number, delay)

        def give_up(error, number, delay):
            log.warning("Braze /users/track still failing after %d attempt(s): %s", number, error.message)
            return RetryPolicy.gave_up(error, number, delay)

        return self.policy.run(attempt, deadline=deadline, take=self.bucket.take, hold=self.bucket.hold,
                               on_retry=retrying, give_up=give_up, what="Braze /users/track")

    def _answer(self, reply: Reply) -> tuple[int, object]:
        status, data, headers = reply.status, reply.data, reply.headers
        if 200 <= status < 300 and window_spent(status, headers):
            # The window is spent: nobody (no thread, and through a Redis bucket no process) calls
            # again before Braze's reset.
            wait = self.policy.told(status, headers)
            if wait:
                self.bucket.hold(wait)
        check_status(reply, self.url[:-len(PATH)], "users.track")
        return status, data


def _size_refusal(status: int, data) -> bool:
    """Whether a 4xx refused the batch for its size: 413, or a message about too many objects."""
    if status == 413:
        return True
    if status != 400 or not isinstance(data, dict):
        return False
    errors = data.get("errors")
    text = " ".join(str(part) for part in (data.get("message"), errors) if part)
    return bool(_SIZE_WORDS.search(text))


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
        error = error.get("type") or error.get("message") or jsoncodec.dumps(error).decode()[:200]
    return str(error)[:200]


def _reason(vague: list, status: int, data) -> str:
    message = data.get("message") if isinstance(data, dict) else None
    if vague:
        return f"braze_rejected: {vague[0]}"
    return f"braze_rejected: HTTP {status}" + (f" ({str(message)[:200]})" if message else "")
