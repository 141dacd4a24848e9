"""Wallet stores: the in-process cache (cachetools) and the interface the Redis store shares."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from cachetools import TTLCache


@dataclass(frozen=True)
class Entry:
    """A normalised wallet, when (epoch seconds) it was fetched, and its own TTL if not the default.

    `ttl` is set by `wallet-proxy prewarm --ttl` so wallets fetched ahead of a send stay fresh until
    the send reaches them.
    """

    wallet: dict
    fetched_at: float
    ttl: float | None = None

    def to_json(self) -> dict:
        return {"wallet": self.wallet, "fetched_at": self.fetched_at, "ttl": self.ttl}

    @classmethod
    def from_json(cls, data: dict) -> "Entry":
        return cls(data["wallet"], float(data["fetched_at"]), data.get("ttl"))


class MemoryStore:
    """Wallets per user, each culture a field; entries live for TTL + stale window, LRU-bounded.

    cachetools caches are not thread-safe: every access goes through one lock, held only for the
    dictionary operation, never during I/O.
    """

    name = "memory"

    def __init__(self, maxsize: int, ttl: float, timer=time.time):
        self._cache: TTLCache = TTLCache(maxsize=maxsize, ttl=max(ttl, 0.001), timer=timer)
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
            self._cache[user_id] = cultures

    def forget(self, user_id: str) -> None:
        """Drop every culture of a user."""
        with self._lock:
            self._cache.pop(user_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def healthy(self) -> bool:
        return True
