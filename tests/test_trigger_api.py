"""POST /v1/braze/trigger and the Braze-compatible relay, against a fake Braze over HTTP."""
from __future__ import annotations

import threading

import pytest
import requests

from tests.conftest import make_settings
from tests.fakes import FakeBraze, Reply
from wallet_proxy import create_app
from wallet_proxy.sandbox import SimState, make_sandbox_app
from wallet_proxy.settings import parse

CAMPAIGN = "/campaigns/trigger/send"
CANVAS = "/canvas/trigger/send"
AUTH = {"Authorization": "Bearer secret"}


def dispatch_per_call(record):
    """Answer each call with a dispatch id naming its first recipient (or the broadcast)."""
    body = record.json
    first = (body.get("recipients") or [{"external_user_id": "all"}])[0].get("external_user_id")
    return Reply(201, {"dispatch_id": f"d-{first}", "message": "success"})


@pytest.fixture
def braze():
    fake = FakeBraze()
    fake.on("POST", CAMPAIGN, dispatch_per_call).on("POST", CANVAS, dispatch_per_call)
    yield fake
    fake.close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_app(braze, app_for, sleeps):
    def build(**env):
        options = {"sleep": sleeps.append, "backoff_base": 0.01, "max_attempts": 3, "timeout": 0.3,
                   "rng": lambda: 0.5}
        return app_for(make_settings(braze_url=braze.url, **env), braze_options=options)

    return build


@pytest.fixture
def client(make_app):
    return make_app().test_client()


def post(client, body, key=None, path="/v1/braze/trigger", auth=AUTH):
    headers = dict(auth)
    if key:
        headers["Idempotency-Key"] = key
    return client.post(path, json=body, headers=headers)


class TestSends:
    def test_a_campaign_becomes_trigger_properties_in_snake_case(self, client, braze):
        body = {"campaign_id": "camp-1", "broadcast": False, "external_user_id": "cust-9",
                "email": "a@example.com", "Offer Title": "Free coffee", "pointAwardAmount": 50,
                "offer_id": "o-1", "POS Discount ID": "POS-1", "event data": {"store": 12}}
        response = post(client, body)
        assert response.status_code == 201, response.json
        assert response.json["ok"] is True and response.json["dispatch_ids"] == ["d-cust-9"]
        assert response.json["chunks"] == [{"index": 0, "recipients": 1, "dispatch_id": "d-cust-9"}]
        (call,) = braze.calls(CAMPAIGN)
        assert call.headers["Authorization"] == "Bearer braze-rest-key"
        assert call.json == {
            "campaign_id": "camp-1",
            "trigger_properties": {"external_user_id": "cust-9", "email": "a@example.com",
                                   "offer_title": "Free coffee", "point_award_amount": 50,
                                   "offer_id": "o-1", "pos_discount_id": "POS-1", "event_data": {"store": 12}},
            "recipients": [{"external_user_id": "cust-9"}],
        }

    def test_a_canvas_reads_its_properties_from_context(self, client, braze):
        # Braze's current name is `context` ({{context.${name}}}); canvas_entry_properties is the former one
        # https://www.braze.com/docs/user_guide/messaging/design_and_edit/personalize/sources/
        # canvas_entry_properties
        response = post(client, {"braze_canvas_id": "cv-1", "external_user_id": "c1", "Offer Title": "X",
                                 "campaign_id": "sessionm-campaign-7"})
        assert response.status_code == 201
        (call,) = braze.calls(CANVAS)
        assert call.json["canvas_id"] == "cv-1"
        # with SessionM's braze_* names, a plain campaign_id is SessionM's campaign data: a property
        assert call.json["context"] == {"external_user_id": "c1", "offer_title": "X",
                                        "campaign_id": "sessionm-campaign-7"}
        assert "canvas_entry_properties" not in call.json
        assert braze.calls(CAMPAIGN) == []

    def test_a_broadcast_has_no_recipients(self, client, braze):
        response = post(client, {"braze_campaign_id": "camp-2", "broadcast": True, "Offer Title": "All"})
        assert response.status_code == 201
        (call,) = braze.calls(CAMPAIGN)
        assert call.json == {"campaign_id": "camp-2", "broadcast": True,
                             "trigger_properties": {"offer_title": "All"}}

    def test_120_recipients_go_in_chunks_of_50_each_with_its_own_properties(self, client, braze):
        recipients = [{"external_user_id": f"u{i}", "Offer Title": f"offer {i}", "pointAwardAmount": i}
                      for i in range(120)]
        response = post(client, {"campaign_id": "camp-3", "recipients": recipients, "Campaign Name": "Big"})
        assert response.status_code == 201, response.json
        calls = braze.calls(CAMPAIGN)
        assert [len(c.json["recipients"]) for c in calls] == [50, 50, 20]
        sent = [r for c in calls for r in c.json["recipients"]]
        assert [r["external_user_id"] for r in sent] == [f"u{i}" for i in range(120)]
        for i in (0, 57, 119):
            assert sent[i]["trigger_properties"] == {"external_user_id": f"u{i}", "offer_title": f"offer {i}",
                                                     "point_award_amount": i}
        assert all(c.json["trigger_properties"] == {"campaign_name": "Big"} for c in calls)
        assert response.json["dispatch_ids"] == ["d-u0", "d-u50", "d-u100"]
        assert [c["recipients"] for c in response.json["chunks"]] == [50, 50, 20]

    def test_without_a_key_each_post_is_a_send(self, client, braze):
        for _ in range(2):
            assert post(client, {"campaign_id": "c", "external_user_id": "u"}).status_code == 201
        assert len(braze.calls(CAMPAIGN)) == 2


class TestValidation:
    @pytest.mark.parametrize("body, field", [
        ({"external_user_id": "u"}, "campaign_id"),
        ({"campaign_id": "a", "canvas_id": "b", "external_user_id": "u"}, "campaign_id and canvas_id"),
        ({"braze_campaign_id": "a", "braze_canvas_id": "b", "external_user_id": "u"}, "braze_campaign_id"),
        ({"campaign_id": "a", "broadcast": "true"}, "broadcast"),
        ({"campaign_id": "a", "broadcast": 1}, "broadcast"),
        ({"campaign_id": "a", "broadcast": True, "recipients": [{"external_user_id": "u"}]}, "recipients"),
        ({"campaign_id": "a", "broadcast": True, "external_user_id": "u"}, "external_user_id"),
        ({"campaign_id": "a"}, "external_user_id"),
        ({"campaign_id": "a", "external_user_id": ""}, "external_user_id"),
        ({"campaign_id": "", "external_user_id": "u"}, "campaign_id"),
        ({"campaign_id": "a", "recipients": []}, "recipients"),
        ({"campaign_id": "a", "recipients": [{"external_user_id": "u"}] * 2501}, "recipients"),
        ({"campaign_id": "a", "recipients": [{"external_user_id": "u"}, {"email": "x@y"}]},
         "recipients.1.external_user_id"),
        ({"campaign_id": "a", "recipients": ["u1"]}, "recipients"),
        ({"campaign_id": "a", "external_user_id": "u", "Offer Title": 1, "offer_title": 2}, "Offer Title"),
        ({"campaign_id": "a", "external_user_id": "u", "!!": 1}, "!!"),
    ])
    def test_a_bad_body_is_400_naming_the_field_and_braze_is_not_called(self, client, braze, body, field):
        response = post(client, body)
        assert response.status_code == 400, response.json
        assert response.json["error"]["code"] == "invalid_request"
        assert field in response.json["error"]["message"]
        assert braze.requests == []

    def test_a_body_that_is_not_an_object_is_400(self, client, braze):
        response = client.post("/v1/braze/trigger", data="[1]", headers={**AUTH,
                                                                         "Content-Type": "application/json"})
        assert response.status_code == 400 and "body" in response.json["error"]["message"]

    def test_a_bad_idempotency_key_is_400(self, client, braze):
        response = post(client, {"campaign_id": "a", "external_user_id": "u"}, key="has space")
        assert response.status_code == 400 and "idempotency_key" in response.json["error"]["message"]
        assert braze.requests == []

    def test_scope_and_configuration_are_checked(self, client, braze, app_for):
        wallet_only = {"Authorization": "Bearer bz-secret"}
        assert post(client, {"campaign_id": "a", "external_user_id": "u"}, auth=wallet_only).status_code == 403
        assert post(client, {"campaign_id": "a", "external_user_id": "u"}, auth={}).status_code == 401
        unconfigured = app_for(make_settings(connect_url="http://127.0.0.1:9")).test_client()
        response = post(unconfigured, {"campaign_id": "a", "external_user_id": "u"})
        assert response.status_code == 503 and response.json["error"]["code"] == "not_configured"


class TestBrazeFailures:
    def test_retries_then_success(self, client, braze, sleeps):
        braze.on("POST", CAMPAIGN, [Reply(500, {"message": "boom"}),
                                    Reply(429, {"message": "limit"}, headers={"Retry-After": "1"}),
                                    Reply(201, {"dispatch_id": "d-ok"})])
        response = post(client, {"campaign_id": "c", "external_user_id": "u"})
        assert response.status_code == 201 and response.json["dispatch_ids"] == ["d-ok"]
        assert len(braze.calls(CAMPAIGN)) == 3
        assert sleeps[1] >= 1.0  # Retry-After honoured

    def test_retries_then_503_with_retry_after(self, client, braze):
        braze.on("POST", CAMPAIGN, Reply(503, {"message": "maintenance"}))
        response = post(client, {"campaign_id": "c", "external_user_id": "u"})
        assert response.status_code == 503
        assert response.json["error"]["code"] == "upstream_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        assert len(braze.calls(CAMPAIGN)) == 3  # max_attempts

    def test_a_timeout_after_sending_is_504_outcome_unknown_and_not_retried(self, client, braze):
        braze.on("POST", CAMPAIGN, Reply(201, {"dispatch_id": "late"}, delay=0.8))
        response = post(client, {"campaign_id": "c", "external_user_id": "u"}, key="t-1")
        assert response.status_code == 504 and response.json["error"]["code"] == "outcome_unknown"
        assert len(braze.calls(CAMPAIGN)) == 1
        again = post(client, {"campaign_id": "c", "external_user_id": "u"}, key="t-1")
        assert again.status_code == 504 and again.json["error"]["code"] == "outcome_unknown"
        assert len(braze.calls(CAMPAIGN)) == 1  # a repeat never resends what may have been sent

    def test_a_braze_4xx_is_passed_back_with_its_message(self, client, braze):
        braze.on("POST", CAMPAIGN, Reply(400, {"message": "campaign_id is not an API-triggered campaign"}))
        response = post(client, {"campaign_id": "c", "external_user_id": "u"})
        assert response.status_code == 400
        assert response.json["error"]["message"] == "campaign_id is not an API-triggered campaign"
        assert response.json["error"]["code"] == "braze_rejected"
        assert len(braze.calls(CAMPAIGN)) == 1

    def test_a_failed_chunk_is_repaired_by_a_repeat_that_resends_only_it(self, client, braze):
        healthy = {"on": False}

        def answer(record):
            if record.json["recipients"][0]["external_user_id"] == "u50" and not healthy["on"]:
                return Reply(503, {"message": "busy"})
            return dispatch_per_call(record)

        braze.on("POST", CAMPAIGN, answer)
        body = {"campaign_id": "c", "recipients": [{"external_user_id": f"u{i}"} for i in range(120)]}
        first = post(client, body, key="batch-1")
        assert first.status_code == 503
        chunks = first.json["error"]["details"]["chunks"]
        assert chunks[0] == {"index": 0, "recipients": 50, "dispatch_id": "d-u0"}
        assert chunks[1]["error"]["code"] == "upstream_unavailable"
        assert chunks[2]["error"]["code"] == "not_attempted"  # Braze was down: not hammered further
        assert first.json["error"]["details"]["dispatch_ids"] == ["d-u0"]
        healthy["on"] = True
        before = len(braze.calls(CAMPAIGN))
        second = post(client, body, key="batch-1")
        assert second.status_code == 201, second.json
        assert second.json["dispatch_ids"] == ["d-u0", "d-u50", "d-u100"]
        resent = braze.calls(CAMPAIGN)[before:]
        assert [c.json["recipients"][0]["external_user_id"] for c in resent] == ["u50", "u100"]
        third = post(client, body, key="batch-1")
        assert third.status_code == 201 and third.headers["Idempotent-Replayed"] == "true"
        assert len(braze.calls(CAMPAIGN)) == before + 2

    def test_a_rejected_chunk_does_not_stop_the_others(self, client, braze):
        def answer(record):
            if record.json["recipients"][0]["external_user_id"] == "u50":
                return Reply(400, {"message": "bad recipient"})
            return dispatch_per_call(record)

        braze.on("POST", CAMPAIGN, answer)
        body = {"campaign_id": "c", "recipients": [{"external_user_id": f"u{i}"} for i in range(120)]}
        response = post(client, body, key="batch-2")
        assert response.status_code == 400
        assert response.json["error"]["details"]["dispatch_ids"] == ["d-u0", "d-u100"]
        assert response.json["error"]["details"]["chunks"][1]["error"]["message"] == "bad recipient"


class TestIdempotentRepeats:
    def test_three_posts_one_call(self, client, braze):
        body = {"campaign_id": "c", "external_user_id": "u", "Offer Title": "T"}
        answers = [post(client, body, key="k-3") for _ in range(3)]
        assert [a.status_code for a in answers] == [201, 201, 201]
        assert len({tuple(a.json["dispatch_ids"]) for a in answers}) == 1
        assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true"]
        assert len(braze.calls(CAMPAIGN)) == 1

    def test_message_id_is_the_key_when_no_header(self, client, braze):
        body = {"campaign_id": "c", "external_user_id": "u", "message_id": "m-1"}
        assert post(client, body).status_code == 201
        assert post(client, body).headers["Idempotent-Replayed"] == "true"
        assert len(braze.calls(CAMPAIGN)) == 1
        assert braze.calls(CAMPAIGN)[0].json["trigger_properties"]["message_id"] == "m-1"

    def test_same_key_different_body_is_409(self, client, braze):
        assert post(client, {"campaign_id": "c", "external_user_id": "u"}, key="k-9").status_code == 201
        response = post(client, {"campaign_id": "c", "external_user_id": "other"}, key="k-9")
        assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
        assert len(braze.calls(CAMPAIGN)) == 1

    def test_keys_of_different_clients_do_not_collide(self, braze, make_app):
        app = make_app(WALLET_PROXY_CLIENTS="a:sa:trigger,b:sb:trigger")
        client = app.test_client()
        body = {"campaign_id": "c", "external_user_id": "u"}
        assert post(client, body, key="same", auth={"Authorization": "Bearer sa"}).status_code == 201
        second = post(client, body, key="same", auth={"Authorization": "Bearer sb"})
        assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers
        assert len(braze.calls(CAMPAIGN)) == 2

    def test_concurrent_repeats_wait_for_the_first(self, braze, make_app, live):
        braze.on("POST", CAMPAIGN, lambda r: Reply(201, {"dispatch_id": "d-once"}, delay=0.25))
        url = live(make_app())
        body = {"campaign_id": "c", "external_user_id": "u"}
        results = []

        def send():
            results.append(requests.post(url + "/v1/braze/trigger", json=body, timeout=5,
                                         headers={**AUTH, "Idempotency-Key": "race"}))

        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.status_code for r in results] == [201] * 6
        assert {r.json()["dispatch_id"] for r in results} == {"d-once"}
        assert len(braze.calls(CAMPAIGN)) == 1


class TestBrazeCompatibleRelay:
    def test_a_native_campaign_body_is_forwarded_with_the_real_key(self, client, braze):
        body = {"campaign_id": "camp-n", "send_id": "s-1", "trigger_properties": {"offer_title": "A"},
                "recipients": [{"external_user_id": "u1", "trigger_properties": {"n": 1}}]}
        response = post(client, body, path=CAMPAIGN)
        assert response.status_code == 201
        assert response.json["dispatch_id"] == "d-u1" and response.json["message"] == "success"
        (call,) = braze.calls(CAMPAIGN)
        assert call.json == body
        assert call.headers["Authorization"] == "Bearer braze-rest-key"

    def test_a_native_canvas_body_is_chunked_by_50(self, client, braze):
        body = {"canvas_id": "cv-n", "canvas_entry_properties": {"k": "v"},
                "recipients": [{"external_user_id": f"u{i}", "canvas_entry_properties": {"i": i}}
                               for i in range(75)]}
        response = post(client, body, path=CANVAS, key="native-1")
        assert response.status_code == 201
        calls = braze.calls(CANVAS)
        assert [len(c.json["recipients"]) for c in calls] == [50, 25]
        assert calls[1].json["recipients"][0] == {"external_user_id": "u50", "canvas_entry_properties": {"i": 50}}
        assert all(c.json["canvas_entry_properties"] == {"k": "v"} for c in calls)
        assert post(client, body, path=CANVAS, key="native-1").headers["Idempotent-Replayed"] == "true"
        assert len(braze.calls(CANVAS)) == 2

    def test_a_native_broadcast(self, client, braze):
        assert post(client, {"campaign_id": "c", "broadcast": True}, path=CAMPAIGN).status_code == 201
        assert braze.calls(CAMPAIGN)[0].json == {"campaign_id": "c", "broadcast": True}

    @pytest.mark.parametrize("path, body, field", [
        (CAMPAIGN, {"campaign_id": "c", "canvas_id": "v", "broadcast": True}, "canvas_id"),
        (CAMPAIGN, {"broadcast": True}, "campaign_id"),
        (CANVAS, {"campaign_id": "c", "broadcast": True}, "canvas_id"),
        (CAMPAIGN, {"campaign_id": "c", "broadcast": "true"}, "broadcast"),
        (CAMPAIGN, {"campaign_id": "c", "broadcast": True, "recipients": [{"external_user_id": "u"}]},
         "recipients"),
        (CAMPAIGN, {"campaign_id": "c"}, "recipients"),
        (CAMPAIGN, {"campaign_id": "c", "recipients": [{"trigger_properties": {}}]}, "recipients.0"),
        (CANVAS, {"canvas_id": "v", "broadcast": True, "trigger_properties": {}}, "trigger_properties"),
    ])
    def test_native_bodies_get_the_same_checks(self, client, braze, path, body, field):
        response = post(client, body, path=path)
        assert response.status_code == 400 and field in response.json["error"]["message"]
        assert braze.requests == []


class TestSandbox:
    def test_sandbox_mode_sends_to_the_braze_simulator(self):
        app = create_app(parse({}))
        response = app.test_client().post("/v1/braze/trigger", headers={"Authorization": "Bearer demo"},
                                          json={"campaign_id": "c", "recipients": [
                                              {"external_user_id": f"u{i}"} for i in range(60)]})
        assert response.status_code == 201 and len(response.json["dispatch_ids"]) == 2
        assert app.extensions["wallet_proxy"].sandbox.calls["braze_sent"] == 2

    @pytest.mark.parametrize("body, status", [
        ({"campaign_id": "c", "recipients": [{"external_user_id": "u"}] * 51}, 400),
        ({"campaign_id": "c", "canvas_id": "v", "broadcast": True}, 400),
        ({"broadcast": True}, 400),
        ({"campaign_id": "c", "broadcast": True, "recipients": [{"external_user_id": "u"}]}, 400),
        ({"campaign_id": "c", "broadcast": True}, 201),
    ])
    def test_the_simulator_validates_like_braze(self, body, status):
        sim = SimState()
        response = make_sandbox_app(sim).test_client().post(
            CAMPAIGN, json=body, headers={"Authorization": "Bearer k"})
        assert response.status_code == status
        assert ("dispatch_id" in response.json) == (status == 201)
        assert sim.calls["braze_campaign"] == 1
