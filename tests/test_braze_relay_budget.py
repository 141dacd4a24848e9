"""The Braze-compatible door never outwaits its caller (issue #21 item 2), over real HTTP on loopback.

Braze client libraries wait about 2 s and retry on their own, without an idempotency key; real Braze
answers a 429 at once with nothing sent, and every answer carries `X-RateLimit-Limit`, `-Remaining` and
`-Reset` (epoch seconds) (https://www.braze.com/docs/api/api_limits/,
https://www.braze.com/docs/api/errors/). So our own retrying of Braze on `/campaigns/trigger/send` and
`/canvas/trigger/send` stops within WALLET_PROXY_RELAY_BUDGET (1.5 s by default) and Braze's 429/5xx is
then answered as Braze gave it. Driven by plain HTTP and by a Braze client library from PyPI
(`braze-client-p311`: `braze-client`'s Python 3.11 fork, whose `campaign_trigger_send` times out after
2 s, retries 3 times, and reads only `X-RateLimit-Reset` on a 429).
"""
from __future__ import annotations

import threading
import time

import pytest
import requests
from braze.client import BrazeClient as LibraryClient
from braze.client import BrazeInternalServerError, BrazeRateLimitError

from tests.conftest import make_settings
from tests.fakes import Reply
from wallet_proxy import create_app

CAMPAIGN = "/campaigns/trigger/send"
BODY = {"campaign_id": "camp-1", "recipients": [{"external_user_id": "u1"}]}
AUTH = {"Authorization": "Bearer secret"}


class StandIn:
    """A Braze that answers the scripted statuses in turn (the last repeating), counting accepted sends.

    A 429 says the window resets `reset_in` seconds from now (`X-RateLimit-Remaining: 0`), nothing sent.
    """

    def __init__(self, statuses, reset_in: float = 0.3):
        self.statuses = list(statuses)
        self.reset_in = reset_in
        self.accepted = 0
        self.lock = threading.Lock()

    def __call__(self, recorded):
        with self.lock:
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            if status == 201:
                self.accepted += 1
                return Reply(201, {"dispatch_id": f"d-{self.accepted}", "message": "success"})
        if status == 429:
            return Reply(429, {"message": "API rate limit exceeded", "errors": []},
                         {"X-RateLimit-Limit": "250000", "X-RateLimit-Remaining": "0",
                          "X-RateLimit-Reset": f"{time.time() + self.reset_in:.3f}"})
        return Reply(status, {"message": "Internal Server Error", "errors": []})


@pytest.fixture
def serve(braze, live):
    def build(stand_in, **env):
        braze.on("POST", CAMPAIGN, stand_in)
        return live(create_app(make_settings(braze_url=braze.url, **env)))  # real clocks and sleeps

    return build


def post(url, path=CAMPAIGN, body=BODY):
    started = time.monotonic()
    answer = requests.post(url + path, json=body, headers=AUTH, timeout=10)
    return answer, time.monotonic() - started


def test_a_429_soon_over_is_retried_within_the_budget_and_sent_once(serve, braze):
    stand_in = StandIn([429, 429, 201], reset_in=0.3)
    answer, took = post(serve(stand_in))
    assert answer.status_code == 201 and answer.json()["dispatch_id"] == "d-1"
    assert took < 1.5 + 0.4, "within the relay budget"
    assert len(braze.calls(CAMPAIGN)) == 3 and stand_in.accepted == 1


def test_a_429_resetting_after_the_budget_is_answered_at_once_as_braze_gave_it(serve, braze):
    stand_in = StandIn([429, 201], reset_in=2.0)
    answer, took = post(serve(stand_in))
    assert took < 1.0, "no waiting for a reset the caller will not wait for"
    assert answer.status_code == 429
    assert answer.json()["message"] == "API rate limit exceeded" and answer.json()["errors"] == []
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    reset = float(answer.headers["X-RateLimit-Reset"])
    assert 1.0 < reset - time.time() <= 2.0, "Braze's own reset, passed on"
    assert int(answer.headers["Retry-After"]) >= 2
    assert len(braze.calls(CAMPAIGN)) == 1 and stand_in.accepted == 0


def test_a_5xx_past_the_budget_is_braze_status_and_body(serve, braze):
    answer, took = post(serve(StandIn([502]), WALLET_PROXY_RELAY_BUDGET="0.3"))
    assert answer.status_code == 502 and took < 0.3 + 0.5
    assert answer.json()["message"] == "Internal Server Error" and "Retry-After" in answer.headers
    assert "X-RateLimit-Limit" in answer.headers  # FakeBraze sends them on every answer, as Braze does


def test_sessionms_door_keeps_its_longer_budget(serve, braze):
    stand_in = StandIn([429, 201], reset_in=1.6)
    url = serve(stand_in)
    answer, took = post(url, "/v1/braze/trigger", {"campaign_id": "camp-1", "external_user_id": "u1"})
    assert answer.status_code == 201 and took >= 1.5, "SessionM's door waited for Braze's reset"
    assert stand_in.accepted == 1


def test_our_own_client_rate_429_carries_braze_rate_limit_headers(serve):
    url = serve(StandIn([201]), WALLET_PROXY_CLIENT_RATE="0.5")
    assert post(url)[0].status_code == 201
    answer, _ = post(url)
    assert answer.status_code == 429 and answer.json()["message"]
    assert answer.headers["X-RateLimit-Remaining"] == "0" and int(answer.headers["X-RateLimit-Limit"]) >= 1
    reset = int(answer.headers["X-RateLimit-Reset"])  # UTC epoch seconds, what Braze clients read
    assert time.time() < reset <= time.time() + 3 and int(answer.headers["Retry-After"]) >= 1


class TestABrazeClientLibrary:
    """One client call: at most one accepted send, and an answer the library understands in time."""

    def client(self, url):
        return LibraryClient(api_key="secret", api_url=url)

    def test_429_429_201_is_one_send_and_success(self, serve):
        stand_in = StandIn([429, 429, 201], reset_in=0.3)
        answer = self.client(serve(stand_in)).campaign_trigger_send("camp-1", [{"external_user_id": "u1"}])
        assert answer["message"] == "success" and answer["success"] is True
        assert stand_in.accepted == 1, "the library did not time out and send again"

    def test_a_reset_2s_away_is_a_rate_limit_error_the_library_raises_and_nothing_is_sent(self, serve, braze):
        stand_in = StandIn([429, 201], reset_in=2.0)
        with pytest.raises(BrazeRateLimitError) as caught:
            self.client(serve(stand_in)).campaign_trigger_send("camp-1", [{"external_user_id": "u1"}])
        assert caught.value.reset_epoch_s > time.time()
        assert stand_in.accepted == 0 and len(braze.calls(CAMPAIGN)) == 1

    def test_braze_down_is_a_server_error_not_a_timeout(self, serve):
        stand_in = StandIn([500])
        with pytest.raises(BrazeInternalServerError):  # never requests' ReadTimeout
            self.client(serve(stand_in, WALLET_PROXY_RELAY_BUDGET="0.2")).campaign_trigger_send(
                "camp-1", [{"external_user_id": "u1"}])
        assert stand_in.accepted == 0
