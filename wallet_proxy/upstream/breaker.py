"""A circuit breaker that never holds its lock during a call (unlike pybreaker, which serialises)."""
from __future__ import annotations

import threading
import time

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    """Opens after `failures` consecutive failures; after `cooldown` s lets one probe call through."""

    def __init__(self, failures: int, cooldown: float, clock=time.monotonic):
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self._state = CLOSED
        self._probe_out = False

    @property
    def state(self) -> str:
        """closed, open or half_open (cool-down over, a probe may go)."""
        with self._lock:
            if self._state == OPEN and self.clock() - self._opened_at >= self.cooldown:
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """Say whether a call may go now; in half-open only one probe at a time is let through."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self.clock() - self._opened_at < self.cooldown or self._probe_out:
                return False
            self._probe_out = True
            return True

    def retry_after(self) -> float:
        """Seconds until the next probe may go (at least 1, for a Retry-After header)."""
        with self._lock:
            if self._state == CLOSED:
                return 1.0
            return max(1.0, self.cooldown - (self.clock() - self._opened_at))

    def cancel(self) -> None:
        """Give back a probe that was allowed but never made (e.g. no slot was free)."""
        with self._lock:
            self._probe_out = False

    def success(self) -> None:
        """Record a call that worked (or failed for a reason that is not SessionM's health)."""
        with self._lock:
            self._failures = 0
            self._state = CLOSED
            self._probe_out = False

    def failure(self) -> bool:
        """Record a failed call; open (or re-open after a failed probe) at the threshold.

        Returns True when this failure opened a closed breaker, so callers can wake their waiters.
        """
        with self._lock:
            self._failures += 1
            opened = False
            if self._state == OPEN or self._failures >= self.threshold:
                opened = self._state != OPEN
                self._state = OPEN
                self._opened_at = self.clock()
            self._probe_out = False
            return opened
