"""A rate budget shared by every process and host: pacing's token bucket, kept in Redis.

`RedisTokenBucket` has `pacing.TokenBucket`'s interface (`take`, `wait_time`, `reserve`, `refund`,
`hold`, `tokens`) and the same arithmetic, run atomically by one Lua script on one key, so any number
of processes sharing a Braze API key stay together under Braze's limits (issue #13, SPEC
"Configuration": the Braze rate budget is shared through Redis when it is configured). The script
reads Redis's own clock (`TIME`), so hosts with skewed clocks still share one bucket. One key per
bucket, so a Redis Cluster keeps each script on one slot.

If Redis cannot be reached the bucket falls back to an in-process one (logged once per outage):
sends keep going at this process's share rather than stopping.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time

from .pacing import TokenBucket

log = logging.getLogger(__name__)

PREFIX = "wallet-proxy:budget:"

# KEYS[1]: the bucket. ARGV: rate, capacity, n, op, ttl_ms, now ("" = Redis's clock).
# Answers the wait in seconds as a string (Redis would truncate a Lua number to an integer).
_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local op = ARGV[4]
local now
if ARGV[6] ~= '' then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
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
local missing = n - tokens
if op == 'take' then
  if missing > 1e-9 then wait = math.max(0.001, missing / rate) else tokens = tokens - n end
elseif op == 'peek' then
  if missing > 1e-9 then wait = math.max(0.001, missing / rate) end
elseif op == 'reserve' then
  tokens = tokens - n
  if tokens < -1e-9 then wait = -tokens / rate end
elseif op == 'refund' then
  tokens = math.min(capacity, tokens + n)
elseif op == 'hold' then
  tokens = math.min(tokens, 1 - n * rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp', string.format('%.17g', stamp))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {string.format('%.17g', wait), string.format('%.17g', tokens)}
"""


class RedisTokenBucket:
    """`pacing.TokenBucket` over Redis: one hash per bucket, changed only by one atomic Lua script."""

    def __init__(self, client, name: str, rate: float, capacity: float, *, clock=None, fallback=None):
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.client = client
        self.key = PREFIX + name
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.clock = clock  # None: Redis's own clock (TIME), shared by every host
        # idle for longer than a full refill, the bucket is simply full: let the key expire then
        self.ttl_ms = int(math.ceil(capacity / rate + 60) * 1000)
        self.fallback = fallback or TokenBucket(rate, capacity, clock=time.monotonic)
        self._script = client.register_script(_SCRIPT)
        self._degraded = False

    @classmethod
    def for_window(cls, client, name: str, limit: int, window: float, burst: int, **kwargs):
        """As `TokenBucket.for_window`: at most `limit` calls in any `window` seconds, fleet-wide."""
        local = TokenBucket.for_window(limit, window, burst)
        return cls(client, name, local.rate, local.capacity, fallback=local, **kwargs)

    def _run(self, op: str, n: float, fallback):
        now = "" if self.clock is None else repr(float(self.clock()))
        try:
            wait, tokens = self._script(keys=[self.key], args=[repr(self.rate), repr(self.capacity),
                                                               repr(float(n)), op, self.ttl_ms, now])
        except Exception as exc:  # redis.RedisError and socket errors: keep sending at our own pace
            if not self._degraded:
                log.warning("shared rate budget %s unreachable in Redis (%s): this process paces "
                            "itself alone until Redis answers", self.key, type(exc).__name__)
                self._degraded = True
            return fallback()
        if self._degraded:
            log.warning("shared rate budget %s back in Redis", self.key)
            self._degraded = False
        return float(wait), float(tokens)

    def take(self, n: float = 1.0) -> float:
        return self._run("take", n, lambda: (self.fallback.take(n), None))[0]

    def wait_time(self, n: float = 1.0) -> float:
        return self._run("peek", n, lambda: (self.fallback.wait_time(n), None))[0]

    def reserve(self, n: float = 1.0) -> float:
        return self._run("reserve", n, lambda: (self.fallback.reserve(n), None))[0]

    def refund(self, n: float = 1.0) -> None:
        self._run("refund", n, lambda: (self.fallback.refund(n), None))

    def hold(self, seconds: float) -> None:
        self._run("hold", seconds, lambda: (self.fallback.hold(seconds), None))

    @property
    def tokens(self) -> float:
        result = self._run("peek", 0.0, lambda: (0.0, self.fallback.tokens))
        return result[1]


def budget_name(api_key: str, bucket: str) -> str:
    """The Redis name of a Braze budget: per API key (Braze's limits are per workspace), never the key."""
    return "braze:" + hashlib.sha256(api_key.encode()).hexdigest()[:16] + ":" + bucket
