"""The idempotency stores (memory and real Redis) and at-most-once across two app instances."""
from __future__ import annotations

import uuid

import pytest
import redis

from tests.conftest import make_settings
from tests.fakes import FakeClock, FakeUpstream, Reply
from wallet_proxy.errors import Conflict, UpstreamUnavailable
from wallet_proxy.sends.idempotency import MemoryIdempotency, RedisIdempotency

CHUNKS = [{"index": 0, "recipients": 50, "state": "new"}, {"index": 1, "recipients": 10, "state": "new"}]


def chunks():
    return [dict(c) for c in CHUNKS]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store_for(request):
    def build(clock, **kwargs):
        if request.param == "memory":
            return MemoryIdempotency(clock=clock, **kwargs)
        url = request.getfixturevalue("redis_url")
        return RedisIdempotency(redis.Redis.from_url(url), clock=clock, poll=0.01, **kwargs)

    return build


@pytest.fixture
def key():
    return uuid.uuid4().hex  # Redis is shared by the whole session: a fresh key per test


class TestStores:
    def test_a_done_record_is_replayed(self, store_for, key):
        store = store_for(FakeClock())
        claim = store.begin(key, "h1", chunks())
        assert not claim.replay
        done = [{**c, "state": "sent", "dispatch_id": f"d{c['index']}"} for c in claim.record["chunks"]]
        store.record(key, claim.owner, done, done=True)
        again = store.begin(key, "h1", chunks())
        assert again.replay and [c["dispatch_id"] for c in again.record["chunks"]] == ["d0", "d1"]

    def test_another_body_under_the_same_key_is_a_conflict(self, store_for, key):
        store = store_for(FakeClock())
        store.begin(key, "h1", chunks())
        with pytest.raises(Conflict):
            store.begin(key, "h2", chunks())

    def test_failed_chunks_are_handed_back_and_sent_ones_kept(self, store_for, key):
        store = store_for(FakeClock())
        claim = store.begin(key, "h1", chunks())
        state = [{**CHUNKS[0], "state": "sent", "dispatch_id": "d0"},
                 {**CHUNKS[1], "state": "failed", "error": {"status": 503, "code": "x", "message": "m"}}]
        store.record(key, claim.owner, state, done=True)
        retry = store.begin(key, "h1", chunks())
        assert not retry.replay
        assert [c["state"] for c in retry.record["chunks"]] == ["sent", "failed"]

    def test_a_pending_key_makes_a_repeat_wait_then_503(self, store_for, key):
        store = store_for(FakeClock(), wait_timeout=0.1)
        store.begin(key, "h1", chunks())
        with pytest.raises(UpstreamUnavailable) as caught:
            store.begin(key, "h1", chunks())
        assert caught.value.retry_after

    def test_a_dead_owners_in_flight_chunk_becomes_unknown_never_resent(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock)
        claim = store.begin(key, "h1", chunks())
        store.record(key, claim.owner, [{**CHUNKS[0], "state": "sending"}, dict(CHUNKS[1])])
        clock.tick(store.lease + 1)  # the owner died mid-call
        retry = store.begin(key, "h1", chunks())
        assert [c["state"] for c in retry.record["chunks"]] == ["unknown", "new"]
        assert retry.record["chunks"][0]["error"]["code"] == "outcome_unknown"
        # the late owner cannot overwrite the new owner's record
        store.record(key, claim.owner, [{**CHUNKS[0], "state": "sent", "dispatch_id": "x"}] * 2, done=True)
        store.record(key, retry.owner, retry.record["chunks"], done=True)
        assert store.begin(key, "h1", chunks()).record["chunks"][0]["state"] == "unknown"

    def test_records_are_kept_24_hours(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock)
        claim = store.begin(key, "h1", chunks())
        store.record(key, claim.owner, [{**c, "state": "sent", "dispatch_id": "d"} for c in CHUNKS], done=True)
        clock.tick(86_399)
        assert store.begin(key, "h1", chunks()).replay
        clock.tick(2)
        assert not store.begin(key, "h2", chunks()).replay  # expired: a new send, no conflict


@pytest.mark.redis
def test_redis_idempotency_holds_across_two_app_instances(redis_url, app_for):
    braze = FakeUpstream()
    braze.on("POST", "/campaigns/trigger/send", Reply(201, {"dispatch_id": "d-shared"}))
    try:
        settings = make_settings(braze_url=braze.url, WALLET_PROXY_REDIS_URL=redis_url)
        first, second = app_for(settings).test_client(), app_for(settings).test_client()
        body = {"campaign_id": "c", "external_user_id": "u"}
        headers = {"Authorization": "Bearer secret", "Idempotency-Key": "shared-" + uuid.uuid4().hex}
        one = first.post("/v1/braze/trigger", json=body, headers=headers)
        two = second.post("/v1/braze/trigger", json=body, headers=headers)
        assert (one.status_code, two.status_code) == (201, 201)
        assert two.headers["Idempotent-Replayed"] == "true" and two.json["dispatch_ids"] == ["d-shared"]
        assert len(braze.calls("/campaigns/trigger/send")) == 1
        conflict = second.post("/v1/braze/trigger", json={**body, "x": 1}, headers=headers)
        assert conflict.status_code == 409
    finally:
        braze.close()


@pytest.mark.redis
def test_redis_down_refuses_rather_than_risk_a_double_send(app_for):
    braze = FakeUpstream()
    braze.on("POST", "/campaigns/trigger/send", Reply(201, {"dispatch_id": "d"}))
    try:
        settings = make_settings(braze_url=braze.url, WALLET_PROXY_REDIS_URL="redis://127.0.0.1:9/0")
        client = app_for(settings).test_client()
        response = client.post("/v1/braze/trigger", json={"campaign_id": "c", "external_user_id": "u"},
                               headers={"Authorization": "Bearer secret", "Idempotency-Key": "k"})
        assert response.status_code == 503 and "Retry-After" in response.headers
        assert braze.requests == []
    finally:
        braze.close()
