"""Single flight: concurrent reads of one (user, culture) share one SessionM call, in this process.

Its cross-process half (a lock in Redis, so several processes share one call too) is
`wallet_proxy.wallet.redis_store.RedisLocker`.
"""
from __future__ import annotations

import threading
import time

from ..errors import ApiError, UpstreamTimeout
from .stores import Entry


class Flight:
    """One SessionM call that several requests wait for."""

    def __init__(self, monotonic=time.monotonic):
        self.done = threading.Event()
        self.started: float | None = None  # when its SessionM call was handed to its thread (monotonic)
        self.entry: Entry | None = None
        self.wallet: dict | None = None  # the fetched wallet, decoded: its waiters render from it
        self.error: ApiError | None = None
        self.monotonic = monotonic

    def wait(self, deadline: float) -> Entry:
        """Wait until the call lands or `deadline` (monotonic) passes; raise its error or a timeout."""
        if not self.done.wait(max(0.0, deadline - self.monotonic())):
            raise UpstreamTimeout("SessionM did not answer before this request's deadline")
        if self.error is not None:
            raise self.error
        return self.entry


class SingleFlight:
    """Registry of flights in progress, one per key, in this process."""

    def __init__(self, monotonic=time.monotonic):
        self._lock = threading.Lock()
        self._flights: dict = {}
        self.monotonic = monotonic

    def join(self, key) -> tuple[Flight, bool]:
        """Return (flight, True) to the caller who must start the call, (flight, False) to waiters."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight(self.monotonic)
            return flight, True

    def finish(self, key, flight: Flight, entry: Entry | None = None, error: ApiError | None = None,
               wallet: dict | None = None):
        """Publish the outcome and let the next request for this key start a new call."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.entry, flight.error, flight.wallet = entry, error, wallet
        flight.done.set()

    def running(self, key) -> bool:
        """Whether a call for `key` is in flight in this process."""
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)
