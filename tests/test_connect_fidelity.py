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
        ("REQUIRES_REGISTERED_USER", 404, "user_not_found"),
        ("requires_registered_user", 404, "user_not_found"),
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


def many_offers(count: int, **fields) -> list:
    template = fixture_json("get_user_offers.ok.json")["payload"]["user_offers"][0]
    return [dict(template, user_offer_id=f"uo-{n}", offer_id=f"o-{n}", **fields) for n in range(count)]


def paged(offers: list, delays: dict | None = None, total=len):
    """A SessionM stand-in that pages `offers` by the request's skip/take, as get_user_offers does;
    `total(offers)` is the `total_records` it says."""
    def answer(request):
        body = request.json
        skip, take = body["skip"], body["take"]
        payload = dict(fixture_json("get_user_offers.ok.json")["payload"])
        payload.update(user_offers=offers[skip:skip + take], total_records=total(offers))
        return Reply(200, {"status": "OK", "payload": payload}, delay=(delays or {}).get(skip, 0.0))
    return answer


class TestPaging:
    def test_pages_beyond_take_are_fetched(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, paged(many_offers(1200)))
        body = client.get("/v1/wallets/u", headers=AUTH).get_json()
        assert body["offer_count"] == 1200 and body["truncated"] is False
        ids = [o["user_offer_id"] for o in body["offers"]]
        assert ids[998:1002] == ["uo-998", "uo-999", "uo-1000", "uo-1001"]
        calls = sessionm.calls(OFFERS_PATH)
        assert [(c.json["skip"], c.json["take"]) for c in calls] == [(0, 1000), (1000, 1000)]

    def test_small_pages_skip_by_take(self, app, sessionm):
        app.extensions["wallet_proxy"].connect.take = 2
        sessionm.on("POST", OFFERS_PATH, paged(many_offers(5)))
        body = app.test_client().get("/v1/wallets/u", headers=AUTH).get_json()
        assert [o["user_offer_id"] for o in body["offers"]] == [f"uo-{n}" for n in range(5)]
        assert [c.json["skip"] for c in sessionm.calls(OFFERS_PATH)] == [0, 2, 4]

    def test_a_count_given_as_a_string_is_read_like_every_number(self, app, sessionm):
        # The one payload reader reads "5" as 5 wherever SessionM sends a number (points, sort
        # orders); the page count was read apart and took "5" for "no more pages": a silently
        # partial wallet, not even marked truncated.
        app.extensions["wallet_proxy"].connect.take = 2
        sessionm.on("POST", OFFERS_PATH, paged(many_offers(5), total=lambda offers: str(len(offers))))
        body = app.test_client().get("/v1/wallets/u", headers=AUTH).get_json()
        assert [o["user_offer_id"] for o in body["offers"]] == [f"uo-{n}" for n in range(5)]
        assert body["truncated"] is False and [c.json["skip"] for c in sessionm.calls(OFFERS_PATH)] == [0, 2, 4]

    @pytest.mark.parametrize("total", [None, "many", True, -3, 2.5, "NaN"])
    def test_a_count_that_is_no_count_fetches_no_more_pages(self, app, sessionm, total):
        app.extensions["wallet_proxy"].connect.take = 2
        sessionm.on("POST", OFFERS_PATH, paged(many_offers(5), total=lambda offers: total))
        body = app.test_client().get("/v1/wallets/u", headers=AUTH).get_json()
        assert [o["user_offer_id"] for o in body["offers"]] == ["uo-0", "uo-1"] and body["truncated"] is False
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    def test_a_page_too_slow_for_the_deadline_fails_the_wallet(self, sessionm, app_for):
        import time

        app = app_for(make_settings(sessionm.url, WALLET_PROXY_UPSTREAM_TIMEOUT="0.6"))
        app.extensions["wallet_proxy"].connect.take = 2
        sessionm.on("POST", OFFERS_PATH, paged(many_offers(5), delays={2: 0.3, 4: 2.0}))
        started = time.monotonic()
        response = app.test_client().get("/v1/wallets/u", headers=AUTH)
        assert response.status_code == 504 and time.monotonic() - started < 1.5
        again = app.test_client().get("/v1/wallets/u", headers=AUTH)
        assert again.status_code in (504, 503)  # nothing partial was cached

    def test_sandbox_pages_by_skip_and_take(self, live):
        import requests

        url = live(make_sandbox_app(SimState()))
        whole = requests.post(url + OFFERS_PATH, json={"retailer_id": "r", "user_id": "u1"},
                              headers={"Authorization": "Basic eDp5"}, timeout=5).json()["payload"]
        page = requests.post(url + OFFERS_PATH,
                             json={"retailer_id": "r", "user_id": "u1", "skip": 1, "take": 2},
                             headers={"Authorization": "Basic eDp5"}, timeout=5).json()["payload"]
        assert page["user_offers"] == whole["user_offers"][1:3]
        assert page["total_records"] == whole["total_records"] == len(whole["user_offers"])


class TestOfferFields:
    @pytest.mark.parametrize("media, logo", [
        ([{"uri": "https://m/v.mp4", "content_type": 2}, {"uri": "https://m/i.png", "content_type": 1}],
         "https://m/i.png"),
        ([{"uri": "https://m/v.mp4", "content_type": 2}, {"uri": "https://m/link", "content_type": 5}], None),
        ([{"uri": "https://m/a.mp3", "content_type": "4"}, {"uri": "https://m/plain.png"}],
         "https://m/plain.png"),
        ([{"uri": "https://m/i.png", "content_type": "1", "category_name": "logo"}], "https://m/i.png"),
    ])
    def test_logo_url_comes_only_from_an_image(self, client, sessionm, media, logo):
        item = many_offers(1, media=media)[0]
        del item["logo_uri"]
        body = fixture_json("get_user_offers.ok.json")
        body["payload"]["user_offers"] = [item]
        sessionm.on("POST", OFFERS_PATH, Reply(200, body))
        assert client.get("/v1/wallets/u", headers=AUTH).get_json()["offers"][0]["logo_url"] == logo

    def test_logo_uri_comes_first(self, client, sessionm):
        body = fixture_json("get_user_offers.ok.json")
        body["payload"]["user_offers"][0]["media"] = [{"uri": "https://m/i.png", "content_type": 1}]
        sessionm.on("POST", OFFERS_PATH, Reply(200, body))
        offer = client.get("/v1/wallets/u", headers=AUTH).get_json()["offers"][0]
        assert offer["logo_url"] == "https://cdn.example.com/offers/coffee.png"

    def test_issued_at_is_acquire_date_only(self, client, sessionm):
        item = many_offers(1)[0]
        del item["acquire_date"]  # start_date is when the offer became available, not when it was issued
        body = fixture_json("get_user_offers.ok.json")
        body["payload"]["user_offers"] = [item]
        sessionm.on("POST", OFFERS_PATH, Reply(200, body))
        assert client.get("/v1/wallets/u", headers=AUTH).get_json()["offers"][0]["issued_at"] is None

    def test_sandbox_uses_documented_offer_types(self):
        from datetime import datetime, timezone

        from wallet_proxy.sandbox.connect import CATALOG, make_wallet

        documented = {"manual_fulfillment", "fixed_amount_discount", "percent_discount"}
        assert {row[3] for row in CATALOG} <= documented
        wallet = make_wallet("u-media", "en-US", datetime(2026, 11, 28, tzinfo=timezone.utc))
        kinds = {m["content_type"] for o in wallet["user_offers"] for m in o.get("media", [])}
        assert kinds and kinds <= {1, 2, 4, 5}


class TestBrazeSizeLimit:
    """Braze cannot use an answer over 1 MB (Connected Content): the last offers are left out."""

    def test_body_stays_under_1_mb_and_says_truncated(self, sessionm, app_for):
        # a 1.3 MB SessionM answer: time enough for it on a loaded machine (this test is about size)
        client = app_for(make_settings(sessionm.url, WALLET_PROXY_UPSTREAM_TIMEOUT="8",
                                       WALLET_PROXY_DEADLINE="10")).test_client()
        offers = many_offers(2500, description="x" * 400)
        body = fixture_json("get_user_offers.ok.json")
        body["payload"].update(user_offers=offers, total_records=len(offers))
        sessionm.on("POST", OFFERS_PATH, Reply(200, body))
        response = client.get("/v1/wallets/u", headers=AUTH)
        assert response.status_code == 200 and len(response.get_data()) <= 1_000_000
        answer = response.get_json()
        assert answer["truncated"] is True and 1000 < answer["offer_count"] < 2500
        assert answer["offer_count"] == len(answer["offers"])
        kept = [o["user_offer_id"] for o in answer["offers"]]
        assert kept == [f"uo-{n}" for n in range(answer["offer_count"])]  # the last ones left out
        assert len(response.get_data()) > 990_000  # only what does not fit is left out

    def test_a_small_wallet_is_not_truncated(self, client):
        assert client.get("/v1/wallets/u", headers=AUTH).get_json()["truncated"] is False


def test_total_points_is_described_as_sessionm_documents_it(client):
    """SessionM's SDK (https://docs.sessionm.com/mmc-sdk/) documents total_points as points spent."""
    from tests.conftest import ROOT

    spec = client.get("/openapi.json").get_json()
    described = spec["components"]["schemas"]["WalletView"]["properties"]["total_points"]["description"]
    assert "spent" in described and "not a balance" in described
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `total_points`"))
    assert "spent" in row and "not a balance" in row


class TestAnswersThatAreNotJson:
    """An error page from a proxy in front of SessionM is a retryable 503, never a 500."""

    @pytest.mark.parametrize("content_type", ["text/html; charset=made-up", "text/html; charset=latin-1",
                                              "application/json"])
    def test_a_gateway_page_is_a_503_whatever_its_charset(self, client, sessionm, content_type):
        sessionm.on("POST", OFFERS_PATH, Reply(502, b"<html>Bad gateway \xe9</html>",
                                               {"Content-Type": content_type}))
        response = client.get("/v1/wallets/user-1", headers=AUTH)
        # SessionM's 5xx is "unavailable, retry" (as before), whatever charset the page claims
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert response.json["error"]["code"] == "upstream_unavailable"

    def test_the_snippet_of_an_unknown_charset_is_read_as_utf8(self, sessionm):
        import requests

        from wallet_proxy.upstream import transport

        sessionm.on("POST", "/page", Reply(502, "Bad gateway é".encode(),
                                           {"Content-Type": "text/html; charset=made-up"}))
        reply = transport.call(requests.Session(), "POST", sessionm.url + "/page", timeout=5, name="SessionM")
        assert reply.status == 502 and reply.data is None
        assert reply.text == "Bad gateway é"
