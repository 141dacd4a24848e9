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
        accepted = client_for(braze.url).send("campaign", BODY)
        assert accepted.dispatch_id == "d-1" and accepted.sent and accepted.errors == ()
        (call,) = braze.calls(CAMPAIGN)
        assert call.headers["Authorization"] == "Bearer braze-rest-key"
        assert call.json == BODY

    def test_a_canvas_goes_to_the_canvas_path(self, braze, client_for):
        braze.on("POST", "/canvas/trigger/send", Reply(201, {"dispatch_id": "d-2"}))
        accepted = client_for(braze.url).send("canvas", {"canvas_id": "cv", "broadcast": True})
        assert accepted.dispatch_id == "d-2"
        assert len(braze.calls("/canvas/trigger/send")) == 1

    @pytest.mark.parametrize("status", [400, 422])
    def test_a_4xx_is_passed_back_with_brazes_message_and_errors(self, braze, client_for, status):
        braze.on("POST", CAMPAIGN, Reply(status, {"message": "Invalid campaign_id", "errors": ["bad id"]}))
        with pytest.raises(BrazeRejected) as caught:
            client_for(braze.url).send("campaign", BODY)
        assert caught.value.status == status
        assert caught.value.message == "Invalid campaign_id"
        assert caught.value.braze_errors == ["bad id"]
        assert len(braze.calls(CAMPAIGN)) == 1

    def test_a_404_is_our_configuration_502_logged_loudly(self, braze, client_for, caplog):
        # https://braze.com/docs/api/errors: 404 is an invalid URL, i.e. a wrong BRAZE_REST_URL
        with pytest.raises(UpstreamError) as caught:
            client_for(braze.url + "/wrong-prefix").send("campaign", BODY)
        assert caught.value.status == 502 and "BRAZE_REST_URL" in caught.value.message
        assert any(r.levelname == "ERROR" and "BRAZE_REST_URL" in r.getMessage() for r in caplog.records)
        assert len(braze.requests) == 1  # not retried

    def test_a_canvas_notice_means_nothing_was_sent(self, braze, client_for):
        notice = "The Canvas is paused. Resume the Canvas to ensure trigger requests will take effect."
        braze.on("POST", "/canvas/trigger/send", Reply(201, {"dispatch_id": "d-p", "message": "success",
                                                             "notice": notice}))
        accepted = client_for(braze.url).send("canvas", {"canvas_id": "cv", "broadcast": True})
        assert accepted.sent is False and accepted.notice == notice
        assert accepted.answer["notice"] == notice

    def test_non_fatal_errors_in_a_201_are_kept(self, braze, client_for):
        # https://braze.com/docs/api/errors: {"message": "success", "errors": [<minor error message>]}
        braze.on("POST", CAMPAIGN, Reply(201, {"dispatch_id": "d-e", "message": "success",
                                               "errors": ["some recipients were not found"]}))
        accepted = client_for(braze.url).send("campaign", BODY)
        assert accepted.sent and accepted.errors == ("some recipients were not found",)

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
        assert client_for(braze.url, clock=clock).send("campaign", BODY).dispatch_id == "d-3"
        assert len(braze.calls(CAMPAIGN)) == 3
        assert len(sleeps) == 2
        assert sleeps[1] >= 3.0  # honoured X-RateLimit-Reset (3 s ahead of the clock)

    def test_a_5xx_is_retried_with_backoff_not_held_until_the_hourly_reset(self, braze, client_for, sleeps):
        # Braze sends X-RateLimit-Reset (the END of the hourly window) on every answer: a 500 with a
        # Reset 40 minutes ahead and calls remaining must be retried within seconds, not in 40 minutes.
        clock = FakeClock(1_800_000_000)
        hour_end = {"X-RateLimit-Limit": "250000", "X-RateLimit-Remaining": "249000",
                    "X-RateLimit-Reset": str(1_800_000_000 + 2400)}
        braze.on("POST", CAMPAIGN, [Reply(500, {"message": "oops", "errors": []}, headers=hour_end),
                                    Reply(502, {"message": "bad gateway", "errors": []}, headers=hour_end),
                                    Reply(201, {"dispatch_id": "d-5", "message": "success"},
                                          headers=hour_end)])
        accepted = client_for(braze.url, clock=clock, retry_budget=20).send("campaign", BODY)
        assert accepted.dispatch_id == "d-5" and len(braze.calls(CAMPAIGN)) == 3
        assert len(sleeps) == 2 and max(sleeps) < 1.0  # backoff (base 0.01 s), not 2400 s

    def test_remaining_zero_on_a_5xx_honours_the_reset(self, braze, client_for, sleeps):
        clock = FakeClock(1_800_000_000)
        spent = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(1_800_000_004)}
        braze.on("POST", CAMPAIGN, [Reply(503, {"message": "busy"}, headers=spent),
                                    Reply(201, {"dispatch_id": "d-6"})])
        assert client_for(braze.url, clock=clock).send("campaign", BODY).dispatch_id == "d-6"
        assert sleeps[0] >= 4.0

    def test_the_fake_braze_sends_rate_limit_headers_on_every_answer(self, braze):
        import requests

        braze.on("POST", CAMPAIGN, [Reply(201, {"dispatch_id": "d"}),
                                    Reply(500, {"message": "x", "errors": []})])
        answers = [requests.post(braze.url + CAMPAIGN, json=BODY, timeout=5) for _ in range(2)]
        answers.append(requests.post(braze.url + "/nope", json=BODY, timeout=5))
        for answer in answers:
            assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(answer.headers)
        remaining = [int(answer.headers["X-RateLimit-Remaining"]) for answer in answers]
        assert remaining[0] > remaining[1]
        assert answers[2].status_code == 404 and set(answers[2].json()) == {"message", "errors"}

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
    def test_an_audience_call_counts_against_the_per_minute_budget(self, braze, client_for):
        # https://braze.com/docs/api/api_limits: 250/minute for calls with a segment or Connected Audience,
        # recipients listed or not
        braze.on("POST", CAMPAIGN, Reply(201, {"dispatch_id": "d-a"}))
        clock = FakeClock(0)
        limiter = RateLimiter(broadcast_per_minute=250, monotonic=clock, sleep=clock.tick)
        client = client_for(braze.url, limiter=limiter, monotonic=clock)
        before = limiter.broadcast.tokens
        client.send("campaign", {**BODY, "audience": {"AND": [{"custom_attribute": {
            "custom_attribute_name": "tier", "comparison": "equals", "value": "gold"}}]}})
        assert limiter.broadcast.tokens == pytest.approx(before - 1)
        client.send("campaign", BODY)  # listed recipients only: the hourly budget alone
        assert limiter.broadcast.tokens == pytest.approx(before - 1)

    def test_a_refused_hourly_slot_gives_the_minute_token_back(self):
        clock = FakeClock(0)
        limiter = RateLimiter(hourly=1, broadcast_per_minute=250, monotonic=clock, sleep=clock.tick)
        assert limiter.try_acquire(True) == 0.0
        before = limiter.broadcast.tokens
        assert limiter.try_acquire(True) > 0
        assert limiter.broadcast.tokens == pytest.approx(before)

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
