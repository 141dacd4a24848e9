"""The shared wallet cache on Redis, and the cross-process single-flight lock.

Redis is an optimisation, never a dependency of an answer: every Redis error or slow reply (short
socket timeouts, so Redis cannot eat the 1.8 s deadline) makes the store fall back to this process's
MemoryStore for a short back-off, reported by `healthy()` (and so `/readyz`) and counted.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import redis
from cachetools import LRUCache

from ..errors import UpstreamTimeout, UpstreamUnavailable
from ..redis_client import errors
from . import keys
from .stores import Entry, MemoryStore

log = logging.getLogger(__name__)

# RedisError, and a cluster's topology errors (RedisClusterException is not a RedisError).
REDIS_ERRORS = errors()

# Seconds Redis is left alone after an error before one request tries it again.
BACKOFF = 2.0

# Delete the lock only if it still holds our token: an expired lock re-taken by another process
# must not be released by us (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


DECODED_MAX = 1024  # decoded entries kept per process


class RedisStore:
    """Wallets in one Redis hash per user (a field per culture), falling back to memory on errors.

    Every entry is also written to the in-process MemoryStore, so when Redis goes away this process
    keeps serving what it has seen (fresh, or stale-if-error) instead of hammering SessionM.
    """

    name = "redis"

    def __init__(self, client: redis.Redis, fallback: MemoryStore, cache_ttl: float, stale_ttl: float,
                 *, clock=time.time, monotonic=time.monotonic, backoff: float = BACKOFF, metrics=None):
        self.client = client
        self.fallback = fallback
        self.cache_ttl = cache_ttl
        self.stale_ttl = stale_ttl
        self.clock = clock
        self.monotonic = monotonic
        self.backoff = backoff
        self.metrics = metrics
        self._lock = threading.Lock()
        self._degraded = False
        self._retry_at = 0.0
        self.errors_total = 0  # Redis calls that failed
        self.fallbacks_total = 0  # healthy -> degraded transitions
        # Stored JSON -> its decoded Entry: the renders of a send read the same bytes again and
        # again, and decoding a wallet costs more than fetching it from Redis.
        self._decoded: LRUCache = LRUCache(maxsize=DECODED_MAX)

    # -- the MemoryStore interface ------------------------------------------------------------

    def get(self, user_id: str, culture: str) -> Entry | None:
        """Return the cached entry for (user, culture): from Redis, or memory while Redis is down."""
        if not self._use_redis():
            return self.fallback.get(user_id, culture)
        try:
            raw = self.client.hget(keys.wallet_key(user_id), culture)
        except REDIS_ERRORS as exc:
            self._trip(exc)
            return self.fallback.get(user_id, culture)
        self._recovered()
        return self._decode(raw, user_id)

    def put(self, user_id: str, culture: str, entry: Entry) -> None:
        """Store an entry in memory and in Redis, the user's key expiring after TTL + stale window."""
        self.fallback.put(user_id, culture, entry)
        if not self._use_redis():
            return
        key = keys.wallet_key(user_id)
        expire = max(1, int(round((entry.ttl or self.cache_ttl) + self.stale_ttl)))
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, culture, json.dumps(entry.to_json(), separators=(",", ":")))
            pipe.expire(key, expire)
            pipe.execute()
        except REDIS_ERRORS as exc:
            self._trip(exc)
            return
        self._recovered()

    def forget(self, user_id: str) -> None:
        """Drop every culture of a user from Redis and memory; raise 503 if Redis cannot be reached."""
        self.fallback.forget(user_id)
        try:
            self.client.delete(keys.wallet_key(user_id))
        except REDIS_ERRORS as exc:
            self._trip(exc)
            # A 204 would claim the shared copy is gone; Braze/operators must retry instead.
            raise UpstreamUnavailable("the shared cache (Redis) is unreachable; the wallet may still be "
                                      "cached by other processes", retry_after=self.backoff) from exc
        self._recovered()

    def healthy(self) -> bool:
        """False while Redis is failing and this process serves from its own memory."""
        return not self._degraded

    def __len__(self) -> int:
        return len(self.fallback)

    # -- used by the locker --------------------------------------------------------------------

    def get_raw(self, user_id: str, culture: str) -> bytes | None:
        """The stored JSON of (user, culture) in Redis; raises one of REDIS_ERRORS."""
        return self.client.hget(keys.wallet_key(user_id), culture)

    def decode(self, raw: bytes | None, user_id: str = "") -> Entry | None:
        """Entry from its stored JSON (None when absent or unreadable)."""
        return self._decode(raw, user_id)

    def fresh(self, entry: Entry | None) -> Entry | None:
        """`entry` if it is still within its TTL, else None."""
        if entry is not None and self.clock() - entry.fetched_at < (entry.ttl or self.cache_ttl):
            return entry
        return None

    # -- degradation -------------------------------------------------------------------------

    def _use_redis(self) -> bool:
        if not self._degraded:
            return True
        with self._lock:
            now = self.monotonic()
            if now < self._retry_at:
                return False
            # One request probes Redis; the others keep using memory until it answers.
            self._retry_at = now + self.backoff
            return True

    def _trip(self, exc: Exception) -> None:
        self.errors_total += 1
        with self._lock:
            was_degraded, self._degraded = self._degraded, True
            self._retry_at = self.monotonic() + self.backoff
        if not was_degraded:
            self.fallbacks_total += 1
            log.warning("Redis failed (%s); serving from the in-process cache, retrying Redis in %.0fs",
                        type(exc).__name__, self.backoff)
            if self.metrics is not None and hasattr(self.metrics, "cache_fallback"):
                self.metrics.cache_fallback()

    def _recovered(self) -> None:
        if self._degraded:
            with self._lock:
                was_degraded, self._degraded = self._degraded, False
            if was_degraded:
                log.warning("Redis answers again; back to the shared cache")

    def note_error(self, exc: Exception) -> None:
        """Record a Redis failure seen by a collaborator (the locker)."""
        self._trip(exc)

    def _decode(self, raw, user_id: str) -> Entry | None:
        if raw is None:
            return None
        with self._lock:
            known = self._decoded.get(raw)
        if known is not None:
            return known
        try:
            entry = Entry.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            # A cache problem is a miss (STYLE: cachecontrol), never a failed request.
            log.warning("unreadable cached wallet in Redis; treating as a miss")
            return None
        with self._lock:
            self._decoded[raw] = entry
        return entry


class RedisLocker:
    """Cross-process single flight: one SessionM call per (user, culture) across all processes.

    The process that takes the lock (SET NX PX, expiring after the call's timeout + a margin, so a
    crashed holder never blocks a key for long) makes the call; the others poll Redis until a newer
    entry lands, or take over if the holder gave up without storing one.
    """

    def __init__(self, client: redis.Redis, store: RedisStore, *, margin: float = 0.5,
                 poll: float = 0.01, max_poll: float = 0.05, monotonic=time.monotonic, sleep=time.sleep):
        self.client = client
        self.store = store
        self.margin = margin
        self.poll = poll
        self.max_poll = max_poll
        self.monotonic = monotonic
        self.sleep = sleep
        self._release = client.register_script(_RELEASE)
        self.waits_total = 0  # calls served by another process's fetch

    def fetch_once(self, user_id: str, culture: str, timeout: float, call) -> Entry:
        """Run `call()` if this process wins the lock, else wait up to `timeout` for the winner's entry."""
        if not self.store.healthy():
            return call()  # Redis is down: single flight within this process is all we can do
        key = keys.flight_key(user_id, culture)
        token = uuid.uuid4().hex
        end = self.monotonic() + timeout
        try:
            before = self.store.get_raw(user_id, culture)
            won = self.client.set(key, token, nx=True, px=int((timeout + self.margin) * 1000))
        except REDIS_ERRORS as exc:
            self.store.note_error(exc)
            return call()
        delay = self.poll
        while not won:
            if self.monotonic() + delay > end:
                raise UpstreamTimeout("another process's SessionM call did not land before this "
                                      "request's deadline")
            self.sleep(delay)
            delay = min(self.max_poll, delay * 1.5)
            try:
                raw = self.store.get_raw(user_id, culture)
                if raw is not None and raw != before:
                    entry = self.store.decode(raw, user_id)
                    if entry is not None:
                        self.waits_total += 1
                        self.store.fallback.put(user_id, culture, entry)
                        return entry
                # The holder finished (or died) without storing: try to take over.
                won = self.client.set(key, token, nx=True,
                                      px=int((max(0.05, end - self.monotonic()) + self.margin) * 1000))
            except REDIS_ERRORS as exc:
                self.store.note_error(exc)
                return call()
        try:
            # Double check under the lock: the previous holder may have stored a fresh entry and
            # released the lock between this request's cache miss and its SET NX.
            try:
                landed = self.store.fresh(self.store.decode(self.store.get_raw(user_id, culture), user_id))
            except REDIS_ERRORS as exc:
                self.store.note_error(exc)
                landed = None
            if landed is not None:
                self.waits_total += 1
                self.store.fallback.put(user_id, culture, landed)
                return landed
            return call()
        finally:
            try:
                self._release(keys=[key], args=[token])
            except REDIS_ERRORS as exc:  # the lock expires by itself
                self.store.note_error(exc)
