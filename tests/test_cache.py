"""The in-process store: TTL + stale window with an injected clock, sized in wallets."""
from __future__ import annotations

from tests.fakes import FakeClock
from wallet_proxy.wallet.stores import Entry, MemoryStore


def entry(points: int) -> Entry:
    return Entry({"available_points": points}, 0.0)


def test_entries_expire_after_ttl_plus_stale_window():
    clock = FakeClock(1000.0)
    store = MemoryStore(10, ttl=360, timer=clock)
    store.put("u", "en-US", entry(1))
    clock.tick(359)
    assert store.get("u", "en-US").wallet == {"available_points": 1}
    clock.tick(2)
    assert store.get("u", "en-US") is None


def test_size_counts_wallets_not_users():
    store = MemoryStore(3, ttl=60)
    store.put("a", "en-US", entry(1))
    store.put("a", "fr", entry(2))
    store.put("b", "en-US", entry(3))
    store.put("c", "en-US", entry(4))  # a fourth wallet: the least recently used user goes
    held = [(u, c) for u in "abc" for c in ("en-US", "fr") if store.get(u, c) is not None]
    assert len(held) <= 3 and ("c", "en-US") in held


def test_a_user_with_more_cultures_than_the_cache_keeps_the_newest():
    store = MemoryStore(1, ttl=60)
    store.put("a", "en-US", entry(1))
    store.put("a", "fr", entry(2))
    assert store.get("a", "fr").wallet == {"available_points": 2} and store.get("a", "en-US") is None


def test_forget_drops_every_culture():
    store = MemoryStore(10, ttl=60)
    store.put("a", "en-US", entry(1))
    store.put("a", "fr", entry(2))
    store.forget("a")
    assert store.get("a", "en-US") is None and store.get("a", "fr") is None
