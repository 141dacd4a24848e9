"""Braze /users/track client against a hostile stand-in on loopback: partial errors, 429s, the budget.

Braze's documented behaviour (https://www.braze.com/docs/api/endpoints/user_data/post_user_track/,
https://www.braze.com/docs/api/errors/, https://www.braze.com/docs/api/api_limits/): a 2xx may carry
non-fatal `errors` naming skipped objects by index; a 4xx processes nothing; 3,000 requests per 3 s with
`X-RateLimit-*` headers on every answer and 429 past the limit.
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.fakes import FakeUpstream, Reply
from wallet_proxy.errors import UpstreamError, UpstreamUnavailable
from wallet_proxy.upstream import transport
from wallet_proxy.upstream.braze_users import MAX_OBJECTS, BrazeKeyRefused, BrazeUsersClient, track_bucket

pytestmark = pytest.mark.usefixtures("quiet_fakes")


def objects(n: int, bad: tuple = ()) -> list:
    return [{"external_id": f"{'bad' if i in bad else 'u'}-{i}", "sessionm_offer_count": i} for i in range(n)]


class Sleeps:
    """A recorded sleep: tests see every wait the client chose, nothing really sleeps."""

    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


def client(url, **kwargs) -> BrazeUsersClient:
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("backoff_base", 0.001)
    kwargs.setdefault("backoff_cap", 0.01)
    return BrazeUsersClient(url, "braze-key", transport.make_session(8), **kwargs)


def strict_braze(fatal: bool):
    """A stand-in that refuses any object whose id starts with `bad`: a 201 with indexed errors, or
    (fatal) a 400 naming nobody, which processes nothing. It records what it processed."""
    processed = []

    def answer(recorded):
        items = recorded.json["attributes"]
        bad = [i for i, o in enumerate(items) if o["external_id"].startswith("bad")]
        if fatal and bad:
            return Reply(400, {"message": "Bad request"})
        processed.extend(o["external_id"] for i, o in enumerate(items) if i not in bad)
        errors = [{"type": "invalid", "input_array": "attributes", "index": i} for i in bad]
        return Reply(201, {"message": "success", **({"errors": errors} if errors else {})})

    return answer, processed


class TestPartialFailures:
    def test_indexed_errors_in_a_201_reject_exactly_those_objects(self, braze):
        answer, processed = strict_braze(fatal=False)
        braze.on("POST", "/users/track$", answer)
        result = client(braze.url).track(objects(10, bad=(2, 7)))
        assert sorted(result.rejected) == [2, 7] and "invalid" in result.rejected[2]
        assert result.accepted == [0, 1, 3, 4, 5, 6, 8, 9]
        assert len(braze.calls("/users/track")) == 1, "a 201 processed the rest: nothing is resent"

    def test_a_400_naming_nobody_is_narrowed_down_to_the_bad_object(self, braze):
        answer, processed = strict_braze(fatal=True)
        braze.on("POST", "/users/track$", answer)
        result = client(braze.url).track(objects(75, bad=(41,)))
        assert list(result.rejected) == [41]
        assert result.accepted == [i for i in range(75) if i != 41]
        assert sorted(processed) == sorted(f"u-{i}" for i in range(75) if i != 41)
        assert len(processed) == 74, "each good object processed exactly once"
        assert len(braze.calls("/users/track")) <= 2 * 7 + 1  # a binary search, not 75 calls

    def test_a_400_with_indexed_errors_resends_the_others_once(self, braze):
        sent = []

        def answer(recorded):
            items = recorded.json["attributes"]
            sent.append([o["external_id"] for o in items])
            bad = [i for i, o in enumerate(items) if o["external_id"].startswith("bad")]
            if bad:
                return Reply(400, {"message": "Bad", "errors": [
                    {"type": "bad value", "input_array": "attributes", "index": i} for i in bad]})
            return Reply(201, {"message": "success"})

        braze.on("POST", "/users/track$", answer)
        result = client(braze.url).track(objects(5, bad=(1,)))
        assert result.rejected == {1: "bad value"} and result.accepted == [0, 2, 3, 4]
        assert sent == [["u-0", "bad-1", "u-2", "u-3", "u-4"], ["u-0", "u-2", "u-3", "u-4"]]

    def test_errors_in_a_201_that_name_no_object_reject_nothing_and_resend_nothing(self, braze):
        # Issue #21 item 11: "errors inside a 2xx name what failed, and everything else was processed"
        # (https://www.braze.com/docs/api/endpoints/user_data/post_user_track/). Resending the processed
        # objects to pin an error that names none of them would write (and bill) them twice.
        answer, processed = strict_braze(fatal=False)

        def vague(recorded):
            reply = answer(recorded)
            reply.body["errors"] = reply.body.get("errors", []) + ["something was skipped"]
            return reply

        braze.on("POST", "/users/track$", vague)
        result = client(braze.url).track(objects(8, bad=(5,)))
        assert result.rejected == {5: "invalid"} and result.accepted == [0, 1, 2, 3, 4, 6, 7]
        assert len(braze.calls("/users/track")) == 1, "the processed objects were not sent again"
        assert processed == [f"u-{i}" for i in range(8) if i != 5]

    def test_an_unplaceable_error_in_a_201_of_one_object_is_that_objects(self, braze):
        braze.on("POST", "/users/track$", Reply(201, {"message": "success", "errors": ["skipped"]}))
        result = client(braze.url).track(objects(1))
        assert list(result.rejected) == [0] and result.accepted == []

    @staticmethod
    def contract_braze(limit: int):
        """A stand-in on a contract allowing `limit` objects a request: a larger one is a 400 that
        processes nothing (https://www.braze.com/docs/api/endpoints/user_data/post_user_track/: on MAU
        contracts "each request may batch up to 50 updates")."""
        sizes = []

        def answer(recorded):
            sizes.append(len(recorded.json["attributes"]))
            if sizes[-1] > limit:
                return Reply(400, {"message": f"Too many attributes objects: at most {limit} per request"})
            return Reply(201, {"message": "success"})

        return answer, sizes

    def test_a_batch_refused_for_its_size_is_halved_once(self, braze):
        answer, sizes = self.contract_braze(50)
        braze.on("POST", "/users/track$", answer)
        result = client(braze.url).track(objects(75))
        assert result.accepted == list(range(75)) and sizes == [75, 38, 37]

    def test_a_half_refused_for_its_size_again_is_rejected_not_halved_again(self, braze):
        # Issue #21 item 6: never halve-and-retry a batch Braze refused for its size more than once.
        answer, sizes = self.contract_braze(20)
        braze.on("POST", "/users/track$", answer)
        result = client(braze.url).track(objects(75))
        assert sizes == [75, 38, 37], "one halving, then each half is rejected"
        assert result.accepted == [] and sorted(result.rejected) == list(range(75))
        assert "BRAZE_TRACK_BATCH" in result.rejected[0]

    def test_the_batch_size_is_the_clients_setting(self, braze):
        with pytest.raises(ValueError):
            client(braze.url, batch=50).track(objects(51))
        assert braze.calls() == []

    def test_more_than_75_objects_is_refused_before_any_call(self, braze):
        with pytest.raises(ValueError):
            client(braze.url).track(objects(MAX_OBJECTS + 1))
        assert braze.calls() == []


class TestRetries:
    def test_429_waits_until_braze_reset_before_calling_again(self, braze):
        reset = int(time.time()) + 2
        arrivals = []
        replies = [Reply(429, {"message": "rate limited"}, {"X-RateLimit-Limit": "3000",
                                                            "X-RateLimit-Remaining": "0",
                                                            "X-RateLimit-Reset": str(reset)}),
                   Reply(201, {"message": "success"})]

        def answer(recorded):
            arrivals.append(time.time())
            return replies.pop(0)

        braze.on("POST", "/users/track$", answer)
        result = client(braze.url, sleep=time.sleep).track(objects(3))
        assert result.accepted == [0, 1, 2] and result.retries == 1
        assert arrivals[1] >= reset - 0.01, "the retry went out before Braze's window reset"

    def test_remaining_zero_on_a_success_pauses_the_next_call(self, braze):
        braze.on("POST", "/users/track$", Reply(201, {"message": "success"}, {
            "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 2)}))
        users = client(braze.url)
        users.track(objects(1))
        assert users.bucket.wait_time() > 0.5

    def test_5xx_and_dropped_connections_are_retried_with_backoff(self, braze):
        braze.on("POST", "/users/track$", [Reply(500, {"message": "oops"}), Reply(503, b"down"),
                                           Reply(201, {"message": "success"})])
        result = client(braze.url).track(objects(2))
        assert result.accepted == [0, 1] and result.retries == 2

    def test_429_past_the_deadline_gives_up_with_retry_after(self, braze):
        braze.on("POST", "/users/track$", Reply(429, {"message": "slow down"}, {
            "X-RateLimit-Reset": str(int(time.time()) + 60)}))
        with pytest.raises(UpstreamUnavailable) as caught:
            client(braze.url).track(objects(1), deadline=time.monotonic() + 5)
        assert caught.value.status == 429 and caught.value.retry_after >= 50

    def test_refused_key_is_fatal_and_a_404_is_our_configuration(self, braze):
        braze.on("POST", "/users/track$", Reply(401, {"message": "Invalid API key"}))
        with pytest.raises(BrazeKeyRefused):
            client(braze.url).track(objects(1))
        braze.on("POST", "/users/track$", Reply(404, {"message": "not found"}))
        with pytest.raises(UpstreamError):
            client(braze.url).track(objects(1))
        assert len(braze.calls()) == 2, "neither is retried"

    def test_request_shape(self, braze):
        braze.on("POST", "/users/track$", Reply(201, {"message": "success"}))
        client(braze.url + "/").track(objects(2))
        (call,) = braze.calls()
        assert call.path == "/users/track" and call.headers["Authorization"] == "Bearer braze-key"
        assert call.json == {"attributes": [{**o, "_update_existing_only": True} for o in objects(2)]}


def test_the_rate_budget_is_never_exceeded_by_concurrent_callers():
    """8 threads, 120 calls, a 40-per-1 s budget: no 1 s window sees more than 40 arrive (the stand-in 429s
    any excess, and counts them)."""
    limit, window = 40, 1.0
    stamps, excess = [], []
    lock = threading.Lock()

    def answer(recorded):
        now = time.monotonic()
        with lock:
            stamps.append(now)
            if sum(1 for s in stamps if s > now - window) > limit:
                excess.append(now)
                return Reply(429, {"message": "rate limited"})
        return Reply(201, {"message": "success"})

    fake = FakeUpstream()
    fake.on("POST", "/users/track$", answer)
    try:
        users = BrazeUsersClient(fake.url, "k", transport.make_session(8), bucket=track_bucket(limit, window))
        threads = [threading.Thread(target=lambda: [users.track(objects(1)) for _ in range(15)])
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(stamps) == 120 and excess == []
    finally:
        fake.close()


def test_processes_sharing_redis_share_one_budget(redis_url):
    """Two 'processes' (separate Redis connections and buckets) with 4 threads each: together they stay
    within one 40-per-1 s budget, which neither bucket alone would enforce."""
    import redis

    from wallet_proxy.upstream.braze_users import track_bucket_shape
    from wallet_proxy.upstream.budget import RedisTokenBucket

    limit, window = 40, 1.0
    key = f"test:budget:{time.time_ns()}"
    stamps, excess = [], []
    lock = threading.Lock()

    def answer(recorded):
        now = time.monotonic()
        with lock:
            stamps.append(now)
            if sum(1 for s in stamps if s > now - window) > limit:
                excess.append(now)
        return Reply(201, {"message": "success"})

    fake = FakeUpstream()
    fake.on("POST", "/users/track$", answer)
    try:
        clients = [BrazeUsersClient(fake.url, "k", transport.make_session(4), bucket=RedisTokenBucket(
            redis.Redis.from_url(redis_url), key, *track_bucket_shape(limit, window))) for _ in range(2)]
        threads = [threading.Thread(target=lambda c=c: [c.track(objects(1)) for _ in range(15)])
                   for c in clients for _ in range(4)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(stamps) == 120 and excess == []
        # 120 calls at 36 a second (the budget less its headroom) take over 3 s: the budget was shared
        assert time.monotonic() - started > 2.5
    finally:
        fake.close()

