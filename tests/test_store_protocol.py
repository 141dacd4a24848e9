"""Both wallet stores are what `Store` says a store is; collaborators use nothing else."""
from __future__ import annotations

import redis

from wallet_proxy.wallet.redis_store import RedisStore
from wallet_proxy.wallet.stores import Entry, MemoryStore, Store


def test_memory_and_redis_stores_implement_the_protocol():
    memory = MemoryStore(1 << 20, 60)
    shared = RedisStore(redis.Redis(host="127.0.0.1", port=1), memory, 60, 300)  # never connects here
    assert isinstance(memory, Store) and isinstance(shared, Store)
    assert (memory.name, shared.name) == ("memory", "redis")


def test_something_with_a_part_missing_is_not_a_store():
    class NoHealth:
        name = "partial"

        def get(self, user_id, culture):
            return None

        def put(self, user_id, culture, entry):
            pass

        def forget(self, user_id):
            pass

    assert not isinstance(NoHealth(), Store)


def test_the_memory_store_round_trip():
    store: Store = MemoryStore(1 << 20, 60)
    entry = Entry({"offers": []}, 1.0)
    store.put("u", "en-US", entry)
    got = store.get("u", "en-US")
    assert got == entry and got.stamp == entry.stamp  # the same fetch (rendered bodies are keyed by it)
    assert store.get("u", "fr") is None and store.healthy()
    store.forget("u")
    assert store.get("u", "en-US") is None
