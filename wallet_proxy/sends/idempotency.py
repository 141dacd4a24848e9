"""At-most-once bookkeeping for triggered sends: one record per Idempotency-Key, kept 24 h.

A record is a JSON object: `hash` (of the request body), `owner` and `lease_until` while a request is
working on it (`pending`), and `chunks`, each in a `ChunkState` (see chunks.py, which owns the state
machine): a repeat resends only the resendable ones. A SENDING chunk whose lease ran out (the process
died mid-call) becomes UNKNOWN, never NEW. Both stores share the decisions below; they only differ
in how a record is swapped atomically.

Losing Redis (a restart, a failover with replication lag) must not lose a record (#25):
- the SENDING mark is durable before Braze is called: with a replica attached, each write waits
  (WAIT) until a replica has it, and a write no replica acknowledged in time refuses the send (503,
  nothing sent); without a replica, durability rests on Redis's append-only file (README, Redis);
- Braze's answer always reaches the caller: when its result cannot be recorded (Redis went away
  after Braze accepted), the caller still gets it, and a repeat finds the durable SENDING mark,
  which turns UNKNOWN when its lease runs out: `outcome_unknown`, never a second send.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid

from cachetools import TTLCache

from ..errors import Conflict, UpstreamUnavailable
from .chunks import LEASE_EXPIRED, ChunkState, abandon_in_flight, resendable, state_of

log = logging.getLogger(__name__)

RETENTION = 86400.0  # SPEC: a repeat within 24 h answers the first result
LEASE = 300.0  # a request working on a key renews this with every chunk it records
# Most milliseconds a record write waits for a replica's acknowledgement (WAIT). A replica on the
# same LAN acknowledges in about a millisecond; Redis notices a WAIT's timeout on its next tick (up
# to 100 ms later at the default hz 10), and the client's socket timeout is 150 ms.
WAIT_MS = 30
# Seconds between looks at how many replicas the master has (INFO replication).
REPLICAS_EVERY = 1.0


class Claim:
    """What `begin` decided: `replay` (answer `record` as is) or work on `record` as `owner`."""

    def __init__(self, record: dict, owner: str | None, replay: bool):
        self.record = record
        self.owner = owner
        self.replay = replay


def _expire_lease(record: dict) -> dict:
    """A dead owner's in-flight chunks may have been sent: mark them unknown, free the record."""
    abandon_in_flight(record["chunks"], LEASE_EXPIRED)
    record["pending"] = False
    record["owner"] = None
    return record


class IdempotencyStore:
    """The shared protocol; subclasses provide `_transact(key, fn)` and `_wait(key, timeout)`."""

    name = "abstract"

    def __init__(self, clock=time.time, wait_timeout: float = 30.0, lease: float = LEASE,
                 retention: float = RETENTION):
        self.clock = clock
        self.wait_timeout = wait_timeout
        self.lease = lease
        self.retention = retention

    def begin(self, key: str, digest: str, chunks: list[dict]) -> Claim:
        """Claim `key` for a request whose body hashes to `digest`; wait while another request holds it."""
        owner = uuid.uuid4().hex
        waited_until = time.monotonic() + self.wait_timeout
        while True:
            claim = self._transact(key, lambda record: self._decide(record, digest, chunks, owner))
            if claim is not None:
                return claim
            left = waited_until - time.monotonic()
            if left <= 0:
                raise UpstreamUnavailable("a request with this Idempotency-Key is still being sent; "
                                          "repeat it shortly for its result", retry_after=2)
            self._wait(key, min(left, 0.5))

    def _decide(self, record: dict | None, digest: str, chunks: list[dict], owner: str):
        now = self.clock()
        if record is not None and record.get("expires_at", 0) <= now:
            record = None
        if record is None:
            fresh = {"hash": digest, "pending": True, "owner": owner, "lease_until": now + self.lease,
                     "expires_at": now + self.retention, "chunks": chunks}
            return fresh, Claim(json.loads(json.dumps(fresh)), owner, replay=False)
        if record["hash"] != digest:
            raise Conflict("this Idempotency-Key was used with a different request body",
                           details={"idempotency_key": ["already used with another body"]})
        if record.get("pending"):
            if record["lease_until"] > now:
                return None, None  # someone is sending: wait for them
            record = _expire_lease(record)
        if not resendable(record["chunks"]):
            return record, Claim(record, None, replay=True)
        record.update(pending=True, owner=owner, lease_until=now + self.lease)
        return record, Claim(json.loads(json.dumps(record)), owner, replay=False)

    def record(self, key: str, owner: str, chunks: list[dict], done: bool = False) -> None:
        """Save the chunk states of the request that owns `key`; `done` releases the key."""

        def update(record):
            if record is None or record.get("owner") != owner:
                return None, None  # our lease ran out and someone else took over: theirs is the truth
            record["chunks"] = chunks
            record["lease_until"] = self.clock() + self.lease
            if done:
                record.update(pending=False, owner=None)
            return record, None

        try:
            self._transact(key, update)
        except UpstreamUnavailable:
            if any(state_of(chunk) is ChunkState.SENDING for chunk in chunks):
                raise  # the in-flight mark: Braze is not called unless it is durable
            # A result: Braze has answered, and its answer must reach the caller (a 503 would make it
            # repeat). The durable SENDING mark makes a repeat answer outcome_unknown, never resend.
            log.warning("could not record the result of a triggered send; a repeat of its key will "
                        "answer outcome_unknown for the chunks it sent")
            return
        if done:
            self._notify(key)

    def _notify(self, key: str) -> None:
        pass


class MemoryIdempotency(IdempotencyStore):
    """Records in a cachetools TTLCache under one lock; waiters sleep on a condition variable."""

    name = "memory"

    def __init__(self, maxsize: int = 100_000, **kwargs):
        super().__init__(**kwargs)
        self._cache: TTLCache = TTLCache(maxsize=maxsize, ttl=self.retention, timer=self.clock)
        self._cond = threading.Condition()

    def _transact(self, key, fn):
        with self._cond:
            current = self._cache.get(key)
            new, result = fn(json.loads(current) if current else None)
            if new is not None:
                self._cache[key] = json.dumps(new)
            return result

    def _wait(self, key, timeout):
        with self._cond:
            self._cond.wait(timeout)

    def _notify(self, key):
        with self._cond:
            self._cond.notify_all()


class RedisIdempotency(IdempotencyStore):
    """Records in Redis, swapped with WATCH/MULTI, so several processes and hosts share them."""

    name = "redis"
    PREFIX = "wallet-proxy:idem:"

    def __init__(self, redis, poll: float = 0.05, wait_ms: int = WAIT_MS, **kwargs):
        super().__init__(**kwargs)
        self.redis = redis
        self.poll = poll
        self.wait_ms = wait_ms
        self._replicas = 0
        self._replicas_at = float("-inf")  # monotonic time of the last INFO replication

    def replicas(self) -> int:
        """Replicas a write must reach (0 or 1): one when the master has any attached.

        Read from INFO replication at most every REPLICAS_EVERY s. A cluster client is not asked: its
        records live on the node of their slot, whose replicas the cluster manages.
        """
        from ..redis_client import ClusterClient

        if isinstance(self.redis, ClusterClient):
            return 0
        now = time.monotonic()
        if now - self._replicas_at >= REPLICAS_EVERY:
            info = self.redis.info("replication")
            self._replicas = 1 if int(info.get("connected_slaves", 0) or 0) > 0 else 0
            self._replicas_at = now
        return self._replicas

    def _durable(self, name: str, ttl: int) -> None:
        """Return once a replica holds the write just made to `name`; raise when none did in time.

        WAIT counts the writes of the connection it is sent on, and the transaction's connection
        went back to the pool: so a write that always replicates (the record's own expiry, set
        again) goes first on the same connection, in one round trip.
        """
        wanted = self.replicas()
        if not wanted:
            return
        from ..redis_client import errors

        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.expire(name, ttl)
                pipe.wait(wanted, self.wait_ms)
                acknowledged = pipe.execute()[-1]
        except errors():
            acknowledged = 0  # the master went away or is too slow: not known to be durable
        if acknowledged < wanted:
            self._replicas_at = float("-inf")  # look again: the replica may be gone for good
            raise UpstreamUnavailable("the idempotency record did not reach a Redis replica in time; "
                                      "nothing was sent, retry shortly", retry_after=2)

    def _transact(self, key, fn):
        import redis as redis_lib

        from ..redis_client import errors

        name = self.PREFIX + key
        # transaction=True: a cluster client's pipeline only takes WATCH/MULTI when asked for one
        # (a record is one key, so the transaction stays on one node).
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(name)
                    raw = pipe.get(name)
                    new, result = fn(json.loads(raw) if raw else None)
                    if new is None:
                        pipe.unwatch()
                        return result
                    ttl = max(1, int(new["expires_at"] - self.clock()))
                    pipe.multi()
                    pipe.set(name, json.dumps(new, separators=(",", ":")), ex=ttl)
                    pipe.execute()
                    self._durable(name, ttl)
                    return result
                except redis_lib.WatchError:
                    continue  # another process changed the record between our read and write
                except errors() as exc:
                    # Without the record we cannot promise at most once: refuse rather than risk a resend.
                    raise UpstreamUnavailable("the idempotency store (Redis) is unreachable; retry later",
                                              retry_after=5) from exc

    def _wait(self, key, timeout):
        # Polling keeps this simple; a waiter is rare (a repeat racing its first attempt).
        time.sleep(min(timeout, self.poll))
