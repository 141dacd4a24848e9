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

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        self.rate = rate
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
            retry = max(1, math.ceil(wait))
            error = RateLimited(f"client {client!r} is over its rate limit of {self.rate:g} requests/s",
                                retry_after=retry)
            # Braze's own headers too: Braze client libraries read X-RateLimit-Reset (UTC epoch
            # seconds), not Retry-After, to decide when to retry
            error.headers = {"X-RateLimit-Limit": f"{self.rate:g}", "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset": str(math.ceil(time.time()) + retry)}
            raise error


def build(settings, clock=time.monotonic) -> RateLimiter | None:
    """The limiter for `settings`, or None when WALLET_PROXY_CLIENT_RATE is unset."""
    return RateLimiter(settings.client_rate, clock=clock) if settings.client_rate else None
