"""The Braze rate budget shared through Redis (issue #13 item 3): a Lua token bucket with pacing's
interface, proven with two real processes sending through one real redis-server."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.fakes import FakeBraze, FakeClock, Reply
from wallet_proxy.upstream.braze import RateLimiter
from wallet_proxy.upstream.budget import RedisTokenBucket
from wallet_proxy.upstream.pacing import TokenBucket

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url):
    return redis.Redis.from_url(redis_url)


def buckets(client, clock, rate, capacity):
    """The in-process bucket and the Redis one, on the same fake clock."""
    return [TokenBucket(rate, capacity, clock=clock),
            RedisTokenBucket(client, uuid.uuid4().hex, rate, capacity, clock=clock)]


class TestSameInterfaceSameArithmetic:
    def test_burst_refusal_refill_refund_hold_reserve(self, client):
        results = []
        for bucket in buckets(client, clock := FakeClock(1000), 2, 3):
            clock.now = 1000
            seen = [bucket.take() for _ in range(4)]
            clock.tick(0.5)
            seen.append(bucket.take())
            bucket.refund()
            seen.append(bucket.tokens)
            bucket.hold(2)
            seen.append(bucket.take())
            clock.tick(2)
            seen += [bucket.take(), bucket.wait_time(), bucket.reserve(), bucket.reserve()]
            results.append(seen)
        local, shared = results
        assert shared == pytest.approx(local)
        assert local[:5] == pytest.approx([0, 0, 0, 0.5, 0])

    def test_the_state_is_shared_by_two_clients(self, client, redis_url):
        name = uuid.uuid4().hex
        first = RedisTokenBucket(client, name, 1e-6, 5)
        second = RedisTokenBucket(redis.Redis.from_url(redis_url), name, 1e-6, 5)
        taken = [first.take() == 0 for _ in range(3)] + [second.take() == 0 for _ in range(3)]
        assert taken == [True] * 5 + [False]

    def test_the_key_expires_once_a_full_refill_has_passed(self, client):
        bucket = RedisTokenBucket(client, uuid.uuid4().hex, 100, 10)
        bucket.take()
        assert 0 < client.pttl(bucket.key) <= (0.1 + 60) * 1000 + 1000

    def test_without_redis_it_paces_this_process_alone_and_says_so(self, caplog):
        dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
        bucket = RedisTokenBucket(dead, "x", 1e-6, 2)
        with caplog.at_level(logging.WARNING):
            assert [bucket.take() == 0 for _ in range(3)] == [True, True, False]
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not once per call


class TestBrazeLimiterInRedis:
    def test_broadcasts_share_the_per_minute_budget(self, client):
        key = uuid.uuid4().hex
        one = RateLimiter.shared(client, key, broadcast_per_minute=50)
        two = RateLimiter.shared(client, key, broadcast_per_minute=50)
        # burst max(1, 50 // 25) = 2 for the whole fleet, not 2 per process
        assert [one.try_acquire(True) == 0, two.try_acquire(True) == 0, one.try_acquire(True) == 0] == \
            [True, True, False]
        assert two.try_acquire(False) == 0  # listed recipients take from the hourly budget only


SENDER = textwrap.dedent("""
    import json, sys, time
    from wallet_proxy import create_app
    from wallet_proxy.settings import parse

    env = json.loads(sys.argv[1])
    app = create_app(parse(env), braze_options={"rate_limits": {"broadcast_per_minute": 120},
                                                "retry_budget": 0.01, "max_attempts": 1})
    client = app.test_client()
    headers = {"Authorization": "Bearer secret", "Content-Type": "application/json"}
    sent = refused = 0
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both senders start together
    start = time.time()
    while time.time() - start < 3.0:
        answer = client.post("/v1/braze/trigger", headers=headers,
                             json={"campaign_id": "c", "broadcast": True})
        if answer.status_code == 201:
            sent += 1
        else:
            refused += 1
    print(json.dumps({"sent": sent, "refused": refused, "start": start, "end": time.time()}))
""")


def run_two_senders(braze_url: str, redis_url: str | None) -> list[dict]:
    env = {"WALLET_PROXY_CLIENTS": "test:secret", "BRAZE_REST_URL": braze_url,
           "BRAZE_API_KEY": "braze-" + uuid.uuid4().hex}
    if redis_url:
        env["WALLET_PROXY_REDIS_URL"] = redis_url
    start_at = str(time.time() + 6)  # past both interpreters' start-up, even on a loaded machine
    procs = [subprocess.Popen([sys.executable, "-c", SENDER, json.dumps(env), start_at], cwd=ROOT,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
             for _ in range(2)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def fleet_bound(results) -> float:
    """Most broadcasts one 120/min budget admits in the span the senders ran (burst 4, then 116/min).

    Each process alone gets about as much, so two separate budgets give about twice this."""
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return 4 + (120 - 4) / 60 * span + 1


class TestTwoProcesses:
    def test_two_processes_with_redis_stay_under_one_budget(self, redis_url):
        braze = FakeBraze()
        braze.on("POST", "/campaigns/trigger/send", Reply(201, {"dispatch_id": "d", "message": "success"}))
        try:
            results = run_two_senders(braze.url, redis_url)
        finally:
            braze.close()
        sent = len(braze.calls("/campaigns/trigger/send"))
        assert sent == sum(r["sent"] for r in results)
        assert all(r["sent"] > 0 and r["refused"] > 0 for r in results), results
        assert sent <= fleet_bound(results), (sent, results)

    def test_without_redis_each_process_has_its_own_budget(self):
        # the control: the same two senders without Redis exceed the one-budget bound, so the test
        # above would fail if the budget were not shared
        braze = FakeBraze()
        braze.on("POST", "/campaigns/trigger/send", Reply(201, {"dispatch_id": "d", "message": "success"}))
        try:
            results = run_two_senders(braze.url, None)
        finally:
            braze.close()
        assert len(braze.calls("/campaigns/trigger/send")) > fleet_bound(results), results
