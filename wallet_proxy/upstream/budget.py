"""A rate budget shared by every process and host: pacing.TokenBucket's interface, kept in Redis.

The same bucket arithmetic as `pacing.TokenBucket` (one policy), run atomically in Redis by one Lua
script on Redis's own clock (`TIME`), so processes on hosts whose clocks differ still share one
budget. Braze counts its limits per API key, not per process: with several web processes or a CLI run
beside them, only a shared budget keeps the sum under Braze's limit. When Redis fails, the bucket falls
back to a `pacing.TokenBucket` in this process (logged once) until Redis answers again.
"""
from __future__ import annotations

import logging
import math
import threading
import time

from .pacing import TokenBucket

log = logging.getLogger(__name__)

# KEYS[1] the bucket; ARGV: rate, capacity, n, mode (take|peek|reserve|refund|hold), ttl ms.
# Returns {wait seconds, tokens} as strings (Lua numbers would come back truncated to integers).
_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local mode = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = capacity
  stamp = now
end
if now > stamp then
  tokens = math.min(capacity, tokens + (now - stamp) * rate)
  stamp = now
end
local wait = 0
if mode == 'take' then
  if n - tokens > 1e-9 then wait = math.max(0.001, (n - tokens) / rate) else tokens = tokens - n end
elseif mode == 'peek' then
  if n - tokens > 1e-9 then wait = math.max(0.001, (n - tokens) / rate) end
elseif mode == 'reserve' then
  tokens = tokens - n
  if tokens < -1e-9 then wait = -tokens / rate end
elseif mode == 'refund' then
  tokens = math.min(capacity, tokens + n)
elseif mode == 'hold' then
  tokens = math.min(tokens, 1 - n * rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(stamp))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {tostring(wait), tostring(tokens)}
"""


class RedisTokenBucket:
    """`rate` tokens a second up to `capacity`, shared through Redis under `key` (see pacing.TokenBucket)."""

    def __init__(self, client, key: str, rate: float, capacity: float, *, monotonic=time.monotonic,
                 retry_after: float = 2.0):
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.client = client
        self.key = key
        self.rate = float(rate)
        self.capacity = float(capacity)
        # The key outlives a full refill: an idle bucket's state is then the same as a missing one.
        self._ttl_ms = int(math.ceil(capacity / rate + 60) * 1000)
        self._script = client.register_script(_SCRIPT)
        self.local = TokenBucket(rate, capacity, monotonic)
        self.monotonic = monotonic
        self.retry_after = retry_after
        self._down_until = 0.0
        self._lock = threading.Lock()

    @classmethod
    def for_window(cls, client, key: str, limit: int, window: float, burst: int, **kwargs) -> "RedisTokenBucket":
        """At most `limit` calls in ANY `window` seconds across every process (pacing's arithmetic)."""
        shape = TokenBucket.for_window(limit, window, burst)
        return cls(client, key, shape.rate, shape.capacity, **kwargs)

    def _run(self, mode: str, n: float) -> tuple[float, float] | None:
        if self.monotonic() < self._down_until:
            return None
        try:
            wait, tokens = self._script(keys=[self.key], args=[repr(self.rate), repr(self.capacity), repr(n),
                                                                mode, self._ttl_ms])
            return float(wait), float(tokens)
        except Exception as exc:  # any Redis trouble: pace this process alone for a while
            with self._lock:
                first = self._down_until == 0.0 or self.monotonic() >= self._down_until
                self._down_until = self.monotonic() + self.retry_after
            if first:
                log.warning("shared rate budget %s: Redis failed (%s); pacing this process alone",
                            self.key, type(exc).__name__)
            return None

    def take(self, n: float = 1.0) -> float:
        found = self._run("take", n)
        return self.local.take(n) if found is None else found[0]

    def wait_time(self, n: float = 1.0) -> float:
        found = self._run("peek", n)
        return self.local.wait_time(n) if found is None else found[0]

    def reserve(self, n: float = 1.0) -> float:
        found = self._run("reserve", n)
        return self.local.reserve(n) if found is None else found[0]

    def refund(self, n: float = 1.0) -> None:
        if self._run("refund", n) is None:
            self.local.refund(n)

    def hold(self, seconds: float) -> None:
        self.local.hold(seconds)  # this process pauses even if Redis is down
        self._run("hold", seconds)

    @property
    def tokens(self) -> float:
        found = self._run("peek", 0.0)
        return self.local.tokens if found is None else found[1]
