"""RedisStore and RedisLocker against a real redis-server: layout, expiry, fallback, the lock."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
import redis

from tests.conftest import free_port, need
from tests.fakes import FakeClock
from wallet_proxy.errors import UpstreamTimeout, UpstreamUnavailable
from wallet_proxy.wallet import keys
from wallet_proxy.redis_client import make_client
from wallet_proxy.wallet.redis_store import RedisLocker, RedisStore
from wallet_proxy.wallet.stores import Entry, MemoryStore

pytestmark = pytest.mark.redis

WALLET = {"offers": [], "groups": [], "categories": [], "available_points": 5, "total_points": 9,
          "user": {"opted_in": True, "activated": True}}


class RedisServer:
    """A private redis-server on a free port that a test may kill and restart."""

    def __init__(self):
        self.binary = shutil.which("redis-server")
        need("redis-server", self.binary is not None, "apt-get install redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--enable-debug-command", "local"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def private_redis():
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def user():
    return f"u-{uuid.uuid4().hex[:12]}"  # tests share the session's Redis: never collide


def make_store(url, clock=None, **kwargs):
    clock = clock or FakeClock()
    client = make_client(url, 8)
    return RedisStore(client, MemoryStore(1 << 20, 360, timer=clock), 60, 300, clock=clock, **kwargs), client


class TestRedisStore:
    def test_one_hash_per_user_one_field_per_culture_expiring_after_ttl_plus_stale(self, redis_url, user):
        store, client = make_store(redis_url)
        english = Entry(WALLET, 1000.0)
        store.put(user, "en-US", english)
        store.put(user, "fr", Entry(dict(WALLET, available_points=6), 1001.0, ttl=600))
        key = keys.wallet_key(user)
        assert sorted(client.hkeys(key)) == [b"en-US", b"fr"]
        assert json.loads(client.hget(key, "en-US")) == english.to_json()
        assert 895 <= client.ttl(key) <= 900  # the last put: its own ttl 600 + stale 300
        assert store.get(user, "fr") == Entry(dict(WALLET, available_points=6), 1001.0, 600)
        assert store.get(user, "de") is None

    def test_the_same_stored_bytes_are_decoded_once(self, redis_url, user):
        first, _ = make_store(redis_url)
        second, _ = make_store(redis_url)
        first.put(user, "en-US", Entry(WALLET, 5.0))
        one, two = second.get(user, "en-US"), second.get(user, "en-US")
        assert one == Entry(WALLET, 5.0) and one is two
        first.put(user, "en-US", Entry(WALLET, 6.0))  # new bytes: decoded afresh
        assert second.get(user, "en-US").fetched_at == 6.0

    def test_entries_are_shared_between_stores(self, redis_url, user):
        first, _ = make_store(redis_url)
        second, _ = make_store(redis_url)
        first.put(user, "en-US", Entry(WALLET, 5.0))
        assert second.get(user, "en-US") == Entry(WALLET, 5.0)

    def test_forget_deletes_every_culture(self, redis_url, user):
        store, client = make_store(redis_url)
        store.put(user, "en-US", Entry(WALLET, 1.0))
        store.put(user, "fr", Entry(WALLET, 1.0))
        store.forget(user)
        assert not client.exists(keys.wallet_key(user))
        assert store.get(user, "en-US") is None and store.fallback.get(user, "fr") is None

    def test_an_unreadable_entry_is_a_miss(self, redis_url, user):
        store, client = make_store(redis_url)
        client.hset(keys.wallet_key(user), "en-US", b"{not json")
        assert store.get(user, "en-US") is None
        assert store.healthy()

    def test_redis_down_falls_back_to_memory_and_recovers_after_the_backoff(self, private_redis, user,
                                                                             caplog):
        monotonic = FakeClock(0)
        store, _ = make_store(private_redis.url, monotonic=monotonic, backoff=2.0)
        store.put(user, "en-US", Entry(WALLET, 1.0))
        assert store.healthy()
        private_redis.kill()
        started = time.monotonic()
        assert store.get(user, "en-US") == Entry(WALLET, 1.0)  # from this process's memory
        assert time.monotonic() - started < 0.5
        assert not store.healthy()
        store.put(user, "fr", Entry(WALLET, 2.0))
        assert store.get(user, "fr") == Entry(WALLET, 2.0)
        assert store.fallbacks_total == 1 and store.errors_total == 1, "Redis is not retried in back-off"
        assert [r.levelname for r in caplog.records if "Redis failed" in r.message] == ["WARNING"]
        private_redis.start()
        assert store.get(user, "en-US") is not None and not store.healthy(), "still backing off"
        monotonic.tick(2.0)
        assert store.get(user, "en-US") is None  # the restarted Redis is empty: a real Redis answer
        assert store.healthy()

    def test_forget_while_redis_is_down_is_a_503_not_a_silent_204(self, private_redis, user):
        store, _ = make_store(private_redis.url)
        private_redis.kill()
        with pytest.raises(UpstreamUnavailable):
            store.forget(user)

    def test_slow_redis_falls_back_within_the_socket_timeout(self, private_redis, user):
        store, client = make_store(private_redis.url)
        store.put(user, "en-US", Entry(WALLET, 1.0))
        sleeper = threading.Thread(target=lambda: redis.Redis.from_url(private_redis.url).execute_command(
            "DEBUG", "SLEEP", "1"))
        sleeper.start()
        time.sleep(0.1)  # let DEBUG SLEEP reach the server
        started = time.monotonic()
        assert store.get(user, "en-US") == Entry(WALLET, 1.0)
        assert time.monotonic() - started < 0.4
        assert not store.healthy()
        sleeper.join()


class TestRedisLocker:
    def test_the_lock_holder_calls_and_releases(self, redis_url, user):
        store, client = make_store(redis_url)
        locker = RedisLocker(client, store)
        seen = []

        def call():
            seen.append(client.get(keys.flight_key(user, "en-US")))
            entry = Entry(WALLET, 1.0)
            store.put(user, "en-US", entry)
            return entry

        assert locker.fetch_once(user, "en-US", 1.0, call) == Entry(WALLET, 1.0)
        assert seen and seen[0] is not None, "the lock was held during the call"
        assert not client.exists(keys.flight_key(user, "en-US")), "released"

    def test_the_lock_expires_after_the_timeout_plus_margin(self, redis_url, user):
        store, client = make_store(redis_url)
        locker = RedisLocker(client, store, margin=0.5)
        ttls = []
        locker.fetch_once(user, "en-US", 1.0, lambda: ttls.append(client.pttl(keys.flight_key(user, "en-US"))))
        assert 1000 < ttls[0] <= 1500

    def test_a_waiter_gets_the_holders_entry_without_calling(self, redis_url, user):
        holder_store, client = make_store(redis_url)
        waiter_store, waiter_client = make_store(redis_url)
        holder, waiter = RedisLocker(client, holder_store), RedisLocker(waiter_client, waiter_store)
        inside, results, waiter_calls = threading.Event(), [], []

        def slow_call():
            inside.set()
            time.sleep(0.2)
            entry = Entry(WALLET, 42.0)
            holder_store.put(user, "en-US", entry)
            return entry

        thread = threading.Thread(target=lambda: results.append(holder.fetch_once(user, "en-US", 1.0, slow_call)))
        thread.start()
        inside.wait(2)
        got = waiter.fetch_once(user, "en-US", 1.0, lambda: waiter_calls.append(1))
        thread.join()
        assert got == Entry(WALLET, 42.0) == results[0]
        assert waiter_calls == []
        assert waiter_store.fallback.get(user, "en-US") == got, "kept for a Redis outage"

    def test_the_winner_serves_an_entry_that_landed_after_its_miss_without_calling(self, redis_url, user):
        clock = FakeClock(1000.0)
        store, client = make_store(redis_url, clock)
        other, _ = make_store(redis_url, clock)
        locker = RedisLocker(client, store)
        # Another process stored a fresh wallet and released its lock after this request missed.
        other.put(user, "en-US", Entry(WALLET, 990.0))
        got = locker.fetch_once(user, "en-US", 1.0, lambda: pytest.fail("a second SessionM call"))
        assert got == Entry(WALLET, 990.0) and locker.waits_total == 1
        assert not client.exists(keys.flight_key(user, "en-US")), "released"
        other.put(user, "en-US", Entry(WALLET, 900.0))  # past its 60 s TTL: a refresh must call
        assert locker.fetch_once(user, "en-US", 1.0, lambda: Entry(WALLET, 1000.0)).fetched_at == 1000.0

    def test_a_waiter_times_out_when_the_holder_never_lands(self, redis_url, user):
        store, client = make_store(redis_url)
        client.set(keys.flight_key(user, "en-US"), "someone-else", px=5000)
        locker = RedisLocker(client, store)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            locker.fetch_once(user, "en-US", 0.2, lambda: pytest.fail("must not call while locked"))
        assert time.monotonic() - started < 0.35

    def test_a_waiter_takes_over_when_the_holder_gives_up_without_an_entry(self, redis_url, user):
        store, client = make_store(redis_url)
        client.set(keys.flight_key(user, "en-US"), "holder", px=100)  # a holder that died
        locker = RedisLocker(client, store)
        got = locker.fetch_once(user, "en-US", 1.0, lambda: Entry(WALLET, 7.0))
        assert got == Entry(WALLET, 7.0)

    def test_release_never_deletes_another_processes_lock(self, redis_url, user):
        store, client = make_store(redis_url)
        locker = RedisLocker(client, store)
        key = keys.flight_key(user, "en-US")

        def call():  # our lock expired and another process took it meanwhile
            client.set(key, "other-token", px=5000)
            return Entry(WALLET, 1.0)

        locker.fetch_once(user, "en-US", 1.0, call)
        assert client.get(key) == b"other-token"


def counting_hget(client) -> list:
    """Record every HGET the client sends (the near cache must save them)."""
    sent, original = [], client.hget

    def hget(*args):
        sent.append(args)
        return original(*args)

    client.hget = hget
    return sent


class TestNearCache:
    def test_a_fresh_entry_is_served_again_without_a_redis_round_trip(self, redis_url, user):
        clock = FakeClock(1000.0)
        writer, _ = make_store(redis_url, clock)
        reader, client = make_store(redis_url, clock)
        sent = counting_hget(client)
        writer.put(user, "en-US", Entry(WALLET, 1000.0))
        assert reader.get(user, "en-US") == Entry(WALLET, 1000.0) and len(sent) == 1
        for _ in range(3):
            assert reader.get(user, "en-US") == Entry(WALLET, 1000.0)
        assert len(sent) == 1 and reader.near_hits_total == 3
        assert reader.get(user, "fr") is None and len(sent) == 2, "another culture is another entry"

    def test_a_near_copy_past_its_ttl_is_read_from_redis_again(self, redis_url, user):
        clock = FakeClock(1000.0)
        store, client = make_store(redis_url, clock)
        store.get("someone-else", "en-US")  # the first read subscribes to purge notices
        sent = counting_hget(client)
        store.put(user, "en-US", Entry(WALLET, 1000.0))  # this process's own fetch is kept near
        store.get(user, "en-US")
        assert sent == []
        clock.tick(60)  # the TTL: a refresh must see what other processes stored meanwhile
        assert store.get(user, "en-US") == Entry(WALLET, 1000.0) and len(sent) == 1
        assert store.get(user, "en-US") is not None and len(sent) == 2, "a stale entry is not kept near"

    def test_a_purge_through_one_store_reaches_the_near_copy_of_another_at_once(self, redis_url, user):
        clock = FakeClock(1000.0)
        purger, _ = make_store(redis_url, clock)
        reader, _ = make_store(redis_url, clock)
        purger.put(user, "en-US", Entry(WALLET, 1000.0))
        reader.get(user, "en-US")
        assert reader.get(user, "en-US") is not None and reader.near_hits_total == 1
        purger.forget(user)
        assert reader.get(user, "en-US") is None  # no sleep: the notice is on the socket already
        assert reader.near_hits_total == 1

    def test_a_read_that_raced_a_purge_is_not_kept_near(self, redis_url, user):
        clock = FakeClock(1000.0)
        purger, _ = make_store(redis_url, clock)
        reader, client = make_store(redis_url, clock)
        purger.put(user, "en-US", Entry(WALLET, 1000.0))
        reader.get("someone-else", "en-US")  # subscribed
        original = client.hget

        def hget_then_purge(*args):
            raw = original(*args)  # read before the purge ...
            generation = reader._generation
            purger.forget(user)  # ... which lands, and another request applies its notice
            # Redis delivers the notice to the subscriber's socket on its own schedule (under a
            # loaded CI it was not there yet at the first look): wait until it has been applied.
            end = time.monotonic() + 5
            while reader._generation == generation and time.monotonic() < end:
                reader._listening()
            assert reader._generation != generation, "the purge notice never arrived"
            return raw

        client.hget = hget_then_purge
        assert reader.get(user, "en-US") == Entry(WALLET, 1000.0)  # that read's answer stands
        client.hget = original
        assert reader.get(user, "en-US") is None, "the purged copy was not kept"

    def test_no_near_cache_while_the_subscription_is_lost(self, private_redis, user):
        clock, monotonic = FakeClock(1000.0), FakeClock(0)
        purger, admin = make_store(private_redis.url, clock)
        reader, _ = make_store(private_redis.url, clock, monotonic=monotonic)
        purger.put(user, "en-US", Entry(WALLET, 1000.0))
        reader.get(user, "en-US")
        assert reader.get(user, "en-US") is not None and reader.near_hits_total == 1
        admin.client_kill_filter(_type="pubsub")  # every subscriber loses its connection ...
        purger.forget(user)  # ... so this notice reaches no one
        assert reader.get(user, "en-US") is None, "the lost subscription dropped the near copy"
        purger.put(user, "en-US", Entry(WALLET, 1001.0))
        assert reader.get(user, "en-US").fetched_at == 1001.0
        assert reader.get(user, "en-US") is not None and reader.near_hits_total == 1, \
            "not subscribed again before the back-off: every read goes to Redis"
        monotonic.tick(2.0)
        assert reader.get(user, "en-US").fetched_at == 1001.0, "nothing kept from before the loss"
        assert reader.get(user, "en-US") is not None and reader.near_hits_total == 2, "subscribed again"

    def test_a_redis_error_empties_the_near_cache(self, private_redis, user):
        """A partition shows no error on an idle subscription: any failed call must resubscribe."""
        clock, monotonic = FakeClock(1000.0), FakeClock(0)
        store, client = make_store(private_redis.url, clock, monotonic=monotonic)
        store.get("someone-else", "en-US")
        store.put(user, "en-US", Entry(WALLET, 1000.0))
        sent = counting_hget(client)
        assert store.get(user, "en-US") is not None and sent == []
        sleeper = threading.Thread(target=lambda: redis.Redis.from_url(private_redis.url).execute_command(
            "DEBUG", "SLEEP", "0.4"))
        sleeper.start()
        time.sleep(0.1)
        store.put("another", "en-US", Entry(WALLET, 1000.0))  # times out: Redis is failing
        sleeper.join()
        assert not store.healthy()
        monotonic.tick(2.0)
        assert store.get(user, "en-US") is not None and len(sent) == 1, "read from Redis, not kept near"


def test_a_restarted_redis_costs_no_request_its_dead_pooled_connections(private_redis, user):
    store, _ = make_store(private_redis.url)
    store.put(user, "en-US", Entry(WALLET, 1.0))  # leaves a pooled connection to the first server
    private_redis.kill()
    private_redis.start()
    assert store.get(user, "en-US") is None  # the restarted server is empty: a real answer
    assert store.healthy() and store.errors_total == 0, "the dead connection was retried on a new one"
