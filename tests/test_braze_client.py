"""The Braze REST client against a fake Braze on loopback: answers, retries, timeouts, the limiter."""
from __future__ import annotations

import socket

import pytest

from tests.fakes import FakeClock, Reply
from wallet_proxy.errors import OutcomeUnknown, UpstreamError, UpstreamUnavailable
from wallet_proxy.upstream.braze import BrazeClient, BrazeRejected, RateLimiter, retry_delay
from wallet_proxy.upstream.transport import make_session

CAMPAIGN = "/campaigns/trigger/send"
BODY = {"campaign_id": "camp-1", "recipients": [{"external_user_id": "u1"}]}


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client_for(sleeps):
    def build(url, **kwargs):
        kwargs.setdefault("sleep", sleeps.append)
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("rng", lambda: 0.5)
        return BrazeClient(url, "braze-rest-key", make_session(4), **kwargs)

    return build


class TestAnswers:
    def test_a_2xx_gives_the_dispatch_id_and_sends_the_real_key(self, braze, client_for):
        braze.on("POST", CAMPAIGN, Reply(201, {"dispatch_id": "d-1", "message": "success"}))
        assert client_for(braze.url).send("campaign", BODY) == "d-1"
        (call,) = braze.calls(CAMPAIGN)
        assert call.headers["Authorization"] == "Bearer braze-rest-key"
        assert call.json == BODY

    def test_a_canvas_goes_to_the_canvas_path(self, braze, client_for):
        braze.on("POST", "/canvas/trigger/send", Reply(201, {"dispatch_id": "d-2"}))
        assert client_for(braze.url).send("canvas", {"canvas_id": "cv", "broadcast": True}) == "d-2"
        assert len(braze.calls("/canvas/trigger/send")) == 1

    @pytest.mark.parametrize("status", [400, 404, 422])
    def test_a_4xx_is_passed_back_with_brazes_message(self, braze, client_for, status):
        braze.on("POST", CAMPAIGN, Reply(status, {"message": "Invalid campaign_id"}))
        with pytest.raises(BrazeRejected) as caught:
            client_for(braze.url).send("campaign", BODY)
        assert caught.value.status == status
        assert caught.value.message == "Invalid campaign_id"
        assert len(braze.calls(CAMPAIGN)) == 1

    def test_a_refused_key_is_our_problem_not_the_callers(self, braze, client_for):
        braze.on("POST", CAMPAIGN, Reply(401, {"message": "Invalid API key: braze-rest-key"}))
        with pytest.raises(UpstreamError) as caught:
            client_for(braze.url).send("campaign", BODY)
        assert caught.value.status == 502
        assert "braze-rest-key" not in caught.value.message


class TestRetries:
    def test_429_and_5xx_are_retried_until_success(self, braze, client_for, sleeps):
        clock = FakeClock(1_800_000_000)
        braze.on("POST", CAMPAIGN, [Reply(500, {"message": "oops"}),
                                    Reply(429, {"message": "slow down"},
                                          headers={"X-RateLimit-Reset": str(1_800_000_003)}),
                                    Reply(201, {"dispatch_id": "d-3"})])
        assert client_for(braze.url, clock=clock).send("campaign", BODY) == "d-3"
        assert len(braze.calls(CAMPAIGN)) == 3
        assert len(sleeps) == 2
        assert sleeps[1] >= 3.0  # honoured X-RateLimit-Reset (3 s ahead of the clock)

    def test_retries_stop_within_the_budget_then_503_with_retry_after(self, braze, client_for, sleeps):
        braze.on("POST", CAMPAIGN, Reply(503, {"message": "busy"}))
        with pytest.raises(UpstreamUnavailable) as caught:
            client_for(braze.url, max_attempts=4).send("campaign", BODY)
        assert caught.value.status == 503 and caught.value.retry_after >= 1
        assert len(braze.calls(CAMPAIGN)) == 4
        assert sleeps == sorted(sleeps)  # exponential backoff grows

    def test_a_reset_beyond_the_budget_gives_up_at_once(self, braze, client_for, sleeps):
        clock = FakeClock(1_800_000_000)
        braze.on("POST", CAMPAIGN, Reply(429, {}, headers={"X-RateLimit-Reset": str(1_800_000_600)}))
        with pytest.raises(UpstreamUnavailable) as caught:
            client_for(braze.url, clock=clock, retry_budget=5).send("campaign", BODY)
        assert caught.value.retry_after >= 600
        assert len(braze.calls(CAMPAIGN)) == 1 and sleeps == []

    def test_a_read_timeout_is_outcome_unknown_and_never_retried(self, braze, client_for, sleeps):
        braze.on("POST", CAMPAIGN, Reply(201, {"dispatch_id": "late"}, delay=0.6))
        with pytest.raises(OutcomeUnknown) as caught:
            client_for(braze.url, timeout=0.2).send("campaign", BODY)
        assert caught.value.status == 504 and caught.value.code == "outcome_unknown"
        assert len(braze.calls(CAMPAIGN)) == 1 and sleeps == []

    def test_a_refused_connection_sent_nothing_so_it_is_retried(self, client_for, sleeps):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
        with pytest.raises(UpstreamUnavailable):
            client_for(f"http://127.0.0.1:{port}", max_attempts=3).send("campaign", BODY)
        assert len(sleeps) == 2


class TestRetryDelay:
    def test_retry_after_seconds_win_over_backoff(self):
        delay = retry_delay({"Retry-After": "7"}, 1, base=0.5, cap=8, clock=lambda: 0, rng=lambda: 0.0)
        assert delay == 7.0

    def test_backoff_is_jittered_and_capped(self):
        delays = [retry_delay({}, n, base=0.5, cap=4, clock=lambda: 0, rng=lambda: 1.0) for n in range(1, 7)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        # pacing.backoff's "equal jitter": half of the delay is a floor, the other half random
        assert retry_delay({}, 3, base=0.5, cap=4, clock=lambda: 0, rng=lambda: 0.25) == 1.25
        assert retry_delay({}, 3, base=0.5, cap=4, clock=lambda: 0, rng=lambda: 0.0) == 1.0


class TestRateLimiter:
    def test_broadcasts_stay_under_250_a_minute(self):
        clock = FakeClock(0)
        limiter = RateLimiter(monotonic=clock, sleep=clock.tick)
        sent_in_first_minute = 0
        while clock() < 60:
            limiter.acquire(broadcast=True, deadline=clock() + 3600)
            if clock() < 60:
                sent_in_first_minute += 1
        assert 200 <= sent_in_first_minute <= 250

    def test_no_slot_before_the_deadline_is_503_with_the_wait(self):
        clock = FakeClock(0)
        limiter = RateLimiter(hourly=250_000, broadcast_per_minute=10, monotonic=clock, sleep=clock.tick)
        limiter.acquire(True, clock())  # the one-token burst
        with pytest.raises(UpstreamUnavailable) as caught:
            limiter.acquire(True, clock() + 1)
        assert caught.value.retry_after > 1

    def test_the_hourly_limit_holds_in_any_hour(self):
        clock = FakeClock(0)
        limiter = RateLimiter(hourly=1000, monotonic=clock, sleep=clock.tick)
        count = 0
        while clock() < 3600:
            limiter.acquire(False, clock() + 7200)
            count += clock() < 3600
        assert 900 <= count <= 1000
