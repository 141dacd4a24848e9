"""The idempotency stores (memory and real Redis) and at-most-once across two app instances."""
from __future__ import annotations

import uuid

import pytest
import redis

from tests.conftest import make_settings
from tests.fakes import FakeClock, FakeUpstream, Reply
from wallet_proxy.errors import Conflict, UpstreamUnavailable
from wallet_proxy.sends import idempotency
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


def sent(record_chunks):
    return [{**c, "state": "sent", "dispatch_id": f"d{c['index']}"} for c in record_chunks]


class FakeTime:
    """Stands in for the idempotency module's `time`: a waiter's monotonic clock and its sleeps.

    Each sleep moves the monotonic clock and the stores' wall clock together; `when(after, fn)` runs
    `fn` once the waiter has slept `after` seconds (another request finishing meanwhile). No real wait.
    """

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.elapsed = 0.0
        self.sleeps: list[float] = []
        self.events: list = []

    def monotonic(self) -> float:
        return 5_000.0 + self.elapsed

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        assert len(self.sleeps) < 10_000, "the waiter never gives up"
        self.elapsed += seconds
        self.clock.tick(seconds)
        for event in [e for e in self.events if self.elapsed >= e[0] - 1e-9]:
            self.events.remove(event)
            event[1]()

    def when(self, after: float, fn) -> None:
        self.events.append((after, fn))


@pytest.fixture
def fake_time(monkeypatch):
    """Install a FakeTime in the module; a memory store's condition wait becomes a fake sleep too."""
    def install(store, clock):
        fake = FakeTime(clock)
        monkeypatch.setattr(idempotency, "time", fake)
        if isinstance(store, MemoryIdempotency):
            monkeypatch.setattr(store, "_wait", lambda key, timeout: fake.sleep(timeout))
        return fake

    return install


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
        with pytest.raises(Conflict) as caught:
            store.begin(key, "h2", chunks())
        # the 409 names the field and says why, so the caller knows to pick a new key
        assert caught.value.status == 409 and list(caught.value.details) == ["idempotency_key"]
        assert "Idempotency-Key" in caught.value.message and "body" in caught.value.message

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

    def test_a_repeat_waits_for_the_first_attempt_and_answers_its_result(self, store_for, key, fake_time):
        clock = FakeClock()
        store = store_for(clock, wait_timeout=30)
        fake = fake_time(store, clock)
        first = store.begin(key, "h1", chunks())
        # the first attempt finishes in the last second of the repeat's 30 s wait
        fake.when(29.4, lambda: store.record(key, first.owner, sent(first.record["chunks"]), done=True))
        repeat = store.begin(key, "h1", chunks())
        assert repeat.replay and [c["dispatch_id"] for c in repeat.record["chunks"]] == ["d0", "d1"]
        assert 29 < fake.elapsed < 30
        # it looks again at least every half second (Redis: every poll, 50 ms)
        assert max(fake.sleeps) <= (0.5 if store.name == "memory" else 0.05)

    def test_a_repeat_gives_up_after_its_wait_with_a_503_and_retry_after(self, store_for, key, fake_time):
        clock = FakeClock()
        store = store_for(clock, wait_timeout=30)
        fake = fake_time(store, clock)
        store.begin(key, "h1", chunks())
        with pytest.raises(UpstreamUnavailable) as caught:
            store.begin(key, "h1", chunks())
        assert fake.elapsed == pytest.approx(30, abs=0.06)
        assert caught.value.retry_after == 2 and "Idempotency-Key" in caught.value.message

    def test_a_waiter_takes_over_a_dead_owners_key_when_its_lease_ends(self, store_for, key, fake_time):
        clock = FakeClock()
        store = store_for(clock, wait_timeout=30, lease=10)
        fake = fake_time(store, clock)
        dead = store.begin(key, "h1", chunks())
        store.record(key, dead.owner, [{**CHUNKS[0], "state": "sending"}, dict(CHUNKS[1])])
        retry = store.begin(key, "h1", chunks())
        assert not retry.replay and [c["state"] for c in retry.record["chunks"]] == ["unknown", "new"]
        assert fake.elapsed == pytest.approx(10, abs=0.06)  # the lease's end, not later

    def test_a_resend_holds_the_key_for_a_lease_like_a_first_send(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock, wait_timeout=0)
        claim = store.begin(key, "h1", chunks())
        store.record(key, claim.owner, [{**CHUNKS[0], "state": "sent", "dispatch_id": "d0"},
                                        {**CHUNKS[1], "state": "failed", "error": {"code": "x"}}], done=True)
        clock.tick(store.lease + 1)
        resend = store.begin(key, "h1", chunks())
        assert not resend.replay
        clock.tick(store.lease - 1)
        # a third attempt while the resend is under way must not send the failed chunk a second time
        with pytest.raises(UpstreamUnavailable):
            store.begin(key, "h1", chunks())

    def test_each_record_renews_the_owners_lease(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock, wait_timeout=0)
        claim = store.begin(key, "h1", chunks())
        clock.tick(store.lease - 1)
        store.record(key, claim.owner, [{**CHUNKS[0], "state": "sent", "dispatch_id": "d0"}, dict(CHUNKS[1])])
        clock.tick(store.lease - 1)  # past the first lease, within the renewed one: still the owner's
        with pytest.raises(UpstreamUnavailable):
            store.begin(key, "h1", chunks())

    def test_a_late_owner_cannot_release_the_key_it_lost(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock, wait_timeout=0)
        late = store.begin(key, "h1", chunks())
        store.record(key, late.owner, [{**CHUNKS[0], "state": "sending"}, dict(CHUNKS[1])])
        clock.tick(store.lease + 1)
        store.begin(key, "h1", chunks())  # taken over: chunk 1 is being sent again by its new owner
        store.record(key, late.owner, sent(CHUNKS), done=True)  # the late owner wakes up and finishes
        with pytest.raises(UpstreamUnavailable):  # the new owner still holds the key
            store.begin(key, "h1", chunks())

    def test_a_late_owner_cannot_rewrite_chunks_marked_unknown(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock)
        late = store.begin(key, "h1", chunks())
        store.record(key, late.owner, [{**c, "state": "sending"} for c in CHUNKS])
        clock.tick(store.lease + 1)
        replay = store.begin(key, "h1", chunks())  # both chunks may have been sent: nothing to resend
        assert replay.replay and [c["state"] for c in replay.record["chunks"]] == ["unknown", "unknown"]
        failed = [{**c, "state": "failed", "error": {"code": "x"}} for c in CHUNKS]
        store.record(key, late.owner, failed, done=True)
        again = store.begin(key, "h1", chunks())
        assert again.replay and [c["state"] for c in again.record["chunks"]] == ["unknown", "unknown"]

    def test_records_are_kept_24_hours(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock)
        claim = store.begin(key, "h1", chunks())
        store.record(key, claim.owner, [{**c, "state": "sent", "dispatch_id": "d"} for c in CHUNKS], done=True)
        clock.tick(86_399)
        assert store.begin(key, "h1", chunks()).replay
        clock.tick(2)
        assert not store.begin(key, "h2", chunks()).replay  # expired: a new send, no conflict

    def test_a_record_ends_exactly_24_hours_after_it_began(self, store_for, key):
        clock = FakeClock()
        store = store_for(clock)
        claim = store.begin(key, "h1", chunks())
        store.record(key, claim.owner, sent(CHUNKS), done=True)
        clock.tick(store.retention)
        assert not store.begin(key, "h2", chunks()).replay


@pytest.mark.redis
def test_a_redis_record_expires_with_its_retention(redis_url, key):
    store = RedisIdempotency(redis.Redis.from_url(redis_url), clock=FakeClock())
    claim = store.begin(key, "h1", chunks())
    store.record(key, claim.owner, sent(CHUNKS), done=True)
    assert store.retention - 10 < store.redis.ttl(store.PREFIX + key) <= store.retention


@pytest.mark.redis
def test_a_redis_waiter_looks_again_every_50_ms(redis_url, key, fake_time):
    clock = FakeClock()
    store = RedisIdempotency(redis.Redis.from_url(redis_url), clock=clock, wait_timeout=1)  # poll: default
    fake = fake_time(store, clock)
    store.begin(key, "h1", chunks())
    with pytest.raises(UpstreamUnavailable):
        store.begin(key, "h1", chunks())
    assert fake.sleeps and max(fake.sleeps) == pytest.approx(0.05)


@pytest.mark.redis
def test_a_redis_record_changed_between_read_and_write_is_read_again(redis_url, key):
    # WATCH/MULTI: when anything writes the record between our read and our write (another process,
    # an expiry), EXEC fails and the decision is made again on what is there now, at once.
    other = redis.Redis.from_url(redis_url)
    name = RedisIdempotency.PREFIX + key

    class RacingClock(FakeClock):
        armed = False

        def __call__(self):
            if self.armed:  # read inside the transaction, after the WATCH
                self.armed = False
                other.set(name, other.get(name), keepttl=True)
            return super().__call__()

    clock = RacingClock()
    store = RedisIdempotency(redis.Redis.from_url(redis_url), clock=clock, wait_timeout=0)
    claim = store.begin(key, "h1", chunks())
    store.record(key, claim.owner, [{**CHUNKS[0], "state": "sent", "dispatch_id": "d0"},
                                    {**CHUNKS[1], "state": "failed", "error": {"code": "x"}}], done=True)
    clock.armed = True
    resend = store.begin(key, "h1", chunks())
    assert not clock.armed and not resend.replay and resend.owner
    assert [c["state"] for c in resend.record["chunks"]] == ["sent", "failed"]


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
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "Redis" in response.json["error"]["message"]
        assert braze.requests == []
    finally:
        braze.close()
