"""Wallet stores: what a store is (`Store`), and the in-process one (cachetools).

The shared one, over Redis, is `wallet_proxy.wallet.redis_store.RedisStore`.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cachetools import LRUCache, TTLCache


@dataclass(frozen=True)
class Entry:
    """A normalised wallet, when (epoch seconds) it was fetched, and its own TTL if not the default.

    `ttl` is set by `wallet-proxy prewarm --ttl` so wallets fetched ahead of a send stay fresh until
    the send reaches them.
    """

    wallet: dict
    fetched_at: float
    ttl: float | None = None
    # Names this fetch (rendered bodies are keyed by it): two fetches in the same instant differ.
    stamp: str = field(default_factory=lambda: os.urandom(8).hex(), compare=False)

    def to_json(self) -> dict:
        return {"wallet": self.wallet, "fetched_at": self.fetched_at, "ttl": self.ttl, "stamp": self.stamp}

    @classmethod
    def from_json(cls, data: dict) -> "Entry":
        return cls(data["wallet"], float(data["fetched_at"]), data.get("ttl"),
                   data.get("stamp") or os.urandom(8).hex())


@runtime_checkable
class Store(Protocol):
    """What a wallet store is: entries per (user, culture), kept for TTL + stale window at least.

    The wallet service, the routes, /readyz, the metrics and the prewarm job use only these; a
    store never raises for its own faults (a cache fault is a miss, and `healthy()` says so).
    """

    name: str  # "memory" or "redis": /readyz reports it

    def get(self, user_id: str, culture: str) -> Entry | None:
        """The cached entry of (user, culture), or None."""

    def put(self, user_id: str, culture: str, entry: Entry) -> None:
        """Store an entry; the user's other cultures stay."""

    def forget(self, user_id: str) -> None:
        """Drop every culture of a user."""

    def healthy(self) -> bool:
        """False while the store serves from a fallback (Redis failing): /readyz says degraded."""


class MemoryStore:
    """Wallets per user, each culture a field; entries live for TTL + stale window, LRU-bounded.

    cachetools caches are not thread-safe: every access goes through one lock, held only for the
    dictionary operation, never during I/O.
    """

    name = "memory"

    def __init__(self, maxsize: int, ttl: float, timer=time.time):
        # Sized in wallets, not users (WALLET_PROXY_CACHE_SIZE counts wallets): a user's entry
        # weighs as many as the cultures it holds.
        self._cache: TTLCache = TTLCache(maxsize=maxsize, ttl=max(ttl, 0.001), timer=timer, getsizeof=len)
        self._lock = threading.Lock()

    def get(self, user_id: str, culture: str) -> Entry | None:
        """Return the cached entry for (user, culture), if any."""
        with self._lock:
            cultures = self._cache.get(user_id)
            return cultures.get(culture) if cultures else None

    def put(self, user_id: str, culture: str, entry: Entry) -> None:
        """Store an entry; the user's other cultures stay."""
        with self._lock:
            cultures = dict(self._cache.get(user_id) or {})
            cultures[culture] = entry
            if len(cultures) > self._cache.maxsize:  # more cultures than the whole cache holds
                cultures = {culture: entry}
            self._cache[user_id] = cultures

    def forget(self, user_id: str) -> None:
        """Drop every culture of a user."""
        with self._lock:
            self._cache.pop(user_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def healthy(self) -> bool:
        """Always: the process's own memory does not fail."""
        return True


class RenderCache:
    """Recently rendered wallet bodies, so the HTML, text and AMP renders of one message (and every
    recipient of a hot wallet) skip flattening and JSON encoding. An item carries its own expiry:
    the moment the view would change (see view.next_change)."""

    def __init__(self, maxsize: int = 4096):
        self._cache: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

    def get(self, key, now: float):
        """Return the cached (body, etag) for `key` if still valid at `now`."""
        with self._lock:
            item = self._cache.get(key)
        if item is None or item[2] <= now:
            return None
        return item[0], item[1]

    def put(self, key, body: bytes, etag: str, valid_until: float) -> None:
        with self._lock:
            self._cache[key] = (body, etag, valid_until)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
