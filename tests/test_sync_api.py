"""POST /v1/users/<id>/sync: a wallet into Braze profile attributes, against a fake SessionM and the
Braze /users/track simulator (or a hostile stand-in) on loopback."""
from __future__ import annotations

import copy
import threading

import pytest

from tests.conftest import OFFERS_PATH, fixture_json, make_settings
from tests.fakes import LiveServer, Reply
from wallet_proxy.sandbox import SimState, make_sandbox_app
from wallet_proxy.sandbox.track import track_state

AUTH = {"Authorization": "Bearer secret", "Content-Type": "application/json"}
OFFER_ID = "1a2b3324-1da6-4e49-b921-afc386dabb60"
EXT_PATH = r"^/priv/v1/apps/core-key/external/users/.+$"


@pytest.fixture
def sim(clock):
    """The sandbox's Braze simulator, served on loopback, on the test clock."""
    state = SimState(clock=clock)
    server = LiveServer(make_sandbox_app(state))
    state.url = server.url
    yield state
    server.close()


@pytest.fixture
def make(sessionm, sim, app_for):
    def build(braze_url=None, **env):
        return app_for(make_settings(sessionm.url, core_url=sessionm.url, braze_url=braze_url or sim.url,
                                     **env)).test_client()
    return build


def wallet_with(points: int = 100, offers: int = 1) -> dict:
    body = fixture_json("get_user_offers.ok.json")
    first = body["payload"]["user_offers"][0]
    body["payload"]["user_offers"] = [dict(first, offer_id=f"offer-{i}", user_offer_id=f"uo-{i}")
                                      for i in range(offers)] if offers != 1 else [first]
    body["payload"]["available_points"] = points
    return body


def sync(client, user_id="user-1", query="", **kwargs):
    return client.post(f"/v1/users/{user_id}/sync{query}", headers=kwargs.pop("headers", AUTH), **kwargs)


class TestSync:
    def test_first_sync_writes_every_attribute_after_braze_accepted(self, make, sim, sessionm):
        response = sync(make())
        assert response.status_code == 200, response.json
        attributes = {"sessionm_available_points": 100, "sessionm_offer_count": 1,
                      "sessionm_next_expiry": "2026-12-31T23:59:59Z", "sessionm_offer_ids": [OFFER_ID]}
        assert response.json == {"ok": True, "user_id": "user-1", "attributes": attributes,
                                 "changed": sorted(attributes) + ["sessionm_synced_at"]}
        profile = track_state(sim).profiles["user-1"]
        assert profile == {**attributes, "sessionm_synced_at": "2026-11-28T10:00:00Z"}
        assert track_state(sim).data_points == 5

    def test_a_profile_braze_does_not_know_is_never_created(self, make, sim, sessionm):
        # Issue #21 item 3. https://www.braze.com/docs/api/objects_filters/user_attributes_object/: an
        # attributes object without "_update_existing_only": true creates the profile of an unknown
        # external_id; the simulator has no profile for ids starting with "no-profile-".
        response = sync(make(), user_id="no-profile-7")
        assert response.status_code == 200, response.json
        assert track_state(sim).calls == 1
        assert track_state(sim).created == [] and "no-profile-7" not in track_state(sim).profiles

    def test_a_repeat_without_change_sends_nothing_and_a_change_sends_only_it(self, make, sim, sessionm, clock):
        client = make()
        assert sync(client).status_code == 200
        again = sync(client)
        assert again.status_code == 200 and again.json["changed"] == []
        assert track_state(sim).calls == 1, "an unchanged profile costs no Braze call"
        sessionm.on("POST", OFFERS_PATH, Reply(200, wallet_with(points=250)))
        clock.tick(75)  # past the wallet cache TTL and its stale-while-revalidate window
        changed = sync(client)
        assert changed.json["changed"] == ["sessionm_available_points", "sessionm_synced_at"]
        assert track_state(sim).calls == 2 and track_state(sim).data_points == 5 + 2
        assert track_state(sim).profiles["user-1"]["sessionm_available_points"] == 250

    def test_expired_offers_are_not_counted_and_no_offers_means_a_null_expiry(self, make, sim, sessionm, clock):
        client = make()
        sync(client)
        clock.now = 1798761599 + 1  # just past the only offer's expiration_date (2026-12-31T23:59:59Z)
        response = sync(client)
        assert response.json["attributes"] == {"sessionm_available_points": 100, "sessionm_offer_count": 0,
                                               "sessionm_next_expiry": None, "sessionm_offer_ids": []}
        assert track_state(sim).profiles["user-1"]["sessionm_next_expiry"] is None

    def test_offer_ids_hold_at_most_25(self, make, sim, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, wallet_with(offers=30)))
        response = sync(make())
        assert response.json["attributes"]["sessionm_offer_count"] == 30
        assert len(track_state(sim).profiles["user-1"]["sessionm_offer_ids"]) == 25

    def test_external_id_resolves_the_wallet_but_writes_the_given_profile(self, make, sim, sessionm):
        sessionm.on("GET", EXT_PATH, Reply(200, {"status": "ok", "user": {"id": "seed-9"}}))
        response = sync(make(), user_id="cust-9", query="?id_type=external")
        assert response.status_code == 200 and response.json["user_id"] == "cust-9"
        assert sessionm.calls(OFFERS_PATH)[0].json["user_id"] == "seed-9"
        assert list(track_state(sim).profiles) == ["cust-9"]


class TestSharedWallet:
    def test_a_sync_after_a_wallet_read_costs_no_sessionm_call(self, make, sessionm):
        client = make()
        assert client.get("/v1/wallets/user-1", headers=AUTH).status_code == 200
        assert sync(client).status_code == 200
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    def test_a_sync_during_a_send_joins_the_wallet_read_in_flight(self, make, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json"), delay=0.4))
        client = make()
        answers = {}
        reader = threading.Thread(target=lambda: answers.update(
            read=client.get("/v1/wallets/user-1", headers=AUTH).status_code))
        reader.start()
        while not sessionm.calls(OFFERS_PATH):
            threading.Event().wait(0.01)
        answers["sync"] = sync(client).status_code
        reader.join(5)
        assert answers == {"read": 200, "sync": 200}
        assert len(sessionm.calls(OFFERS_PATH)) == 1, "single flight: one SessionM call for both"


class TestErrors:
    def test_braze_skipping_the_profile_is_422_and_nothing_is_remembered(self, make, braze):
        braze.on("POST", "/users/track$", Reply(201, {"message": "success", "errors": [
            {"type": "'external_id' or 'braze_id' or 'user_alias' is required", "input_array": "attributes",
             "index": 0}]}))
        client = make(braze.url)
        response = sync(client)
        assert response.status_code == 422 and response.json["error"]["code"] == "braze_rejected"
        braze.on("POST", "/users/track$", Reply(201, {"message": "success"}))
        assert sync(client).json["changed"][:1] == ["sessionm_available_points"], "resent in full"
        assert len(braze.calls("/users/track")) == 2

    def test_braze_throttling_is_429_with_retry_after(self, make, braze):
        import time
        braze.on("POST", "/users/track$", Reply(429, {"message": "rate limited"}, {
            "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 120)}))
        client = make(braze.url)
        response = sync(client)
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 100
        assert len(braze.calls("/users/track")) == 1

    def test_braze_down_is_503_and_a_refused_key_is_502(self, make, braze):
        braze.on("POST", "/users/track$", Reply(503, {"message": "down"}))
        client = make(braze.url)
        response = sync(client)
        assert response.status_code == 503 and response.headers["Retry-After"]
        braze.on("POST", "/users/track$", Reply(401, {"message": "Invalid API key"}))
        assert sync(client).status_code == 502

    def test_unknown_sessionm_user_is_404_and_braze_is_not_called(self, make, sessionm, sim):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
        assert sync(make()).status_code == 404
        assert track_state(sim).calls == 0

    @pytest.mark.parametrize("user_id, query, body, field", [
        ("bad%20id", "", None, "user_id"),
        ("user-1", "?id_type=email", None, "id_type"),
        ("user-1", "?culture=fr", None, "culture"),
        ("user-1", "", {"points": 5}, "_body"),
    ])
    def test_bad_requests_are_400_naming_the_field(self, make, sim, user_id, query, body, field):
        response = sync(make(), user_id=user_id, query=query, json=body)
        assert response.status_code == 400 and field in response.json["error"]["details"]
        assert track_state(sim).calls == 0

    def test_scope_sync_is_required(self, make):
        response = sync(make(), headers={"Authorization": "Bearer bz-secret"})
        assert response.status_code == 403

    def test_without_braze_settings_it_is_503_not_configured(self, sessionm, app_for):
        client = app_for(make_settings(sessionm.url)).test_client()
        response = sync(client)
        assert response.status_code == 503 and response.json["error"]["code"] == "not_configured"


def test_redis_shares_what_was_synced_between_processes(make, sim, redis_url):
    first, second = make(WALLET_PROXY_REDIS_URL=redis_url), make(WALLET_PROXY_REDIS_URL=redis_url)
    import redis
    redis.Redis.from_url(redis_url).delete("wp:v1:sync:shared-1")
    assert sync(first, user_id="shared-1").json["changed"] != []
    assert sync(second, user_id="shared-1").json["changed"] == []
    assert track_state(sim).calls == 1
