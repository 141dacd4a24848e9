"""The wallet service under a Braze send, over real HTTP to a fake SessionM: single flight, stale
serving, breaker, deadlines, slots, and the shared Redis cache (with its in-process fallback)."""
from __future__ import annotations

import copy
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import requests

from tests.conftest import NOW, OFFERS_PATH, fixture_json, make_settings
from tests.fakes import Reply
from tests.test_redis_store import RedisServer

AUTH = ("braze", "bz-secret")
OK = fixture_json("get_user_offers.ok.json")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def get(base, user, **params):
    return requests.get(f"{base}/v1/wallets/{user}", params=params, auth=AUTH, timeout=10)


def parallel(n, fn):
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def wait_for(predicate, timeout=3.0):
    """Wait for a background effect (a refresh landing), not for time to pass: FakeClock does that."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def serve(sessionm, app_for, live):
    """Serve an app over loopback HTTP, pointed at the fake SessionM; returns (base_url, services)."""

    def build(**env):
        app = app_for(make_settings(sessionm.url, **env))
        return live(app), app.extensions["wallet_proxy"]

    return build


class TestSingleFlight:
    def test_concurrent_requests_for_one_wallet_make_one_sessionm_call(self, sessionm, serve):
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.3))
        base, _ = serve()
        answers = parallel(20, lambda: get(base, "user-1"))
        assert [a.status_code for a in answers] == [200] * 20
        assert len(sessionm.calls(OFFERS_PATH)) == 1
        assert {a.json()["available_points"] for a in answers} == {OK["payload"]["available_points"]}

    def test_cultures_are_separate_flights_and_a_second_read_is_a_hit(self, sessionm, serve):
        base, _ = serve()
        assert get(base, "user-1").headers["Cache-Status"] == "wallet-proxy; fwd=uri-miss; stored"
        get(base, "user-1", culture="fr")
        hit = get(base, "user-1")
        assert hit.headers["Cache-Status"] == "wallet-proxy; hit; ttl=60"
        assert [c.json["culture"] for c in sessionm.calls(OFFERS_PATH)] == ["en-US", "fr"]


class TestStaleServing:
    def test_stale_while_revalidate_serves_old_and_refreshes_once(self, sessionm, serve, clock):
        base, _ = serve(WALLET_PROXY_SWR_WINDOW=10)
        assert get(base, "user-1").status_code == 200
        newer = copy.deepcopy(OK)
        newer["payload"]["available_points"] = 777
        sessionm.on("POST", OFFERS_PATH, Reply(200, newer, delay=0.3))
        clock.tick(65)
        answers = parallel(8, lambda: get(base, "user-1"))
        for answer in answers:
            assert answer.status_code == 200
            assert answer.json()["stale"] is True
            assert answer.headers["Cache-Status"] == "wallet-proxy; hit; ttl=-5; detail=stale-while-revalidate"
            assert answer.json()["available_points"] == OK["payload"]["available_points"]
        assert wait_for(lambda: get(base, "user-1").json()["available_points"] == 777)
        assert len(sessionm.calls(OFFERS_PATH)) == 2, "one fetch, one background refresh"
        fresh = get(base, "user-1")
        assert fresh.json()["stale"] is False and "hit" in fresh.headers["Cache-Status"]

    def test_stale_if_error_up_to_stale_ttl_then_503(self, sessionm, serve, clock):
        base, _ = serve(WALLET_PROXY_SWR_WINDOW=5, WALLET_PROXY_STALE_TTL=300)
        assert get(base, "user-1").status_code == 200
        sessionm.on("POST", OFFERS_PATH, Reply(500, {"status": "error"}))
        clock.tick(60 + 100)
        stale = get(base, "user-1")
        assert stale.status_code == 200 and stale.json()["stale"] is True
        assert stale.headers["Cache-Status"] == "wallet-proxy; hit; ttl=-100; detail=stale-if-error"
        clock.tick(201)  # 301 s past the TTL
        gone = get(base, "user-1")
        assert gone.status_code == 503 and gone.json()["error"]["code"] == "upstream_unavailable"
        assert int(gone.headers["Retry-After"]) >= 1

    def test_stale_if_error_on_a_timeout_then_504_once_too_old(self, sessionm, serve, clock):
        base, _ = serve(WALLET_PROXY_SWR_WINDOW=0, WALLET_PROXY_UPSTREAM_TIMEOUT=0.2)
        get(base, "user-1")
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=1.0))
        clock.tick(61)
        assert get(base, "user-1").headers["Cache-Status"].endswith("detail=stale-if-error")
        clock.tick(300)
        late = get(base, "user-1")
        assert late.status_code == 504 and late.json()["error"]["code"] == "upstream_timeout"

    def test_offers_that_expired_since_the_fetch_are_dropped_from_a_stale_wallet(self, sessionm, serve,
                                                                                   clock):
        payload = copy.deepcopy(OK)
        soon = copy.deepcopy(payload["payload"]["user_offers"][0])
        soon.update(user_offer_id="soon-gone", name="Ends in 30 s", expiration_date=iso(NOW + 30))
        payload["payload"]["user_offers"].append(soon)
        sessionm.on("POST", OFFERS_PATH, Reply(200, payload))
        base, _ = serve(WALLET_PROXY_SWR_WINDOW=0)
        assert "soon-gone" in [o["user_offer_id"] for o in get(base, "user-1").json()["offers"]]
        sessionm.on("POST", OFFERS_PATH, Reply(503, {}))
        clock.tick(90)
        stale = get(base, "user-1").json()
        assert stale["stale"] is True
        assert "soon-gone" not in [o["user_offer_id"] for o in stale["offers"]]
        assert stale["offer_count"] == len(stale["offers"]) == 1


class TestBreaker:
    def test_opens_after_n_failures_answers_fast_and_lets_one_probe_per_interval(self, sessionm, serve,
                                                                                 clock):
        base, services = serve(WALLET_PROXY_BREAKER_FAILURES=3, WALLET_PROXY_BREAKER_COOLDOWN=10,
                               WALLET_PROXY_BREAKER_PROBE_INTERVAL=2)
        services.wallets.breaker.clock = clock  # the cool-down on the test's clock, no sleeping
        sessionm.on("POST", OFFERS_PATH, Reply(500, {}))
        for n in range(3):
            assert get(base, f"failing-{n}").status_code == 503
        assert services.wallets.breaker.state == "open"
        started = time.monotonic()
        fast = get(base, "another-user")
        assert time.monotonic() - started < 0.5
        assert fast.status_code == 503 and "circuit breaker" in fast.json()["error"]["message"]
        assert fast.headers["Retry-After"] == "2"
        assert len(sessionm.calls(OFFERS_PATH)) == 3, "an open breaker does not call SessionM"
        assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "degraded"

        clock.tick(2)
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.3))
        answers = parallel(6, lambda: get(base, f"probe-{uuid.uuid4().hex[:6]}"))
        assert sorted(a.status_code for a in answers) == [200] + [503] * 5
        assert len(sessionm.calls(OFFERS_PATH)) == 4, "exactly one probe"
        assert services.wallets.breaker.state == "closed"
        assert get(base, "after-probe").status_code == 200

    def test_an_open_breaker_serves_a_stale_wallet(self, sessionm, serve, clock):
        base, services = serve(WALLET_PROXY_BREAKER_FAILURES=1, WALLET_PROXY_SWR_WINDOW=10)
        get(base, "cached")
        sessionm.on("POST", OFFERS_PATH, Reply(500, {}))
        assert get(base, "other").status_code == 503
        calls = len(sessionm.calls(OFFERS_PATH))
        clock.tick(61)  # inside the SWR window, but no refresh while the breaker is open
        stale = get(base, "cached")
        assert stale.status_code == 200 and stale.json()["stale"] is True
        assert stale.headers["Cache-Status"].endswith("detail=stale-if-error")
        assert len(sessionm.calls(OFFERS_PATH)) == calls


class TestDeadlines:
    def test_a_hung_sessionm_still_answers_in_under_two_seconds(self, sessionm, serve):
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=5))
        base, _ = serve()  # the SPEC's defaults: deadline 1.8 s, upstream timeout 1.5 s
        started = time.monotonic()
        answers = parallel(5, lambda: get(base, "hung-user"))
        assert time.monotonic() - started < 2.0
        assert [a.status_code for a in answers] == [504] * 5
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    def test_the_request_deadline_caps_a_longer_upstream_timeout(self, sessionm, serve):
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=3))
        base, _ = serve(WALLET_PROXY_DEADLINE=0.4, WALLET_PROXY_UPSTREAM_TIMEOUT=10)
        started = time.monotonic()
        assert get(base, "hung-user").status_code == 504
        assert time.monotonic() - started < 0.8

    def test_no_slot_in_time_is_a_fast_503_with_retry_after(self, sessionm, serve, clock):
        base, _ = serve(WALLET_PROXY_UPSTREAM_CONCURRENCY=1, WALLET_PROXY_DEADLINE=0.5)
        assert get(base, "cached-user").status_code == 200
        # A background refresh (stale-while-revalidate) now holds the only slot for 1.5 s, far
        # longer than the next request's whole 0.5 s deadline, so the outcome cannot race.
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=1.5))
        clock.tick(61)
        assert get(base, "cached-user").json()["stale"] is True
        assert wait_for(lambda: len(sessionm.calls(OFFERS_PATH)) == 2)
        started = time.monotonic()
        second = get(base, "other-user")
        elapsed = time.monotonic() - started
        assert second.status_code == 503 and "no slot" in second.json()["error"]["message"]
        assert second.headers["Retry-After"] == "1"
        assert elapsed < 0.6
        assert len(sessionm.calls(OFFERS_PATH)) == 2  # the refresh; the other user never got a call

    def test_slot_waiters_give_up_as_soon_as_the_breaker_opens(self, sessionm, serve):
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=3))
        base, _ = serve(WALLET_PROXY_UPSTREAM_CONCURRENCY=1, WALLET_PROXY_UPSTREAM_TIMEOUT=0.3,
                        WALLET_PROXY_BREAKER_FAILURES=1, WALLET_PROXY_DEADLINE=1.8)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(get, base, "hung-user")
            # the first request holds the only slot until its call times out at 0.3 s
            assert wait_for(lambda: len(sessionm.calls(OFFERS_PATH)) == 1)
            started = time.monotonic()
            second = get(base, "waiting-user")
            elapsed = time.monotonic() - started
            assert first.result().status_code == 504
        # the breaker opened at ~0.3 s: the waiter answers then, not at its 1.8 s deadline
        assert second.status_code == 503 and elapsed < 0.8
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    def test_a_stale_wallet_is_served_in_time_when_sessionm_hangs(self, sessionm, serve, clock):
        base, _ = serve(WALLET_PROXY_SWR_WINDOW=0, WALLET_PROXY_DEADLINE=0.5)
        get(base, "user-1")
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=3))
        clock.tick(61)
        started = time.monotonic()
        stale = get(base, "user-1")
        assert time.monotonic() - started < 0.8
        assert stale.status_code == 200 and stale.json()["stale"] is True


@pytest.mark.redis
class TestSharedRedisCache:
    def test_two_apps_sharing_redis_make_one_sessionm_call(self, sessionm, serve, redis_url):
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.3))
        first, one = serve(WALLET_PROXY_REDIS_URL=redis_url)
        second, two = serve(WALLET_PROXY_REDIS_URL=redis_url)
        assert one.store is not two.store and one.store.name == "redis"
        user = f"shared-{uuid.uuid4().hex[:8]}"
        bases = [first, second] * 10
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda base: get(base, user), bases))
        assert [a.status_code for a in answers] == [200] * 20
        assert len(sessionm.calls(OFFERS_PATH)) == 1
        assert "hit" in get(second, user).headers["Cache-Status"]
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    def test_delete_forgets_the_shared_copy(self, sessionm, serve, redis_url):
        first, _ = serve(WALLET_PROXY_REDIS_URL=redis_url)
        second, _ = serve(WALLET_PROXY_REDIS_URL=redis_url)
        user = f"purge-{uuid.uuid4().hex[:8]}"
        get(first, user)
        deleted = requests.delete(f"{second}/v1/wallets/{user}", auth=("ops", "ops-secret"), timeout=5)
        assert deleted.status_code == 204
        assert get(first, user).headers["Cache-Status"] == "wallet-proxy; fwd=uri-miss; stored"

    def test_redis_killed_mid_test_still_serves_200_and_readyz_says_degraded(self, sessionm, serve):
        server = RedisServer()
        try:
            base, services = serve(WALLET_PROXY_REDIS_URL=server.url)
            assert get(base, "user-1").status_code == 200
            assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"
            server.kill()
            cached = get(base, "user-1")
            assert cached.status_code == 200 and "hit" in cached.headers["Cache-Status"]
            assert get(base, "new-user").status_code == 200  # a miss: fetched, kept in memory
            ready = requests.get(f"{base}/readyz", timeout=5)
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded" and ready.json()["checks"]["cache"] == "fallback"
            assert services.store.fallbacks_total == 1
            server.start()
            services.store.backoff = 0  # retry Redis now rather than sleep through the back-off
            services.store._retry_at = 0
            assert get(base, "user-1").status_code == 200
            assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"
        finally:
            server.kill()
