"""The shared wallet cache on Redis, and the cross-process single-flight lock.

Redis is an optimisation, never a dependency of an answer: every Redis error or slow reply (short
socket timeouts, so Redis cannot eat the 1.8 s deadline) makes the store fall back to this process's
MemoryStore for a short back-off, reported by `healthy()` (and so `/readyz`) and counted.

Near cache: a hit must not cost a Redis round trip (a send reads each wallet 2-3 times, and the
renders land on any process), so every process keeps the fresh entries it has seen, and a purge
reaches all of them as a notice on one pub/sub channel (sharded on a cluster: see
redis_client.publish). Each read first applies the notices already received, without waiting: Redis
queues a notice to every subscriber before it answers the purge's PUBLISH, so once a DELETE has
answered, the next read in any process finds the notice on its socket and goes past its near copy.
While this process is not subscribed (Redis down, connection lost, not yet confirmed), there is no
near cache: notices may have been missed, so every entry kept before is dropped.

Why pub/sub and not server-assisted client-side caching (RESP3 CLIENT TRACKING): tracking has to be
switched on for every pooled connection, and on a cluster per node with a redirect connection to
each, and starts afresh after every failover; one channel works the same on a single server,
Sentinel and Cluster. Only purges need it: an entry is never replaced before its TTL ends except
by a purge, and a near copy is served only while it is fresh (a refresh past the TTL reads Redis).
"""
from __future__ import annotations

import json
import logging
import os
import select
import ssl
import sys
import threading
import time
import uuid
import weakref

import redis
from cachetools import LRUCache

from ..errors import UpstreamTimeout, UpstreamUnavailable
from .. import redis_client
from ..redis_client import errors
from . import keys
from .stores import Entry, MemoryStore

log = logging.getLogger(__name__)

# RedisError, and a cluster's topology errors (RedisClusterException is not a RedisError).
REDIS_ERRORS = errors()

# Seconds Redis is left alone after an error before one request tries it again. Short, because a
# Sentinel failover's last errors come just before the new master answers: with 2 s, a process that
# tripped then was still off the shared cache (no single flight across processes) 2-3 s after the
# failover (game day, #25). One probe per 0.5 s costs at most a 150 ms timeout per process.
BACKOFF = 0.5
# While degraded, a background thread also pings Redis every BACKOFF for up to this many seconds
# (then requests alone probe it): a process that tripped during a failover and then saw no traffic
# learns Redis is back before the next burst, whose concurrent reads would otherwise all fall back
# to memory (no single flight across processes) while its first request probes.
WATCH_FOR = 30.0

# Delete the lock only if it still holds our token: an expired lock re-taken by another process
# must not be released by us (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


DECODED_BYTES = 8 << 20  # decoded entries kept per process (bytes: their stored JSON and the entry)
NEAR_BYTES = 32 << 20  # fresh wallets kept per process (a send reads each one within seconds)
NEAR_CHECK = 1.0  # seconds between full reads of the subscription when its socket shows nothing


class RedisStore:
    """Wallets in one Redis hash per user (a field per culture), falling back to memory on errors.

    Every entry is also written to the in-process MemoryStore, so when Redis goes away this process
    keeps serving what it has seen (fresh, or stale-if-error) instead of hammering SessionM.
    """

    name = "redis"

    def __init__(self, client: redis.Redis, fallback: MemoryStore, cache_ttl: float, stale_ttl: float,
                 *, clock=time.time, monotonic=time.monotonic, backoff: float = BACKOFF, metrics=None,
                 near_bytes: int = NEAR_BYTES):
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
        self._watching = False
        self.errors_total = 0  # Redis calls that failed
        self.fallbacks_total = 0  # healthy -> degraded transitions
        # Stored JSON -> its decoded Entry: the renders of a send read the same bytes again and
        # again, and decoding a wallet costs more than fetching it from Redis.
        self._decoded: LRUCache = LRUCache(maxsize=DECODED_BYTES, getsizeof=lambda item: item[1])
        # The near cache and the purge subscription that keeps it honest (see the module docstring).
        self.near_bytes = near_bytes
        self.near = MemoryStore(near_bytes, cache_ttl, timer=clock)
        self._near_lock = threading.Lock()
        self._pubsub = None
        self._message_type = "message"
        self._poller = None  # poll(2) on the subscription's socket: is a notice waiting?
        self._check_at = 0.0
        self._subscribe_at = 0.0
        forked = weakref.WeakMethod(self._forked)
        os.register_at_fork(after_in_child=lambda: forked() and forked()())
        self._generation = 0  # bumped by every purge notice applied and every near cache reset
        self.near_hits_total = 0

    # -- the MemoryStore interface ------------------------------------------------------------

    def get(self, user_id: str, culture: str) -> Entry | None:
        """Return the cached entry for (user, culture): a fresh near copy, else from Redis, or from
        memory while Redis is down."""
        if not self._use_redis():
            return self.fallback.get(user_id, culture)
        if self._listening():
            entry = self.near.get(user_id, culture)
            if entry is not None and self.fresh(entry) is not None:
                self.near_hits_total += 1
                return entry
        generation = self._generation
        try:
            raw = self.client.hget(keys.wallet_key(user_id), culture)
        except REDIS_ERRORS as exc:
            self._trip(exc)
            return self.fallback.get(user_id, culture)
        self._recovered()
        entry = self._decode(raw, user_id)
        self._keep_near(user_id, culture, entry, generation)
        return entry

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
        self._keep_near(user_id, culture, entry, self._generation)

    def forget(self, user_id: str) -> None:
        """Drop every culture of a user from Redis and memory, and tell every process to drop its
        near copies; raise 503 if Redis cannot be reached."""
        self.fallback.forget(user_id)
        self.near.forget(user_id)
        try:
            self.client.delete(keys.wallet_key(user_id))
            redis_client.publish(self.client, keys.PURGE_CHANNEL, user_id)
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

    def keep_local(self, user_id: str, culture: str, entry: Entry) -> None:
        """Keep in this process's memory an entry another process stored in Redis (served from here
        if Redis fails next)."""
        self.fallback.put(user_id, culture, entry)

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

    # -- the near cache ----------------------------------------------------------------------

    def _listening(self) -> bool:
        """Apply the purge notices received so far, without waiting; False while not subscribed."""
        with self._near_lock:
            if self._pubsub is None and not self._subscribe():
                return False
            # The hit path: one poll(2) says whether anything arrived (redis-py's own non-blocking
            # read costs ten times more); a full read once a second also runs its health check.
            now = self.monotonic()
            if now < self._check_at and not self._poller.poll(0) and not self._ssl_pending():
                return True
            self._check_at = now + NEAR_CHECK
            try:
                while True:
                    message = self._pubsub.get_message(timeout=0)
                    if message is None:
                        return True
                    if message["type"] == self._message_type:
                        self.near.forget(message["data"].decode("utf-8", "replace"))
                        self._generation += 1
                    elif message["type"] in ("subscribe", "ssubscribe"):
                        self._reset_near()  # re-subscribed on a new connection: notices were lost
            except REDIS_ERRORS as exc:
                log.warning("the purge subscription broke (%s); near cache off until it is back",
                            type(exc).__name__)
                self._drop_subscription()
                return False

    def _subscribe(self) -> bool:
        """Subscribe to purge notices, at most once per back-off; called under _near_lock."""
        now = self.monotonic()
        if now < self._subscribe_at:
            return False
        self._subscribe_at = now + self.backoff
        try:
            self._pubsub, self._message_type = redis_client.subscribe(self.client, keys.PURGE_CHANNEL)
        except REDIS_ERRORS:
            return False
        self._poller = _poll()
        self._poller.register(self._pubsub.connection._sock.fileno(), select.POLLIN | select.POLLPRI)
        self._reset_near()  # purges published while we were not listening are lost
        return True

    def _ssl_pending(self) -> bool:
        """TLS may hold decrypted bytes that poll(2) cannot see."""
        sock = self._pubsub.connection._sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def _drop_subscription(self) -> None:
        pubsub, self._pubsub, self._poller = self._pubsub, None, None
        if pubsub is not None:
            try:
                pubsub.reset()
            except Exception:  # its connection is already broken; nothing to give back
                pass
        self._reset_near()

    def _forked(self) -> None:
        """In a forked child the parent's subscription is not ours: start afresh, leaving it alone."""
        self._near_lock = threading.Lock()
        self._watching = False  # the parent's watcher thread is not in the child
        self._pubsub = self._poller = None
        self._reset_near()

    def _reset_near(self) -> None:
        self.near = MemoryStore(self.near_bytes, self.cache_ttl, timer=self.clock)
        self._generation += 1

    def _keep_near(self, user_id: str, culture: str, entry: Entry | None, generation: int) -> None:
        """Keep a fresh entry near, unless a purge notice (or a reset) came in since it was read."""
        if entry is None or self.fresh(entry) is None:
            return
        with self._near_lock:
            if self._pubsub is not None and generation == self._generation:
                self.near.put(user_id, culture, entry)

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
        # The subscription may be as broken as the call (a partition shows no error on an idle
        # socket): subscribe afresh, with an empty near cache, once Redis answers again.
        with self._near_lock:
            if self._pubsub is not None:
                self._drop_subscription()
        with self._lock:
            was_degraded, self._degraded = self._degraded, True
            self._retry_at = self.monotonic() + self.backoff
            watch, self._watching = not self._watching, True
        if watch:
            threading.Thread(target=self._watch, name="redis-watch", daemon=True).start()
        if not was_degraded:
            self.fallbacks_total += 1
            log.warning("Redis failed (%s); serving from the in-process cache, retrying Redis in %.1fs",
                        type(exc).__name__, self.backoff)
            if self.metrics is not None and hasattr(self.metrics, "cache_fallback"):
                self.metrics.cache_fallback()

    def _watch(self) -> None:
        """Ping Redis every backoff while degraded (at most WATCH_FOR s); back on it once it answers."""
        try:
            end = time.monotonic() + WATCH_FOR
            while time.monotonic() < end:
                time.sleep(self.backoff)
                if not self._degraded:
                    return
                try:
                    self.client.ping()
                except REDIS_ERRORS:
                    continue
                self._recovered()
                return
        finally:
            self._watching = False

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
            return known[0]
        try:
            entry = Entry.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            # A cache problem is a miss (STYLE: cachecontrol), never a failed request.
            log.warning("unreadable cached wallet in Redis; treating as a miss")
            return None
        with self._lock:
            self._decoded[raw] = (entry, len(raw) + entry.size)
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
                        self.store.keep_local(user_id, culture, entry)
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
                self.store.keep_local(user_id, culture, landed)
                return landed
            return call()
        finally:
            try:
                self._release(keys=[key], args=[token])
            except REDIS_ERRORS as exc:  # the lock expires by itself
                self.store.note_error(exc)


def _poll():
    """select.poll as the OS gives it: gevent's cooperative one may switch greenlets even at 0 s."""
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("select"):
            return monkey.get_original("select", "poll")()
    return select.poll()
