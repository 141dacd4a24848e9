"""The trigger doors behave as the real Braze does (issue #10 items 1, 3, 4, 5, 10, 12; #11.11; #16.8).

Against a fake Braze on loopback that answers as Braze documents: rate-limit headers on every answer,
`{"message", "errors"}` bodies, canvas notices, non-fatal errors in a 201.
"""
from __future__ import annotations

import hashlib
import json
import logging

import pytest

from tests.fakes import Reply
from tests.test_trigger_api import (  # noqa: F401  (fixtures)
    AUTH, CAMPAIGN, CANVAS, braze, client, dispatch_per_call, make_app, post, sleeps,
)

NOTICE = "The Canvas is paused. Resume the Canvas to ensure trigger requests will take effect."
ONE = {"external_user_id": "u1"}


def logged(caplog, name="wallet_proxy"):
    return [r for r in caplog.records if r.name.startswith(name)]


class TestCanvasNotice:
    """https://braze.com/docs/api/errors + SPEC: a 201 with a `notice` (canvas paused/archived) sent
    nothing."""

    def test_the_flat_door_answers_422_braze_not_sent_and_a_repeat_sends_again(self, client, braze):
        braze.on("POST", CANVAS, Reply(201, {"dispatch_id": "d-p", "message": "success", "notice": NOTICE}))
        body = {"canvas_id": "cv", "external_user_id": "u1"}
        first = post(client, body, key="paused-1")
        assert first.status_code == 422, first.json
        assert first.json["error"]["code"] == "braze_not_sent"
        assert NOTICE in first.json["error"]["message"]
        assert first.json["error"]["details"]["dispatch_ids"] == []  # not recorded as sent
        braze.on("POST", CANVAS, dispatch_per_call)  # the marketer resumed the canvas
        second = post(client, body, key="paused-1")
        assert second.status_code == 201 and second.json["dispatch_ids"] == ["d-u1"]
        assert len(braze.calls(CANVAS)) == 2

    def test_the_relay_answers_brazes_own_body_and_logs_a_warning(self, client, braze, caplog):
        answer = {"dispatch_id": "d-p", "message": "success", "notice": NOTICE}
        braze.on("POST", CANVAS, Reply(201, answer))
        with caplog.at_level(logging.WARNING):
            response = post(client, {"canvas_id": "cv", "recipients": [ONE]}, path=CANVAS)
        assert response.status_code == 201
        assert response.json == answer  # unchanged, as Braze gave it
        assert any(r.levelno == logging.WARNING and NOTICE in r.getMessage() for r in logged(caplog))


class TestNonFatalErrors:
    ERRORS = ["Some recipients could not be found"]

    def test_the_flat_door_returns_and_logs_them(self, client, braze, caplog):
        braze.on("POST", CAMPAIGN, Reply(201, {"dispatch_id": "d-e", "message": "success",
                                               "errors": self.ERRORS}))
        with caplog.at_level(logging.WARNING):
            response = post(client, {"campaign_id": "c", "external_user_id": "u1"})
        assert response.status_code == 201
        assert response.json["errors"] == self.ERRORS and response.json["dispatch_ids"] == ["d-e"]
        assert any(self.ERRORS[0] in r.getMessage() for r in logged(caplog) if r.levelno == logging.WARNING)

    def test_the_relay_passes_them_through(self, client, braze):
        answer = {"dispatch_id": "d-e", "message": "success", "errors": self.ERRORS}
        braze.on("POST", CAMPAIGN, Reply(201, answer))
        response = post(client, {"campaign_id": "c", "recipients": [ONE]}, path=CAMPAIGN)
        assert response.status_code == 201 and response.json == answer


class TestBrazeStatuses:
    def test_a_braze_404_is_a_502_never_the_callers_4xx(self, client, braze, caplog):
        braze.on("POST", CAMPAIGN, Reply(404, {"message": "Not Found", "errors": []}))
        response = post(client, {"campaign_id": "c", "external_user_id": "u1"})
        assert response.status_code == 502 and response.json["error"]["code"] == "upstream_error"
        assert any(r.levelno == logging.ERROR and "BRAZE_REST_URL" in r.getMessage() for r in logged(caplog))

    def test_a_5xx_with_the_hourly_reset_far_ahead_is_retried_not_a_40_minute_503(self, client, braze,
                                                                                  sleeps):
        far = {"X-RateLimit-Remaining": "1000", "X-RateLimit-Reset": "9999999999"}
        braze.on("POST", CAMPAIGN, [Reply(500, {"message": "oops", "errors": []}, headers=far),
                                    Reply(201, {"dispatch_id": "d-r", "message": "success"}, headers=far)])
        response = post(client, {"campaign_id": "c", "external_user_id": "u1"})
        assert response.status_code == 201 and response.json["dispatch_ids"] == ["d-r"]
        assert sleeps and max(sleeps) < 1.0


class TestRecipientsAsBrazeChecksThem:
    """https://braze.com/docs/api/objects_filters/recipient_object"""

    @pytest.mark.parametrize("recipient", [
        {"braze_id": "5b2c0e2f4d"},
        {"email": "ana@example.com", "prioritization": ["identified", "most_recently_updated"]},
        {"user_alias": {"alias_name": "a-1", "alias_label": "loyalty"}},
        {"external_user_id": "u1", "send_to_existing_only": False, "attributes": {"first_name": "Ana"}},
    ])
    def test_valid_recipients_are_forwarded_as_given(self, client, braze, recipient):
        body = {"campaign_id": "c", "recipients": [recipient]}
        braze.on("POST", CAMPAIGN, Reply(201, {"dispatch_id": "d-v", "message": "success"}))
        response = post(client, body, path=CAMPAIGN)
        assert response.status_code == 201, response.json
        assert braze.calls(CAMPAIGN)[0].json == body

    @pytest.mark.parametrize("recipient, field", [
        ({"external_user_id": "u1", "braze_id": "b1"}, "braze_id"),
        ({"external_user_id": "u1", "email": "a@b.c", "prioritization": ["identified"]}, "email"),
        ({"trigger_properties": {"a": 1}}, "external_user_id"),
        ({"email": "a@b.c"}, "prioritization"),
        ({"email": "a@b.c", "prioritization": []}, "prioritization"),
        ({"external_user_id": "u1", "send_to_existing_only": False}, "send_to_existing_only"),
        ({"user_alias": {"alias_name": "a", "alias_label": "l"}, "send_to_existing_only": False,
          "attributes": {"x": 1}}, "send_to_existing_only"),
        ({"user_alias": {"alias_name": "a"}}, "user_alias"),
        ({"external_user_id": "u1", "trigger_properties": {"blob": "x" * (50 * 1024)}}, "trigger_properties"),
    ])
    def test_invalid_recipients_are_400_naming_the_field(self, client, braze, recipient, field):
        response = post(client, {"campaign_id": "c", "recipients": [recipient]}, path=CAMPAIGN)
        assert response.status_code == 400, response.json
        assert f"recipients.0.{field}" in response.json["error"]["message"]
        assert braze.requests == []

    def test_top_level_properties_over_50_kb_are_400(self, client, braze):
        big = {"blob": "é" * (26 * 1024)}  # 52 KB of UTF-8
        relay = post(client, {"campaign_id": "c", "trigger_properties": big, "recipients": [ONE]},
                     path=CAMPAIGN)
        assert relay.status_code == 400 and "trigger_properties" in relay.json["error"]["message"]
        flat = post(client, {"campaign_id": "c", "external_user_id": "u1", **big})
        assert flat.status_code == 400 and "50 KB" in flat.json["error"]["message"]
        assert braze.requests == []


class TestDuplicates:
    """Braze de-duplicates only within one call; ours are split into chunks of 50."""

    def test_a_recipient_listed_twice_across_chunks_is_sent_once(self, client, braze):
        recipients = [{"external_user_id": f"u{i}", "Offer": f"first {i}"} for i in range(60)]
        recipients.insert(55, {"external_user_id": "u3", "Offer": "second"})
        recipients.append({"external_user_id": "u59", "Offer": "again"})
        response = post(client, {"campaign_id": "c", "recipients": recipients})
        assert response.status_code == 201, response.json
        assert response.json["duplicates_dropped"] == 2
        sent = [r for c in braze.calls(CAMPAIGN) for r in c.json["recipients"]]
        assert sorted(r["external_user_id"] for r in sent) == sorted(f"u{i}" for i in range(60))
        # Braze: "uses the trigger properties from the last occurrence"
        # (https://www.braze.com/docs/api/objects_filters/recipient_object) -- #21 item 4
        offers = {r["external_user_id"]: r["trigger_properties"]["offer"] for r in sent}
        assert offers["u3"] == "second" and offers["u59"] == "again" and offers["u4"] == "first 4"

    def test_the_relay_drops_them_too_and_says_so(self, client, braze):
        recipients = [{"external_user_id": f"u{i}"} for i in range(50)] + [
            {"external_user_id": "u7"}, {"email": "A@Example.com", "prioritization": ["identified"]},
            {"email": "a@example.com", "prioritization": ["identified"]}]
        response = post(client, {"campaign_id": "c", "recipients": recipients}, path=CAMPAIGN)
        assert response.status_code == 201, response.json
        assert response.json["duplicates_dropped"] == 2
        assert [len(c.json["recipients"]) for c in braze.calls(CAMPAIGN)] == [50, 1]


class TestCanvasProperties:
    @pytest.mark.parametrize("name", ["context", "canvas_entry_properties"])
    def test_the_relay_takes_context_or_the_former_name(self, client, braze, name):
        body = {"canvas_id": "cv", name: {"k": "v"}, "recipients": [{**ONE, name: {"i": 1}}]}
        assert post(client, body, path=CANVAS).status_code == 201
        assert braze.calls(CANVAS)[0].json == body

    @pytest.mark.parametrize("path, body, field", [
        (CANVAS, {"canvas_id": "cv", "context": {}, "canvas_entry_properties": {}, "broadcast": True},
         "canvas_entry_properties"),
        (CAMPAIGN, {"campaign_id": "c", "context": {"a": 1}, "broadcast": True}, "context"),
        (CANVAS, {"canvas_id": "cv", "recipients": [{**ONE, "trigger_properties": {}}]},
         "recipients.0.trigger_properties"),
    ])
    def test_the_wrong_or_two_property_fields_are_400(self, client, braze, path, body, field):
        response = post(client, body, path=path)
        assert response.status_code == 400 and field in response.json["error"]["message"], response.json
        assert braze.requests == []


class TestBrazeShapedErrors:
    """Errors on the relay carry Braze's top-level `message` and `errors`
    (https://braze.com/docs/api/errors)."""

    def test_validation_error(self, client, braze):
        response = post(client, {"broadcast": True}, path=CAMPAIGN)
        assert response.status_code == 400
        assert response.json["message"] == response.json["error"]["message"]
        assert any("campaign_id" in line for line in response.json["errors"])
        assert response.json["ok"] is False and response.json["error"]["code"] == "invalid_request"

    def test_auth_error(self, client, braze):
        response = post(client, {"campaign_id": "c", "broadcast": True}, path=CANVAS, auth={})
        assert response.status_code == 401 and response.json["message"] and response.json["errors"]

    def test_brazes_own_4xx_relays_brazes_message_and_errors(self, client, braze):
        braze.on("POST", CAMPAIGN, Reply(400, {"message": "Invalid campaign_id", "errors": ["campaign c"]}))
        response = post(client, {"campaign_id": "c", "recipients": [ONE]}, path=CAMPAIGN)
        assert response.status_code == 400
        assert response.json["message"] == "Invalid campaign_id" and response.json["errors"] == ["campaign c"]

    def test_503(self, client, braze):
        braze.on("POST", CAMPAIGN, Reply(503, {"message": "maintenance", "errors": []}))
        response = post(client, {"campaign_id": "c", "recipients": [ONE]}, path=CAMPAIGN)
        assert response.status_code == 503 and "maintenance" in response.json["message"]
        assert isinstance(response.json["errors"], list) and response.headers["Retry-After"]

    def test_a_form_body_is_a_braze_shaped_415(self, client, braze):
        response = client.post(CAMPAIGN, data="campaign_id=c", headers={**AUTH,
                               "Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 415 and response.json["message"] and response.json["errors"]
        assert braze.requests == []

    def test_the_flat_door_keeps_its_own_shape(self, client, braze):
        response = post(client, {"external_user_id": "u"})
        assert response.status_code == 400 and "message" not in response.json


class TestSameKeyOtherBody:
    def test_a_relay_key_reused_with_a_different_body_is_409(self, client, braze):
        # issue #16 item 8: the digest covers the body, not just the key
        first = {"campaign_id": "c", "recipients": [ONE]}
        assert post(client, first, key="relay-k", path=CAMPAIGN).status_code == 201
        other = {"campaign_id": "c", "recipients": [{"external_user_id": "u2"}]}
        response = post(client, other, key="relay-k", path=CAMPAIGN)
        assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
        assert response.json["message"] and response.json["errors"]
        props = {"campaign_id": "c", "recipients": [ONE], "trigger_properties": {"x": 1}}
        assert post(client, props, key="relay-k", path=CAMPAIGN).status_code == 409
        assert len(braze.calls(CAMPAIGN)) == 1


class TestNothingOfOursLeaks:
    def test_a_legacy_api_key_field_is_never_forwarded(self, client, braze, caplog):
        body = {"api_key": "caller-secret-123", "campaign_id": "c", "recipients": [ONE]}
        assert post(client, body, path=CAMPAIGN).status_code == 201
        assert "api_key" not in braze.calls(CAMPAIGN)[0].json
        flat = {"api_key": "caller-secret-123", "campaign_id": "c", "external_user_id": "u1"}
        assert post(client, flat).status_code == 201
        assert "api_key" not in braze.calls(CAMPAIGN)[1].json["trigger_properties"]
        assert all(b"caller-secret-123" not in c.body for c in braze.calls(CAMPAIGN))
        assert all("caller-secret-123" not in r.getMessage() for r in caplog.records)

    def test_each_trigger_line_carries_the_key_hash_and_dispatch_ids(self, client, braze, caplog):
        with caplog.at_level(logging.INFO, logger="wallet_proxy"):
            recipients = [{"external_user_id": f"u{i}"} for i in range(70)]
            post(client, {"campaign_id": "c", "recipients": recipients}, key="msg-77")
        (line,) = [r for r in caplog.records if r.name == "wallet_proxy.sends"]
        assert line.idempotency_key == hashlib.sha256(b"test:msg-77").hexdigest()[:16]
        assert line.dispatch_ids == "d-u0,d-u50"
        assert all("msg-77" not in r.getMessage() and "msg-77" not in json.dumps(vars(r), default=str)
                   for r in caplog.records)


class TestDryRun:
    BODY = {"braze_canvas_id": "cv", "Campaign Name": "Spring",
            "recipients": [{"external_user_id": f"u{i}", "Offer": i} for i in range(55)]}

    def test_a_dry_run_answers_the_exact_bodies_without_sending(self, client, braze):
        response = post(client, {**self.BODY, "dry_run": True}, key="dry-1")
        assert response.status_code == 200, response.json
        assert braze.requests == []
        calls = response.json["calls"]
        assert response.json["path"] == CANVAS and [c["recipients"] for c in calls] == [50, 5]
        assert calls[0]["body"]["context"] == {"campaign_name": "Spring"}
        assert "dry_run" not in json.dumps(calls)
        real = post(client, self.BODY, key="dry-1")  # nothing was recorded under the key
        assert real.status_code == 201 and "Idempotent-Replayed" not in real.headers
        assert [c.json for c in braze.calls(CANVAS)] == [c["body"] for c in calls]

    def test_the_query_flag_on_the_relay(self, client, braze):
        body = {"campaign_id": "c", "recipients": [ONE], "api_key": "x"}
        response = client.post(CAMPAIGN + "?dry_run=1", json=body, headers=AUTH)
        assert response.status_code == 200 and braze.requests == []
        assert response.json["calls"][0]["body"] == {"campaign_id": "c", "recipients": [ONE]}

    def test_a_dry_run_still_validates(self, client, braze):
        assert post(client, {"campaign_id": "c", "dry_run": True}).status_code == 400
        wrong = {"campaign_id": "c", "external_user_id": "u", "dry_run": "yes"}
        assert post(client, wrong).status_code == 400
        assert braze.requests == []


class TestBlankKeys:
    """Issue #11 item 11: a blank key must not silently turn off at-most-once."""

    @pytest.mark.parametrize("headers, body_key", [
        ({"Idempotency-Key": ""}, {}), ({"Idempotency-Key": "   "}, {}), ({"Idempotency-Key": "\t"}, {}),
        ({}, {"message_id": ""}), ({}, {"message_id": "  "}), ({}, {"message_id": None}),
    ])
    def test_blank_or_null_keys_are_400(self, client, braze, headers, body_key):
        body = {"campaign_id": "c", "external_user_id": "u", **body_key}
        response = client.post("/v1/braze/trigger", json=body, headers={**AUTH, **headers})
        assert response.status_code == 400, response.json
        assert ("message_id" if body_key else "idempotency_key") in response.json["error"]["message"]
        assert braze.requests == []

    def test_a_blank_header_on_the_relay_too(self, client, braze):
        response = client.post(CAMPAIGN, json={"campaign_id": "c", "recipients": [ONE]},
                               headers={**AUTH, "Idempotency-Key": " "})
        assert response.status_code == 400 and response.json["message"]
        assert braze.requests == []


class TestBrazeSimulator:
    """The sandbox's Braze answers as the documented Braze does, so sandbox demos and tests can trust it."""

    @pytest.fixture
    def sim_client(self):
        from wallet_proxy.sandbox import SimState, make_sandbox_app

        sim = SimState()
        return sim, make_sandbox_app(sim).test_client()

    @pytest.mark.parametrize("path, body, status", [
        (CAMPAIGN, {"campaign_id": "c", "recipients": [ONE]}, 201),
        (CAMPAIGN, {"campaign_id": "c", "recipients": [{"braze_id": "b1"}]}, 201),
        (CAMPAIGN, {"campaign_id": "c", "recipients": [{"email": "a@b.c"}]}, 400),
        (CAMPAIGN, {"campaign_id": "c", "recipients": [{"external_user_id": "u", "braze_id": "b"}]}, 400),
        (CAMPAIGN, {"campaign_id": "c",
                    "recipients": [{"external_user_id": "u", "send_to_existing_only": False}]}, 400),
        (CAMPAIGN, {"campaign_id": "c", "trigger_properties": {"x": "y" * 52000}, "broadcast": True}, 400),
        (CAMPAIGN, {"campaign_id": "c"}, 400),
        (CAMPAIGN, {"campaign_id": "c", "recipients": [{"external_user_id": "fault-500"}]}, 500),
        (CAMPAIGN, {"campaign_id": "c", "recipients": [{"external_user_id": "fault-429"}]}, 429),
    ])
    def test_headers_and_bodies_on_every_answer(self, sim_client, path, body, status):
        sim, client = sim_client
        response = client.post(path, json=body, headers={"Authorization": "Bearer k"})
        assert response.status_code == status, response.json
        names = set(response.headers.keys())
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= names
        if status >= 400:
            assert set(response.json) == {"message", "errors"}
        else:
            assert response.json["message"] == "success" and response.json["dispatch_id"]
        if status == 429:
            assert response.headers["X-RateLimit-Remaining"] == "0"

    def test_a_paused_canvas_answers_a_notice_and_sends_nothing(self, sim_client):
        sim, client = sim_client
        response = client.post(CANVAS, json={"canvas_id": "paused-spring", "recipients": [ONE]},
                               headers={"Authorization": "Bearer k"})
        assert response.status_code == 201 and "paused" in response.json["notice"]
        assert sim.calls.get("braze_sent") is None and sim.calls["braze_not_sent"] == 1

    def test_the_service_on_the_simulator_end_to_end(self):
        from wallet_proxy import create_app
        from wallet_proxy.settings import parse

        app = create_app(parse({}))
        sim = app.extensions["wallet_proxy"].sandbox
        client = app.test_client()
        demo = {"Authorization": "Bearer demo"}
        paused = client.post("/v1/braze/trigger", json={"canvas_id": "paused-x", "external_user_id": "u"},
                             headers=demo)
        assert paused.status_code == 422 and paused.json["error"]["code"] == "braze_not_sent"
        relayed = client.post(CAMPAIGN, json={"campaign_id": "c", "api_key": "leak", "recipients": [ONE]},
                              headers=demo)
        assert relayed.status_code == 201 and relayed.json["message"] == "success"
        assert "braze_api_key_in_body" not in sim.calls
        limited = client.post("/v1/braze/trigger", headers=demo,
                              json={"campaign_id": "c", "external_user_id": "fault-429-x"})
        assert limited.status_code == 503 and int(limited.headers["Retry-After"]) <= 5
