"""Pacing said once: the token bucket, the `Retry-After` parser and the backoff with jitter.

Every client of an upstream (Braze, SessionM Core and Connect, the bulk jobs) and the per-client
limit of our own API use these three, so a rate, a server's "come back later" and a retry delay mean
the same thing everywhere. No Flask, no I/O: clocks, sleeps and randomness are injected.
"""
from __future__ import annotations

import math
import random
import threading
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = ["TokenBucket", "parse_retry_after", "backoff"]


class TokenBucket:
    """`rate` tokens a second up to `capacity`; thread-safe (a lock, so gevent-safe once patched).

    `take` is the only way to spend: it takes `n` tokens when they are there (answering 0.0) or
    takes nothing and answers the seconds until they will be. `reserve` spends into debt and answers
    how long the caller must wait before acting (a queue of callers, each in its own slot). `hold`
    gives nothing for a while (a server said it is throttling us); `refund` gives tokens back when a
    caller took from two buckets and the second one refused.

    The same interface is implemented over Redis for a budget shared by several processes
    (`upstream/budget.py`, `RedisTokenBucket`).
    """

    def __init__(self, rate: float, capacity: float, clock=time.monotonic):
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    @classmethod
    def for_window(cls, limit: int, window: float, burst: int, clock=time.monotonic) -> "TokenBucket":
        """A bucket admitting at most `limit` calls in ANY `window` seconds, `burst` of them at once.

        With capacity C and rate r a window T admits at most C + r*T calls; r = (limit - C) / T keeps
        every window at or under the limit (Braze counts its limits per hour and per minute).
        """
        capacity = float(max(1, min(burst, limit)))
        rate = (limit - capacity) / window
        if rate <= 0:  # a limit of one call per window: refill that one call over the window
            rate = 1.0 / window
        return cls(rate, capacity, clock)

    def _refill(self) -> float:
        now = self.clock()
        self._tokens = min(self.capacity, self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = max(self._stamp, now)
        return self._tokens

    def _wait_for(self, n: float) -> float:
        # the epsilon stops float rounding from leaving 0.99999999 tokens and a wait too small to pass
        missing = n - self._tokens
        return 0.0 if missing <= 1e-9 else max(1e-3, missing / self.rate)

    def take(self, n: float = 1.0) -> float:
        """Take `n` tokens and answer 0.0, or take nothing and answer the seconds until `n` are there."""
        with self._lock:
            self._refill()
            wait = self._wait_for(n)
            if wait == 0.0:
                self._tokens -= n
            return wait

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until `n` tokens are there (0.0 when they are now); takes nothing."""
        with self._lock:
            self._refill()
            return self._wait_for(n)

    def reserve(self, n: float = 1.0) -> float:
        """Take `n` tokens even into debt; answer the seconds the caller must wait before acting."""
        with self._lock:
            self._refill()
            self._tokens -= n
            return 0.0 if self._tokens >= -1e-9 else -self._tokens / self.rate

    def refund(self, n: float = 1.0) -> None:
        """Give back `n` tokens taken for a call that was not made."""
        with self._lock:
            self._refill()
            self._tokens = min(self.capacity, self._tokens + n)

    def hold(self, seconds: float) -> None:
        """Give no token for `seconds` from now (a server asked us to slow down)."""
        with self._lock:
            self._refill()
            self._tokens = min(self._tokens, 1.0 - seconds * self.rate)

    @property
    def tokens(self) -> float:
        with self._lock:
            return self._refill()


def parse_retry_after(value, now=time.time) -> float | None:
    """Seconds to wait from a `Retry-After` value, or None when it says nothing usable.

    RFC 9110 section 10.2.3: delay-seconds (a non-negative integer; a decimal is tolerated) or an
    HTTP-date (IMF-fixdate, and the obsolete RFC 850 / asctime forms `email.utils` reads). A date in
    the past is 0. Garbage, negative, infinite or NaN values, and dates that do not parse, are None:
    the caller then falls back to its own backoff rather than trusting a broken header.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value).strip()
    if not text or len(text) > 64:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds) or seconds < 0:
            return None
        return seconds
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" or asctime: HTTP dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    try:
        return max(0.0, when.timestamp() - now())
    except (OverflowError, OSError, ValueError):
        return None


def backoff(attempt: int, *, base: float, cap: float, rng=random.random) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): exponential, capped, "equal jitter".

    The un-jittered delay is min(cap, base * 2**(attempt-1)); half of it is kept as a floor and the
    other half is random, so many clients that failed together spread out without retrying at once
    (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
    """
    delay = min(cap, base * 2.0 ** min(max(1, attempt) - 1, 64))  # 2**64: past any cap, no overflow
    return delay / 2 + rng() * delay / 2
