"""Optional per-client rate limit (WALLET_PROXY_CLIENT_RATE): a token bucket per client name.

Off by default: Braze is one client sending thousands of requests a second. When on, a client may
burst up to one second's worth of requests, then is answered 429 with Retry-After. The bucket is
the one of `upstream.pacing`, as for every other rate in the service.
"""
from __future__ import annotations

import math
import threading
import time

from ..errors import RateLimited
from ..upstream.pacing import TokenBucket


class RateLimiter:
    """Token buckets keyed by client name (a configured, bounded set), `rate` tokens per second."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic, wall=time.time):
        self.rate = rate
        self.wall = wall
        self.burst = burst if burst is not None else max(1.0, rate)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, client: str) -> None:
        """Take a token for `client` or raise RateLimited with the seconds until one is free."""
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = TokenBucket(self.rate, self.burst, self.clock)
        wait = bucket.take()
        if wait > 0:
            error = RateLimited(f"client {client!r} is over its rate limit of {self.rate:g} requests/s",
                                retry_after=max(1, math.ceil(wait)))
            # Braze's own headers too: Braze client libraries read only X-RateLimit-Reset (UTC epoch
            # seconds) to decide when to come back (https://www.braze.com/docs/api/api_limits/)
            error.headers = {"X-RateLimit-Limit": str(math.ceil(self.burst)), "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset": str(math.ceil(self.wall() + wait))}
            raise error


def build(settings, clock=time.monotonic) -> RateLimiter | None:
    """The limiter for `settings`, or None when WALLET_PROXY_CLIENT_RATE is unset."""
    # X-RateLimit-Reset is read by clients: real epoch seconds, whatever clock paces the bucket
    return RateLimiter(settings.client_rate, clock=clock) if settings.client_rate else None
