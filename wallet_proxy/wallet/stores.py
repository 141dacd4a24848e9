"""Wallet stores: what a store is (`Store`), and the in-process one (cachetools).

The shared one, over Redis, is `wallet_proxy.wallet.redis_store.RedisStore`.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import time
import zlib
from typing import Protocol, runtime_checkable

import orjson
from cachetools import LRUCache

from .. import jsoncodec


# Offers' keys in the order payload.offer_out writes them, and a wallet's: a preset dictionary for
# zlib, so even a one-offer wallet compresses its keys away (about 40 % smaller for 5 offers).
_ZDICT = (b'"categories":[],"truncated":false}{"id":"","name":"","sort_order":null}"user":{"opted_in":false,'
          b'"activated":false},"offers":[{"user_offer_id":"","offer_id":"","root_offer_id":"","logo_uri":'
          b'"https://","media":[{"uri":"https://","content_type":1}],"start_date":"T00:00:00Z","end_date":'
          b'"T23:59:59Z","offer_type":"manual_fulfillment","title":"","description":"","terms":"","logo_url":'
          b'"https://","pos_discount_id":null,"group_id":"","category_ids":[""],"issued_at":"","expires_at":'
          b'"","expires_ts":,"redeemed":false,"redeemable":true},{"user_id":"","total_points":'
          b',"available_points":,"groups":[')
_STAMPS = itertools.count()
_STAMP_PREFIX = int.from_bytes(os.urandom(4)) << 32  # this process's; one read from Redis is another's


def _new_stamp() -> int:
    return _STAMP_PREFIX | next(_STAMPS)


def _reseed() -> None:  # a forked worker makes stamps of its own, never its parent's or a sibling's
    global _STAMP_PREFIX
    _STAMP_PREFIX = int.from_bytes(os.urandom(4)) << 32


os.register_at_fork(after_in_child=_reseed)


SMALL_JSON = 16_384  # bytes of JSON (about 15 offers) up to which an entry is packed harder
ENTRY_OVERHEAD = 170  # bytes an Entry costs besides its compressed wallet (object, bytes header, stamp)


def pack(wallet: dict) -> bytes:
    """A normalised wallet as compact JSON, deflated with the preset dictionary."""
    try:
        text = orjson.dumps(wallet)
    except TypeError:  # a lone surrogate or an integer past 64 bits: the standard library, ASCII-escaped
        text = json.dumps(wallet, separators=(",", ":")).encode()
    # Level 6 for the usual small wallet (a cache holds most of them: 63 B smaller than level 3 for 5
    # offers, ~10 µs more); level 1 past SMALL_JSON, where level 6 would cost milliseconds per miss.
    level = 6 if len(text) <= SMALL_JSON else 1
    packer = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=_ZDICT)  # raw deflate: no header, no checksum
    return packer.compress(text) + packer.flush()


def unpack(blob: bytes) -> dict:
    unpacker = zlib.decompressobj(-15, zdict=_ZDICT)
    return jsoncodec.loads(unpacker.decompress(blob) + unpacker.flush())


class Entry:
    """A normalised wallet, when (epoch seconds) it was fetched, and its own TTL if not the default.

    Kept compact: a cache holds hundreds of thousands, and a hit needs only the times and the stamp
    (its body comes from the rendered-body cache). The wallet itself is held as deflated JSON
    (`pack`) and decoded on each read of `wallet`: once per render, not per hit. A caller reading
    it several times keeps the dict it got.

    `ttl` is set by `wallet-proxy prewarm --ttl` so wallets fetched ahead of a send stay fresh until
    the send reaches them.
    """

    __slots__ = ("blob", "fetched_at", "ttl", "stamp")

    def __init__(self, wallet: dict, fetched_at: float, ttl: float | None = None, stamp: int | str | None = None):
        self.blob = pack(wallet)
        self.fetched_at = fetched_at
        self.ttl = ttl
        # Names this fetch (rendered bodies are keyed by it): two fetches in the same instant differ.
        self.stamp = stamp or _new_stamp()

    @classmethod
    def restore(cls, blob: bytes, fetched_at: float, ttl: float | None, stamp: int | str) -> "Entry":
        """The entry of `parts` as a store kept them (the wallet already packed)."""
        entry = object.__new__(cls)
        entry.blob, entry.fetched_at, entry.ttl, entry.stamp = blob, fetched_at, ttl, stamp
        return entry

    @property
    def parts(self) -> tuple:
        """(blob, fetched_at, ttl, stamp): plain values only, which Python's garbage collector stops
        tracking in a tuple, where it must trace every Entry object on each of its full passes."""
        return self.blob, self.fetched_at, self.ttl, self.stamp

    @property
    def wallet(self) -> dict:
        """The normalised wallet (a new dict each time)."""
        return unpack(self.blob)

    @property
    def size(self) -> int:
        """Bytes of memory this entry holds, as the caches count it."""
        return _entry_size(self.blob)

    def __eq__(self, other) -> bool:  # the stamp names a fetch, it is not part of the value
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.blob, self.fetched_at, self.ttl) == (other.blob, other.fetched_at, other.ttl)

    __hash__ = None

    def __repr__(self) -> str:
        return f"Entry(fetched_at={self.fetched_at!r}, ttl={self.ttl!r}, {len(self.blob)} bytes)"

    def to_json(self) -> dict:
        return {"wallet": self.wallet, "fetched_at": self.fetched_at, "ttl": self.ttl, "stamp": self.stamp}

    @classmethod
    def from_json(cls, data: dict) -> "Entry":
        return cls(data["wallet"], float(data["fetched_at"]), data.get("ttl"), data.get("stamp") or None)


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


MAX_CULTURES = 4  # cultures kept per user id: a new one past these pushes out the oldest
# Bytes a user's slot costs besides its entries (its key, the OrderedDict's node); a user with
# several cultures holds them in a dict, counted as CULTURES_OVERHEAD more.
USER_OVERHEAD = 350
CULTURES_OVERHEAD = 250


class MemoryStore:
    """Wallets per user, each culture a field; entries live for TTL + stale window, LRU-bounded in bytes.

    `max_bytes` bounds what the entries hold (`Entry.size`, plus each user's slot): a byte budget,
    not a count, since a 500-offer wallet weighs a hundred 5-offer ones. One user holds at most
    MAX_CULTURES cultures, so a URL repeated with ever new `culture=` values cannot grow one user
    without bound (the oldest culture goes).

    Kept lean, since a process holds a hundred thousand: one OrderedDict (least recently used
    first), a user's slot `(culture, written at, *entry.parts)` for the usual single culture or
    `(cultures, written at)` for several (culture -> entry.parts), and an entry's age checked when it
    is read (an expired one is a miss and goes; the byte budget bounds the ones never read again).
    Every access goes through one lock, held only for the dictionary operation, never during I/O.

    Slots hold plain values, not Entry objects: a tuple (or dict) of bytes, numbers and strings is
    one Python's cyclic garbage collector stops tracking, so a full cache adds nothing to its full
    passes, each of which stops the event loop (100,000 wallets held as objects made a pass 65-75 ms,
    against 23-24 ms for the app alone; bench/RESULTS.md, "Issue #24, second pass"). `get` builds the Entry it answers.
    """

    name = "memory"

    def __init__(self, max_bytes: int, ttl: float, timer=time.time):
        self.max_bytes = max_bytes
        self.ttl = max(ttl, 0.001)
        self.timer = timer
        # user -> (culture, written at, blob, fetched_at, ttl, stamp) for one culture,
        # (cultures, written at) for several, each culture -> (blob, fetched_at, ttl, stamp)
        self._users: collections.OrderedDict = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, user_id: str, culture: str) -> Entry | None:
        """Return the cached entry for (user, culture), if any."""
        with self._lock:
            slot = self._users.get(user_id)
            if slot is None:
                return None
            if self.timer() - slot[1] >= self.ttl:  # the user's last write is past TTL + stale window
                del self._users[user_id]
                self._bytes -= _size(slot)
                return None
            self._users.move_to_end(user_id)
        if len(slot) == 6:
            return Entry.restore(*slot[2:]) if slot[0] == culture else None
        parts = slot[0].get(culture)
        return Entry.restore(*parts) if parts is not None else None

    def put(self, user_id: str, culture: str, entry: Entry) -> None:
        """Store an entry; the user's other cultures stay (the oldest goes past MAX_CULTURES)."""
        with self._lock:
            now = self.timer()
            slot = self._users.pop(user_id, None)
            cultures = {}
            if slot is not None:
                self._bytes -= _size(slot)
                if now - slot[1] < self.ttl:
                    cultures = {slot[0]: slot[2:]} if len(slot) == 6 else dict(slot[0])
            cultures.pop(culture, None)  # re-inserted last: the newest
            cultures[culture] = entry.parts
            while len(cultures) > MAX_CULTURES:
                del cultures[next(iter(cultures))]
            slot = (culture, now, *entry.parts) if len(cultures) == 1 else (cultures, now)
            size = _size(slot)
            if size > self.max_bytes:  # one wallet larger than the whole cache: not kept
                return
            self._users[user_id] = slot
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._users.popitem(last=False)
                self._bytes -= _size(dropped)

    def forget(self, user_id: str) -> None:
        """Drop every culture of a user."""
        with self._lock:
            slot = self._users.pop(user_id, None)
            if slot is not None:
                self._bytes -= _size(slot)

    def __len__(self) -> int:
        with self._lock:
            return len(self._users)

    @property
    def bytes(self) -> int:
        """Bytes the cached entries are counted for (at most `max_bytes`)."""
        with self._lock:
            return self._bytes

    def healthy(self) -> bool:
        """Always: the process's own memory does not fail."""
        return True


def _entry_size(blob: bytes) -> int:
    """Bytes an entry of this packed wallet is counted for (Entry.size; a slot's parts alike)."""
    return len(blob) + ENTRY_OVERHEAD


def _size(slot: tuple) -> int:
    """Bytes a user's slot is counted for: its entries, and a dict of them when several."""
    if len(slot) == 6:
        return USER_OVERHEAD + _entry_size(slot[2])
    return USER_OVERHEAD + CULTURES_OVERHEAD + sum(_entry_size(parts[0]) for parts in slot[0].values())


RENDER_OVERHEAD = 300  # bytes a rendered body costs besides itself (its key, ETag, tuple, links)


class RenderCache:
    """Recently rendered wallet bodies, so the HTML, text and AMP renders of one message (and every
    recipient of a hot wallet) skip decoding, flattening and JSON encoding. An item carries its own
    expiry: the moment the view would change (see view.next_change). Bounded in bytes."""

    def __init__(self, max_bytes: int):
        self._cache: LRUCache = LRUCache(maxsize=max_bytes, getsizeof=lambda item: len(item[0]) + RENDER_OVERHEAD)
        self._lock = threading.Lock()

    def get(self, key, now: float):
        """Return the cached (body, etag) for `key` if still valid at `now`."""
        with self._lock:
            item = self._cache.get(key)
        if item is None or item[2] <= now:
            return None
        return item[0], item[1]

    def put(self, key, body: bytes, etag: str, valid_until: float) -> None:
        if len(body) + RENDER_OVERHEAD > self._cache.maxsize:
            return  # larger than the whole budget: served, never kept
        with self._lock:
            self._cache[key] = (body, etag, valid_until)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
