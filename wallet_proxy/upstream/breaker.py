"""A circuit breaker that never holds its lock during a call (unlike pybreaker, which serialises).

While open it lets one probe call through every `probe_interval` seconds
(WALLET_PROXY_BREAKER_PROBE_INTERVAL, 1 s), so SessionM sees about one call a second from a process
while it is down, and the refusals stop within about a second of it coming back: a refused render is a message Braze delays by its retry
backoff (minutes), and a send's worth of them counts toward Braze's unhealthy-host rule. In a long
outage the wait between probes grows with the time open (a twentieth of it) up to `cooldown`
(WALLET_PROXY_BREAKER_COOLDOWN, 10 s): the most seconds before one probe call is let through.
"""
from __future__ import annotations

import threading
import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# In a long outage the wait between probes is this share of the time the breaker has been open
# (at least the probe interval, at most the cool-down): 1 s for the first 20 s, 10 s after 200 s.
GROWTH = 1 / 20


class Breaker:
    """Opens after `failures` consecutive failures; while open, one probe call every probe interval."""

    def __init__(self, failures: int, cooldown: float, clock=time.monotonic,
                 probe_interval: float | None = None):
        self.threshold = failures
        self.cooldown = cooldown
        # None: the interval is the cool-down itself (one probe per cool-down, the classic breaker).
        self.probe_interval = cooldown if probe_interval is None else min(probe_interval, cooldown)
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0  # when the breaker opened (not moved by failed probes)
        self._probe_at = 0.0  # when the last probe was let through (or the breaker opened)
        self._given_back = 0.0  # _probe_at before the last probe, restored when that probe is cancelled
        self._state = CLOSED
        self._out = 0  # probes let through and not yet reported

    def _interval(self, now: float) -> float:
        return min(self.cooldown, max(self.probe_interval, GROWTH * (now - self._opened_at)))

    def _due(self, now: float) -> float:
        """Seconds until the next probe may go (<= 0: now); only meaningful while open."""
        return self._probe_at + self._interval(now) - now

    @property
    def state(self) -> str:
        """closed, open or half_open (a probe may go now, or one is out)."""
        with self._lock:
            if self._state == OPEN and (self._out or self._due(self.clock()) <= 0):
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """Say whether a call may go now; while open, one probe per probe interval is let through.

        The interval counts from the previous probe's start, not its end: a probe hung on a SessionM
        that has meanwhile recovered does not hold the next one back.
        """
        with self._lock:
            if self._state == CLOSED:
                return True
            now = self.clock()
            if self._due(now) > 0:
                return False
            self._given_back, self._probe_at = self._probe_at, now
            self._out += 1
            return True

    def retry_after(self) -> float:
        """Seconds until the next probe may go (at least 1, for a Retry-After header)."""
        with self._lock:
            if self._state == CLOSED:
                return 1.0
            return max(1.0, self._due(self.clock()))

    def cancel(self) -> None:
        """Give back a probe that was allowed but never made (e.g. no slot was free)."""
        with self._lock:
            if self._state == OPEN:
                self._probe_at = self._given_back
            self._out = max(0, self._out - 1)

    def success(self) -> None:
        """Record a call that worked (or failed for a reason that is not SessionM's health)."""
        with self._lock:
            self._failures = 0
            self._state = CLOSED
            self._out = 0

    def failure(self) -> bool:
        """Record a failed call; open at the threshold (a failed probe keeps it open).

        Returns True when this failure opened a closed breaker, so callers can wake their waiters.
        """
        with self._lock:
            self._failures += 1
            self._out = max(0, self._out - 1)
            if self._state == OPEN:
                # A failed probe (or a late answer of a call made before the breaker opened): the
                # next probe keeps its time, counted from this probe's start; no longer given back.
                self._given_back = self._probe_at
                return False
            if self._failures >= self.threshold:
                self._state = OPEN
                self._opened_at = self._probe_at = self._given_back = self.clock()
                return True
            return False
