"""Cross-process single flight: the lock won just after the previous holder stored and released.

Found by the nginx front test (tests/test_nginx.py): under load, a render's cache read missed, the
holder on the other instance then stored the wallet and released the lock, and the render won the
lock and called SessionM a second time for the same user.
"""
from __future__ import annotations

import uuid

import pytest

from tests.fakes import FakeClock
from wallet_proxy.wallet import keys
from wallet_proxy.redis_client import make_client
from wallet_proxy.wallet.redis_store import RedisLocker, RedisStore
from wallet_proxy.wallet.stores import Entry, MemoryStore

WALLET = {"ok": True, "offers": []}


def store_and_client(url, clock):
    client = make_client(url, 8)
    return RedisStore(client, MemoryStore(1 << 20, 360, timer=clock), 60, 300, clock=clock), client


@pytest.mark.redis
def test_a_fresh_entry_that_landed_before_the_lock_was_won_is_used_without_calling(redis_url):
    clock = FakeClock()
    user = f"race-{uuid.uuid4().hex[:12]}"
    holder_store, _ = store_and_client(redis_url, clock)
    store, client = store_and_client(redis_url, clock)
    holder_store.put(user, "en-US", Entry(WALLET, clock() - 1))  # stored, lock already released
    calls = []
    got = RedisLocker(client, store).fetch_once(user, "en-US", 1.0, lambda: calls.append(1))
    assert calls == [] and got.wallet == WALLET
    assert not client.exists(keys.flight_key(user, "en-US")), "the lock is released"


@pytest.mark.redis
def test_a_stale_entry_is_refreshed_by_the_lock_winner(redis_url):
    clock = FakeClock()
    user = f"race-{uuid.uuid4().hex[:12]}"
    store, client = store_and_client(redis_url, clock)
    store.put(user, "en-US", Entry(WALLET, clock() - 61))  # past the 60 s TTL: the caller wants a new one
    fresh = Entry({"ok": True, "offers": [1]}, clock())
    got = RedisLocker(client, store).fetch_once(user, "en-US", 1.0, lambda: fresh)
    assert got is fresh
