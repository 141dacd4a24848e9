"""The in-process store: TTL + stale window with an injected clock, bounded in bytes and cultures per user."""
from __future__ import annotations

import hashlib

from tests.fakes import FakeClock
from wallet_proxy.wallet.stores import MAX_CULTURES, USER_OVERHEAD, Entry, MemoryStore


def entry(points: int) -> Entry:
    return Entry({"available_points": points}, 0.0)


def test_entries_expire_after_ttl_plus_stale_window():
    clock = FakeClock(1000.0)
    store = MemoryStore(1 << 20, ttl=360, timer=clock)
    store.put("u", "en-US", entry(1))
    clock.tick(359)
    assert store.get("u", "en-US").wallet == {"available_points": 1}
    clock.tick(2)
    assert store.get("u", "en-US") is None


def test_the_budget_counts_bytes_of_wallets_not_users():
    one = entry(1).size
    store = MemoryStore(3 * one + 3 * USER_OVERHEAD, ttl=60)  # room for three one-culture users
    store.put("a", "en-US", entry(1))
    store.put("a", "fr", entry(2))
    store.put("b", "en-US", entry(3))
    store.put("c", "en-US", entry(4))  # a fourth wallet: the least recently used user goes
    held = [(u, c) for u in "abc" for c in ("en-US", "fr") if store.get(u, c) is not None]
    assert len(held) <= 3 and ("c", "en-US") in held
    assert store.bytes <= store.max_bytes


def test_a_big_wallet_weighs_more_than_a_small_one():
    small, big = Entry({"offers": [{"title": "x"}]}, 0.0), Entry(
        {"offers": [{"title": hashlib.sha1(str(n).encode()).hexdigest()} for n in range(500)]}, 0.0)
    assert big.size > 5 * small.size
    store = MemoryStore(big.size + USER_OVERHEAD, ttl=60)
    for n in range(3):
        store.put(f"small-{n}", "en-US", small)
    store.put("big", "en-US", big)
    assert store.get("big", "en-US") == big and store.get("small-0", "en-US") is None


def test_a_wallet_larger_than_the_cache_is_not_kept():
    store = MemoryStore(100, ttl=60)
    store.put("a", "en-US", entry(1))
    assert store.get("a", "en-US") is None and store.bytes == 0


def test_one_user_keeps_at_most_a_few_cultures_the_oldest_goes():
    store = MemoryStore(1 << 20, ttl=60)
    cultures = ["en-US", "fr", "de", "es", "it", "nl"]
    for n, culture in enumerate(cultures):
        store.put("a", culture, entry(n))
    kept = [c for c in cultures if store.get("a", c) is not None]
    assert kept == cultures[-MAX_CULTURES:]
    store.put("a", kept[0], entry(9))  # stored again: now the newest
    store.put("a", "pt", entry(10))
    assert store.get("a", kept[0]) is not None and store.get("a", kept[1]) is None


def test_an_entry_holds_its_wallet_compactly_and_gives_it_back_whole():
    wallet = {"user_id": "u", "offers": [{"title": "Café ☕", "expires_ts": 1.5e9, "n": 2**70}], "lone": "\ud800"}
    stored = Entry(wallet, 0.0)
    assert stored.wallet == wallet and stored.wallet is not stored.wallet
    assert isinstance(stored.blob, bytes)


def test_forget_drops_every_culture():
    store = MemoryStore(10, ttl=60)
    store.put("a", "en-US", entry(1))
    store.put("a", "fr", entry(2))
    store.forget("a")
    assert store.get("a", "en-US") is None and store.get("a", "fr") is None


def test_rendered_bodies_are_bounded_in_bytes():
    from wallet_proxy.wallet.stores import RENDER_OVERHEAD, RenderCache

    rendered = RenderCache(20 * (1000 + RENDER_OVERHEAD))
    for n in range(200):
        rendered.put(("u", n), b"x" * 1000, f"etag-{n}", float("inf"))
    kept = [n for n in range(200) if rendered.get(("u", n), 0.0) is not None]
    assert kept == list(range(180, 200)), "the most recent bodies, as many as the bytes allow"
    rendered.put(("big",), b"x" * 10**6, "etag", float("inf"))  # larger than the budget: never kept
    assert rendered.get(("big",), 0.0) is None and rendered.get(("u", 199), 0.0) is not None


def test_external_ids_are_bounded_in_bytes():
    from wallet_proxy.services import EXTERNAL_ID_BYTES, ExternalIds

    class Core:
        def resolve_external_id(self, external_id, timeout):
            return "seed-" + external_id

    ids = ExternalIds(Core(), 50 * (EXTERNAL_ID_BYTES + 20))
    for n in range(1000):
        assert ids.resolve(f"customer-{n}", 1.0) == f"seed-customer-{n}"
    assert 40 <= len(ids._cache) <= 50
