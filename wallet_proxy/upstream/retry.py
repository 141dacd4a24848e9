"""The one retry policy of every upstream call: rate token, "come back later" headers, backoff, budget.

Every client that retries an upstream (Braze triggers, Braze `/users/track`, the bulk runner around
SessionM Core) hands its single attempt to `RetryPolicy.run`, so a rate, a server's "come back later"
and a retry delay mean the same thing everywhere, and a change to them is made here once:

- **the time budget is the waiter's**: `run(..., deadline=)` (monotonic) never sleeps past it -- not for
  a rate token, not for a retry. A Braze client waiting on the relay door gives up after about 2 s, so
  that door passes a deadline 1.5 s away (`WALLET_PROXY_RELAY_BUDGET`); the CLI passes minutes;
- **one rate-token wait** (`wait_for_token`): take a token from the caller's bucket, sleep until it is
  there, or give up with a 429 when it would come after the deadline;
- **one reading of the server's headers** (`told`, `window_spent`): `Retry-After` (seconds or an HTTP
  date) is a retry time whatever the status; Braze's `X-RateLimit-Reset` (epoch seconds of its window's
  end, sent on every answer) counts only when a 429 or `X-RateLimit-Remaining` of zero -- the header is
  a string: "0", "0.0" and " 0 " all say so -- shows the window is spent; after a 5xx, waiting for the
  hourly reset would turn a blip into an outage
  (https://www.braze.com/docs/api/api_limits/, https://www.braze.com/docs/api/errors/);
- **otherwise backoff with jitter** (`pacing.backoff`).

What is worth retrying is the caller's to say (`retryable`); by default 429/5xx/unreachable
(`UpstreamUnavailable`) and a timeout on a call that changes nothing twice (`UpstreamTimeout`), never
an `OutcomeUnknown` (the request may have acted). The failed answer an error stands for travels on it as
`exc.reply` (`upstream.transport.Reply`), set by `answered()`, so the policy reads its status and
headers and a door can relay it as the upstream gave it. No Flask, no I/O: clocks, sleeps and
randomness are injected.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ApiError, OutcomeUnknown, UpstreamTimeout, UpstreamUnavailable
from .pacing import backoff, parse_retry_after

__all__ = ["RetryPolicy", "answered", "number", "reset_in", "window_spent", "is_retryable"]


def number(value) -> float | None:
    """A header's number ("0", " 12 ", "1.5e9", b"0"), or None when it is absent or not a finite number.

    Header values are strings: comparing one with the string "0" misses "0.0" and " 0" (issue #20).
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        parsed = float(str(value).strip())
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None


def window_spent(status: int | None, headers) -> bool:
    """True when the server says its rate window is used up: a 429, or `X-RateLimit-Remaining` <= 0."""
    if status == 429:
        return True
    remaining = number(headers.get("X-RateLimit-Remaining")) if headers else None
    return remaining is not None and remaining <= 0


def reset_in(value, clock=time.time) -> float | None:
    """Seconds until an `X-RateLimit-Reset` (epoch seconds of the window's end), None if garbage."""
    epoch = number(value)
    return None if epoch is None else max(0.0, epoch - clock())


def answered(error: ApiError, reply) -> ApiError:
    """`error` carrying the upstream `reply` it stands for (the policy reads it; a relay passes it on)."""
    error.reply = reply
    return error


def is_retryable(exc: ApiError) -> bool:
    """429, 5xx, refused connections and timeouts of repeatable calls; never an unknown outcome."""
    return isinstance(exc, (UpstreamUnavailable, UpstreamTimeout)) and not isinstance(exc, OutcomeUnknown)


@dataclass
class RetryPolicy:
    """How many attempts, how long between them, and how long at most (the caller's deadline).

    `attempts`: most calls per request; `base`/`cap`: the backoff's first and largest delay;
    `told_cap`: most seconds a server's `Retry-After`/`X-RateLimit-Reset` is waited for.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 8.0
    told_cap: float = 600.0
    clock: Callable[[], float] = field(default=time.time, repr=False)  # wall clock: Reset is epoch seconds
    monotonic: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def deadline(self, budget: float) -> float:
        """The monotonic deadline `budget` seconds from now."""
        return self.monotonic() + budget

    def left(self, deadline: float | None) -> float | None:
        """Seconds before `deadline` (None: no deadline)."""
        return None if deadline is None else deadline - self.monotonic()

    def told(self, status: int | None, headers) -> float | None:
        """Seconds the server told us to wait: `Retry-After`, else `X-RateLimit-Reset` when the window is
        spent; None when it said nothing usable. Capped at `told_cap`."""
        if not headers:
            return None
        told = parse_retry_after(headers.get("Retry-After"), now=self.clock)
        if told is None and window_spent(status, headers):
            told = reset_in(headers.get("X-RateLimit-Reset"), self.clock)
        return None if told is None else min(told, self.told_cap)

    def delay(self, attempt: int, status: int | None = None, headers=None, hint: float | None = None) -> float:
        """Seconds before retry `attempt` (1-based): what the server told (plus a little jitter, so many
        waiting callers do not come back in the same instant), else backoff with jitter."""
        return self._after(attempt, self.told_or_hint(status, headers, hint))

    def _after(self, attempt: int, told: float | None) -> float:
        """`delay` from the server's own wait (`told_or_hint`), already read."""
        if told is not None:
            return told + self.rng() * min(self.base, 1.0)
        return backoff(attempt, base=self.base, cap=self.cap, rng=self.rng)

    def told_or_hint(self, status: int | None = None, headers=None, hint: float | None = None) -> float | None:
        """The server's own wait (`told`), else the caller's `hint` (capped), else None: no jitter added."""
        told = self.told(status, headers)
        if told is None and hint is not None:
            told = min(max(0.0, hint), self.told_cap)
        return told

    def wait_for_token(self, take: Callable[[], float], deadline: float | None, what: str = "upstream",
                       status: int = 429) -> None:
        """The one rate-token wait: `take()` answers 0.0 (a token taken) or the seconds until one is there.

        Sleeps until the token is taken; when it would come after `deadline`, raises an
        `UpstreamUnavailable` (`status`, 429 by default) with the seconds to wait as `retry_after`,
        having taken nothing.
        """
        while True:
            wait = take()
            if wait <= 0:
                return
            if deadline is not None and self.monotonic() + wait > deadline:
                raise UpstreamUnavailable(f"{what}'s request budget is spent; retry later", retry_after=wait,
                                          status=status)
            self.sleep(wait)

    def run(self, attempt: Callable[[], object], *, deadline: float | None = None,
            take: Callable[[], float] | None = None, hold: Callable[[float], None] | None = None,
            retryable: Callable[[ApiError], bool] = is_retryable,
            on_retry: Callable[[ApiError, int, float], None] | None = None,
            give_up: Callable[[ApiError, int, float], BaseException] | None = None, what: str = "upstream",
            spent_status: int = 429):
        """The one retry loop: call `attempt()` until it returns, fails for good, or time runs out.

        Before each call a rate token is taken through `take` (when given). A retryable ApiError is
        retried after `delay`; when the server says its window is spent, `hold(seconds)` tells the
        shared bucket, so no other caller calls before the reset either. Past `attempts`, or when the
        next try would start after `deadline`, `give_up(exc, attempts, delay)` is raised (by default a
        503 -- a 429 when the upstream answered 429 -- carrying the upstream's last reply).
        """
        number_ = 0
        while True:
            number_ += 1
            if take is not None:
                self.wait_for_token(take, deadline, what, spent_status)
            try:
                return attempt()
            except ApiError as exc:
                if not retryable(exc):
                    raise
                reply = getattr(exc, "reply", None)
                status = reply.status if reply is not None else (exc.status if exc.status == 429 else None)
                headers = reply.headers if reply is not None else None
                told = self.told_or_hint(status, headers, getattr(exc, "upstream_retry_after", None))
                wait = self._after(number_, told)
                left = self.left(deadline)
                if left is not None and told is not None and told <= left < wait:
                    # The jitter never costs the try: when the server's own wait fits before the
                    # deadline, the jitter is cut to what is left (a 0.3 s reset plus up to 0.5 s of
                    # jitter, twice, would otherwise give up a send the budget has room for).
                    wait = left
                if hold is not None and (status == 429 or window_spent(status, headers)):
                    hold(wait)  # the window is spent for every caller sharing the bucket, not just this one
                if number_ >= self.attempts or (left is not None and wait > left):
                    raise (give_up or self.gave_up)(exc, number_, wait) from exc
                if on_retry is not None:
                    on_retry(exc, number_, wait)
                self.sleep(wait)

    @staticmethod
    def gave_up(exc: ApiError, attempts: int, wait: float) -> ApiError:
        """The error answered once retrying stops: 503 (429 when the upstream said 429), the upstream's
        last reply on it (`reply`), and when to come back (`retry_after`)."""
        reply = getattr(exc, "reply", None)
        throttled = exc.status == 429 or (reply is not None and reply.status == 429)
        error = UpstreamUnavailable(f"{exc.message}; gave up after {attempts} attempt(s)",
                                    retry_after=max(1.0, wait), status=429 if throttled else None)
        error.reply = reply
        error.upstream_retry_after = getattr(exc, "upstream_retry_after", None)
        return error
