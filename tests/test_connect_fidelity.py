"""The wallet flow against SessionM Connect as SessionM documents it, not as our simulators used to be.

Pages the behaviour rests on:
- status and error codes: https://docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm
  (HTTP 200 with `"status": "error"` and a code; codes listed upper case, the example lower case);
- get_user_offers: https://docs.sessionm.com/developer/Tasks/Offers/t_look_up_offer.htm
"""
from __future__ import annotations

import base64
import logging

import pytest

from tests.conftest import OFFERS_PATH, fixture_json, make_settings
from tests.fakes import Reply
from wallet_proxy.sandbox import SimState, make_sandbox_app

AUTH = {"Authorization": "Basic " + base64.b64encode(b"test:secret").decode()}


def ok_body(status: str = "OK") -> dict:
    body = fixture_json("get_user_offers.ok.json")
    body["status"] = status
    return body


def error_body(code: str, status: str = "error") -> dict:
    return {"status": status, "errors": {"code": code, "message": "as SessionM says"}}


class TestStatusAndCodes:
    @pytest.mark.parametrize("status", ["OK", "ok", "Ok"])
    def test_success_status_in_any_case(self, client, sessionm, status):
        sessionm.on("POST", OFFERS_PATH, Reply(200, ok_body(status)))
        response = client.get("/v1/wallets/u", headers=AUTH)
        assert response.status_code == 200 and response.get_json()["offer_count"] == 1

    @pytest.mark.parametrize("code, status, answer", [
        ("USER_NOT_FOUND", 404, "user_not_found"), ("user_not_found", 404, "user_not_found"),
        ("REQUIRES_REGISTERED_USER", 404, "user_not_found"), ("requires_registered_user", 404, "user_not_found"),
        ("VALIDATION", 422, "upstream_refused"), ("validation", 422, "upstream_refused"),
        ("MISSING_DATA", 422, "upstream_refused"), ("argument_error", 422, "upstream_refused"),
        ("INVALID_API_KEY", 502, "upstream_error"), ("invalid_auth_token", 502, "upstream_error"),
        ("ACCESS_DENIED", 502, "upstream_error"),
        ("INTERNAL_SERVER_ERROR", 502, "upstream_error"), ("NOT_AVAILABLE", 502, "upstream_error"),
    ])
    def test_codes_inside_http_200(self, client, sessionm, code, status, answer):
        for envelope in ("error", "ERROR"):
            sessionm.on("POST", OFFERS_PATH, Reply(200, error_body(code, envelope)))
            response = client.get("/v1/wallets/u", headers=AUTH)
            assert response.status_code == status, (code, envelope)
            assert response.get_json()["error"]["code"] == answer

    def test_refused_request_is_not_retryable_and_not_a_breaker_failure(self, sessionm, app_for):
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_BREAKER_FAILURES="2"))
        client = app.test_client()
        sessionm.on("POST", OFFERS_PATH, Reply(200, error_body("VALIDATION")))
        for _ in range(4):
            response = client.get("/v1/wallets/u", headers=AUTH)
            assert response.status_code == 422 and "Retry-After" not in response.headers
        sessionm.on("POST", OFFERS_PATH, Reply(200, ok_body()))
        assert client.get("/v1/wallets/u", headers=AUTH).status_code == 200  # breaker still closed

    def test_refused_request_falls_back_with_on_error_empty(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, error_body("MISSING_DATA")))
        response = client.get("/v1/wallets/u?on_error=empty", headers=AUTH)
        assert response.status_code == 200
        body = response.get_json()
        assert body["ok"] is False and body["error"]["code"] == "upstream_refused" and body["offers"] == []

    def test_credential_codes_are_logged_loudly(self, client, sessionm, caplog):
        sessionm.on("POST", OFFERS_PATH, Reply(200, error_body("access_denied")))
        with caplog.at_level(logging.ERROR):
            assert client.get("/v1/wallets/u", headers=AUTH).status_code == 502
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "credentials" in r.getMessage()]
        assert loud and "ACCESS_DENIED" in loud[0].getMessage()

    def test_requires_registered_user_fixture(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH,
                    Reply(200, fixture_json("get_user_offers.requires_registered_user.json")))
        assert client.get("/v1/wallets/u", headers=AUTH).status_code == 404


class TestSandboxSpeaksSessionM:
    def test_success_is_spelled_as_the_api_docs_spell_it(self, live):
        import requests

        url = live(make_sandbox_app(SimState()))
        reply = requests.post(url + OFFERS_PATH, json={"retailer_id": "r", "user_id": "u1"},
                              headers={"Authorization": "Basic eDp5"}, timeout=5)
        assert reply.status_code == 200 and reply.json()["status"] == "OK"
        unknown = requests.post(url + OFFERS_PATH, json={"retailer_id": "r", "user_id": "unknown-7"},
                                headers={"Authorization": "Basic eDp5"}, timeout=5)
        assert unknown.status_code == 200 and unknown.json() == {
            "status": "error", "errors": {"code": "USER_NOT_FOUND", "message": "User not found"}}
        invalid = requests.post(url + OFFERS_PATH, json={"retailer_id": "r", "user_id": "fault-invalid-1"},
                                headers={"Authorization": "Basic eDp5"}, timeout=5)
        assert invalid.status_code == 200 and invalid.json()["errors"]["code"] == "validation"

    @pytest.mark.parametrize("user_id, status, code", [
        ("unknown-1", 404, "user_not_found"), ("fault-invalid-1", 422, "upstream_refused"),
    ])
    def test_sandbox_codes_through_the_service(self, app_for, user_id, status, code):
        from wallet_proxy.settings import parse

        client = app_for(parse({})).test_client()
        demo = {"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()}
        response = client.get(f"/v1/wallets/{user_id}", headers=demo)
        assert response.status_code == status and response.get_json()["error"]["code"] == code
