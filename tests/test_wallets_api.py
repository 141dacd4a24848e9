"""GET/DELETE /v1/wallets/<user_id> against a fake SessionM on loopback."""
from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import OFFERS_PATH, fixture_json, make_settings
from tests.fakes import Reply
from wallet_proxy.web.auth import sign

AUTH = {"Authorization": "Basic " + base64.b64encode(b"test:secret").decode()}
VIEW_KEYS = ["ok", "stale", "user_id", "culture", "available_points", "total_points", "offer_count",
             "offers", "groups", "categories", "user", "fetched_at", "truncated"]
OFFER_KEYS = ["user_offer_id", "offer_id", "offer_type", "title", "description", "terms", "logo_url",
              "pos_discount_id", "group_id", "group_name", "category_names", "issued_at", "expires_at",
              "expires_in_days", "redeemable"]


def payload_with(*offers, **extra):
    base = fixture_json("get_user_offers.ok.json")
    if offers:
        base["payload"]["user_offers"] = list(offers)
    base["payload"].update(extra)
    return base


def offer(**fields):
    item = dict(fixture_json("get_user_offers.ok.json")["payload"]["user_offers"][0])
    item.update(fields)
    return item


class TestViewOverHttp:
    def test_fixture_becomes_the_spec_view(self, client, sessionm):
        response = client.get("/v1/wallets/00000000-0000-0000-0000-000000000000", headers=AUTH)
        assert response.status_code == 200
        body = response.get_json()
        assert list(body) == VIEW_KEYS
        assert body["ok"] is True and body["stale"] is False
        assert body["culture"] == "en-US"
        assert (body["available_points"], body["total_points"], body["offer_count"]) == (100, 1000, 1)
        first = body["offers"][0]
        assert list(first) == OFFER_KEYS
        assert first["title"] == "Free medium coffee"
        assert first["logo_url"] == "https://cdn.example.com/offers/coffee.png"
        assert first["group_name"] == "All Offers"
        assert first["category_names"] == ["All Offers"]
        assert first["issued_at"] == "2026-11-02T09:30:00Z"
        assert first["expires_at"] == "2026-12-31T23:59:59Z"
        # the test clock stands at 2026-11-28T10:00:00Z: 33 whole days and a bit are left
        assert first["expires_in_days"] == 33
        assert first["redeemable"] is True
        assert body["groups"] == [{"id": "00000000-0000-0000-0000-000000000000", "name": "All Offers",
                                   "offer_count": 1}]
        assert body["categories"][0]["offer_count"] == 1
        assert body["user"] == {"opted_in": False, "activated": False}
        assert body["fetched_at"] == "2026-11-28T10:00:00Z"

    def test_upstream_request_is_exactly_the_documented_call(self, client, sessionm):
        client.get("/v1/wallets/user-1?culture=fr", headers=AUTH)
        (call,) = sessionm.calls(OFFERS_PATH)
        assert call.method == "POST"
        assert call.headers["Content-Type"] == "application/json"
        assert call.headers["Authorization"] == "Basic Y29ubmVjdDpzZWNyZXQ="
        assert call.json == {"retailer_id": "retailer-1", "user_id": "user-1", "skip": 0, "take": 1000,
                             "include_pending_extended_data": False, "culture": "fr"}

    def test_auth_setting_with_the_word_basic_is_not_doubled(self, sessionm, app_for):
        settings = make_settings(sessionm.url, SESSIONM_CONNECT_AUTH="Basic abc=")
        app_for(settings).test_client().get("/v1/wallets/u", headers=AUTH)
        assert sessionm.calls(OFFERS_PATH)[0].headers["Authorization"] == "Basic abc="

    def test_missing_fields_are_null_and_media_gives_the_logo(self, client, sessionm):
        sparse = {"user_offer_id": "uo-1", "name": "Sparse", "media": [{"uri": "https://m/1.png"}],
                  "start_date": "2026-11-01T00:00:00Z", "category_ids": ["nope"], "surprise": {"x": 1}}
        sessionm.on("POST", OFFERS_PATH, Reply(200, {"status": "ok", "payload": {"user_offers": [sparse]}}))
        body = client.get("/v1/wallets/u", headers=AUTH).get_json()
        assert list(body) == VIEW_KEYS
        item = body["offers"][0]
        assert item["logo_url"] == "https://m/1.png"
        assert item["issued_at"] is None  # start_date is when the offer became available, not issued
        assert item["expires_at"] is None and item["expires_in_days"] is None
        assert item["group_name"] is None and item["category_names"] == []
        assert item["redeemable"] is True
        assert body["available_points"] is None and body["user"] == {"opted_in": None, "activated": None}

    def test_expired_and_redeemed_offers_are_never_served(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, payload_with(
            offer(user_offer_id="live", expiration_date="2026-12-01T00:00:00Z"),
            offer(user_offer_id="expired", expiration_date="2026-11-28T09:59:59Z"),
            offer(user_offer_id="redeemed", redeem_date="2026-11-20T00:00:00Z"),
            offer(user_offer_id="garbled-expiry", expiration_date="soon"),
        )))
        body = client.get("/v1/wallets/u", headers=AUTH).get_json()
        assert [o["user_offer_id"] for o in body["offers"]] == ["live"]
        assert body["offer_count"] == 1

    def test_offer_expiring_while_cached_disappears_at_serve_time(self, client, sessionm, clock):
        sessionm.on("POST", OFFERS_PATH, Reply(200, payload_with(
            offer(user_offer_id="soon", expiration_date="2026-11-28T10:00:30Z"),
            offer(user_offer_id="later", expiration_date="2026-12-28T10:00:00Z"))))
        first = client.get("/v1/wallets/u", headers=AUTH).get_json()
        assert [o["user_offer_id"] for o in first["offers"]] == ["soon", "later"]
        clock.tick(31)
        second = client.get("/v1/wallets/u", headers=AUTH)
        assert second.headers["Cache-Status"].startswith("wallet-proxy; hit")
        assert [o["user_offer_id"] for o in second.get_json()["offers"]] == ["later"]
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    def test_answer_is_a_json_object_and_never_a_redirect(self, client):
        response = client.get("/v1/wallets/u/", headers=AUTH)
        assert response.status_code == 400  # `/` is outside the id alphabet; no redirect either way
        assert response.is_json and response.get_json()["error"]["code"] == "invalid_request"


class TestFiltersAndSorting:
    @pytest.fixture(autouse=True)
    def wallet(self, sessionm):
        groups = [{"id": "g1", "name": "All Offers", "sort_order": 1}, {"id": "g2", "name": "Birthday",
                                                                          "sort_order": 0}]
        categories = [{"id": "c1", "name": "Food", "sort_order": 0}, {"id": "c2", "name": "Retail",
                                                                      "sort_order": 1}]
        sessionm.on("POST", OFFERS_PATH, Reply(200, payload_with(
            offer(user_offer_id="a", name="Zebra", offer_group_id="g1", categories=["c1"], offer_type="pos",
                  expiration_date="2026-12-20T00:00:00Z", acquire_date="2026-11-03T00:00:00Z"),
            offer(user_offer_id="b", name="apple", offer_group_id="g2", categories=["c2"], offer_type="manual",
                  expiration_date="2026-11-30T00:00:00Z", acquire_date="2026-11-01T00:00:00Z"),
            offer(user_offer_id="c", name="Mango", offer_group_id="g1", categories=["c1", "c2"],
                  offer_type="manual", expiration_date=None, acquire_date="2026-11-02T00:00:00Z"),
            offer_groups=groups, offer_categories=categories)))

    def ids(self, client, query):
        response = client.get(f"/v1/wallets/u?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_json()
        return [o["user_offer_id"] for o in response.get_json()["offers"]], response.get_json()

    def test_sessionm_order_is_kept_without_sort(self, client):
        assert self.ids(client, "")[0] == ["a", "b", "c"]

    @pytest.mark.parametrize("query, expected", [
        ("group=g2", ["b"]), ("group=all%20offers", ["a", "c"]), ("category=Retail", ["b", "c"]),
        ("category=c1", ["a", "c"]), ("type=manual", ["b", "c"]), ("expiring_within_days=2", ["b"]),
        ("expiring_within_days=30", ["a", "b"]), ("sort=title", ["b", "c", "a"]),
        ("sort=-title", ["a", "c", "b"]), ("sort=expires_at", ["b", "a", "c"]),
        ("sort=-expires_at", ["a", "b", "c"]), ("sort=issued_at", ["b", "c", "a"]), ("limit=2", ["a", "b"]),
        ("type=manual&sort=title&limit=1", ["b"]), ("group=nope", []),
    ])
    def test_filters(self, client, query, expected):
        assert self.ids(client, query)[0] == expected

    def test_counts_follow_the_filters_and_groups_keep_sort_order(self, client):
        _, body = self.ids(client, "type=manual")
        assert body["offer_count"] == 2
        assert body["groups"] == [{"id": "g2", "name": "Birthday", "offer_count": 1},
                                  {"id": "g1", "name": "All Offers", "offer_count": 1}]
        assert body["categories"] == [{"id": "c1", "name": "Food", "offer_count": 1},
                                      {"id": "c2", "name": "Retail", "offer_count": 2}]

    def test_one_cached_wallet_serves_every_filter_variant(self, client, sessionm):
        for query in ("", "sort=title", "type=manual", "limit=1", "group=g1"):
            self.ids(client, query)
        assert len(sessionm.calls(OFFERS_PATH)) == 1


class TestErrors:
    @pytest.mark.parametrize("reply, status, code", [
        (Reply(200, fixture_json("get_user_offers.user_not_found.json")), 404, "user_not_found"),
        (Reply(200, {"status": "error", "errors": {"code": "boom", "message": "x"}}), 502, "upstream_error"),
        (Reply(200, "<html>oops</html>"), 502, "upstream_error"),
        (Reply(200, b""), 502, "upstream_error"),
        (Reply(200, [1, 2]), 502, "upstream_error"),
        (Reply(200, {"status": "ok", "payload": "nope"}), 502, "upstream_error"),
        (Reply(200, {"status": "ok", "payload": {"user_offers": {"a": 1}}}), 502, "upstream_error"),
        (Reply(200, {"payload": {}}), 502, "upstream_error"),
        (Reply(401, {"error": "bad key"}), 502, "upstream_error"),
        (Reply(403, {"error": "bad key"}), 502, "upstream_error"),
        (Reply(400, {"status": "error", "errors": {"code": "invalid"}}), 502, "upstream_error"),
        (Reply(500, {"error": "x"}), 503, "upstream_unavailable"),
        (Reply(503, "down"), 503, "upstream_unavailable"),
        (Reply(429, {"error": "slow down"}, {"Retry-After": "7"}), 503, "upstream_unavailable"),
    ])
    def test_upstream_answers_map_to_spec_errors(self, client, sessionm, reply, status, code):
        sessionm.on("POST", OFFERS_PATH, reply)
        response = client.get("/v1/wallets/u", headers=AUTH)
        assert response.status_code == status
        body = response.get_json()
        assert body["ok"] is False and body["error"]["code"] == code and body["error"]["message"]
        if status == 503:
            assert int(response.headers["Retry-After"]) >= 1
        assert "Y29ubmVjdDpzZWNyZXQ=" not in response.get_data(as_text=True)

    def test_throttled_sessionm_retry_after_is_passed_on(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(429, {}, {"Retry-After": "7"}))
        assert client.get("/v1/wallets/u", headers=AUTH).headers["Retry-After"] == "7"

    def test_timeout_is_504(self, sessionm, app_for):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json"), delay=1.0))
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_UPSTREAM_TIMEOUT="0.2"))
        response = app.test_client().get("/v1/wallets/u", headers=AUTH)
        assert response.status_code == 504
        assert response.get_json()["error"]["code"] == "upstream_timeout"

    def test_refused_connection_is_503(self, app_for):
        from tests.conftest import free_port
        app = app_for(make_settings(f"http://127.0.0.1:{free_port()}"))
        response = app.test_client().get("/v1/wallets/u", headers=AUTH)
        assert response.status_code == 503 and response.headers["Retry-After"]

    @pytest.mark.parametrize("reply, code", [
        (Reply(200, fixture_json("get_user_offers.user_not_found.json")), "user_not_found"),
        (Reply(500, {}), "upstream_unavailable"),
        (Reply(200, "garbage"), "upstream_error"),
    ])
    def test_on_error_empty_answers_200_with_an_empty_wallet(self, client, sessionm, reply, code):
        sessionm.on("POST", OFFERS_PATH, reply)
        response = client.get("/v1/wallets/u?on_error=empty", headers=AUTH)
        assert response.status_code == 200
        body = response.get_json()
        assert body["ok"] is False and body["error"]["code"] == code
        assert body["offers"] == [] and body["offer_count"] == 0 and body["available_points"] == 0
        assert set(VIEW_KEYS) <= set(body)

    def test_on_error_empty_does_not_hide_bad_requests(self, client, sessionm):
        response = client.get("/v1/wallets/u?on_error=empty&limit=0", headers=AUTH)
        assert response.status_code == 400
        assert not sessionm.calls(OFFERS_PATH)

    def test_a_failed_fetch_is_not_cached(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, [Reply(500, {}), Reply(200, fixture_json("get_user_offers.ok.json"))])
        assert client.get("/v1/wallets/u", headers=AUTH).status_code == 503
        assert client.get("/v1/wallets/u", headers=AUTH).status_code == 200


class TestBadInput:
    @pytest.mark.parametrize("path", [
        "/v1/wallets/a/b", "/v1/wallets/a%2Fb", "/v1/wallets/a%00b", "/v1/wallets/a%0D%0AX-Evil:%201",
        "/v1/wallets/" + "x" * 129, "/v1/wallets/" + "x" * 300, "/v1/wallets/..", "/v1/wallets/.",
        "/v1/wallets/caf%C3%A9", "/v1/wallets/a%20b", "/v1/wallets/a%3Cscript%3E",
    ])
    def test_bad_user_ids_are_400_and_never_reach_sessionm(self, client, sessionm, path):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "invalid_request"
        assert "user_id" in response.get_json()["error"]["details"]
        assert not sessionm.calls(OFFERS_PATH)

    @pytest.mark.parametrize("user_id", ["x" * 128, "a.b", "u@example.com", "a+b:c_d-e", "123"])
    def test_good_user_ids_pass(self, client, sessionm, user_id):
        assert client.get(f"/v1/wallets/{user_id}", headers=AUTH).status_code == 200
        assert sessionm.calls(OFFERS_PATH)[-1].json["user_id"] == user_id

    @pytest.mark.parametrize("query, field", [
        ("culture=english!", "culture"), ("culture=fr-FR-x-y-z-zz", "culture"), ("limit=0", "limit"),
        ("limit=1001", "limit"), ("limit=ten", "limit"), ("sort=price", "sort"),
        ("expiring_within_days=-1", "expiring_within_days"), ("expiring_within_days=1.5", "expiring_within_days"),
        ("on_error=ignore", "on_error"), ("id_type=email", "id_type"),
    ])
    def test_bad_query_names_the_field(self, client, sessionm, query, field):
        response = client.get(f"/v1/wallets/u?{query}", headers=AUTH)
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert field in error["details"] and field in error["message"]
        assert not sessionm.calls(OFFERS_PATH)

    @pytest.mark.parametrize("culture, sent", [("", "en-US"), ("fr", "fr"), ("fr-fr", "fr-FR"),
                                               ("zh-hant-tw", "zh-Hant-TW"), ("es_MX", "es-MX")])
    def test_culture_is_normalised(self, client, sessionm, culture, sent):
        body = client.get(f"/v1/wallets/u?culture={culture}", headers=AUTH).get_json()
        assert body["culture"] == sent
        assert sessionm.calls(OFFERS_PATH)[-1].json["culture"] == sent

    def test_unknown_query_keys_are_ignored(self, client):
        assert client.get("/v1/wallets/u?cachebuster=123", headers=AUTH).status_code == 200


class TestAuth:
    @pytest.mark.parametrize("headers", [
        {}, {"Authorization": "Basic " + base64.b64encode(b"test:wrong").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"other:secret").decode()},
        {"Authorization": "Bearer nope"}, {"Authorization": "Basic !!!"}, {"Authorization": "Digest x"},
    ])
    def test_wrong_or_missing_credentials_are_401(self, client, sessionm, headers):
        response = client.get("/v1/wallets/u", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert not sessionm.calls(OFFERS_PATH)

    def test_bearer_secret_works(self, client):
        assert client.get("/v1/wallets/u", headers={"Authorization": "Bearer bz-secret"}).status_code == 200

    def test_scope_is_enforced(self, client, sessionm):
        response = client.get("/v1/wallets/u", headers={"Authorization": "Bearer tg-secret"})
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"
        assert not sessionm.calls(OFFERS_PATH)

    def test_two_clients_at_once_allow_rotation(self, sessionm, app_for):
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_CLIENTS="braze:old,braze:new"))
        client = app.test_client()
        for secret in ("old", "new"):
            auth = "Basic " + base64.b64encode(f"braze:{secret}".encode()).decode()
            assert client.get("/v1/wallets/u", headers={"Authorization": auth}).status_code == 200

    def test_no_clients_configured_is_401_with_the_reason(self, sessionm, app_for, caplog):
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_CLIENTS=""))
        response = app.test_client().get("/v1/wallets/u", headers=AUTH)
        assert response.status_code == 401
        assert "WALLET_PROXY_CLIENTS" in response.get_json()["error"]["message"]


class TestSignature:
    @pytest.fixture
    def signed(self, sessionm, app_for):
        return app_for(make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="sign-key")).test_client()

    def test_valid_sig_passes(self, signed):
        sig = sign("sign-key", "user-9")
        assert sig == __import__("hmac").new(b"sign-key", b"user-9", "sha256").hexdigest()
        assert signed.get(f"/v1/wallets/user-9?sig={sig}", headers=AUTH).status_code == 200

    @pytest.mark.parametrize("query", ["", "?sig=", "?sig=00", "?sig=" + sign("sign-key", "someone-else"),
                                       "?sig=" + sign("other-key", "user-9")])
    def test_missing_or_wrong_sig_is_403(self, signed, sessionm, query):
        response = signed.get(f"/v1/wallets/user-9{query}", headers=AUTH)
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "bad_signature"
        assert not sessionm.calls(OFFERS_PATH)


class TestCaching:
    def test_headers_on_miss_then_hit(self, client, clock):
        miss = client.get("/v1/wallets/u", headers=AUTH)
        assert miss.headers["Cache-Status"] == "wallet-proxy; fwd=uri-miss; stored"
        assert miss.headers["Cache-Control"] == "private, max-age=60"
        clock.tick(15)
        hit = client.get("/v1/wallets/u", headers=AUTH)
        assert hit.headers["Cache-Status"] == "wallet-proxy; hit; ttl=45"
        assert hit.headers["Cache-Control"] == "private, max-age=45"
        assert hit.headers["ETag"] == miss.headers["ETag"]

    def test_etag_gives_304(self, client):
        etag = client.get("/v1/wallets/u", headers=AUTH).headers["ETag"]
        response = client.get("/v1/wallets/u", headers={**AUTH, "If-None-Match": etag})
        assert response.status_code == 304 and response.get_data() == b""
        assert response.headers["ETag"] == etag
        other = client.get("/v1/wallets/u", headers={**AUTH, "If-None-Match": '"other"'})
        assert other.status_code == 200

    def test_cache_is_per_culture_and_expires_after_ttl(self, client, sessionm, clock):
        client.get("/v1/wallets/u", headers=AUTH)
        client.get("/v1/wallets/u?culture=fr", headers=AUTH)
        client.get("/v1/wallets/u?culture=fr", headers=AUTH)
        assert len(sessionm.calls(OFFERS_PATH)) == 2
        clock.tick(60 + 10 + 1)  # past TTL and the stale-while-revalidate window
        response = client.get("/v1/wallets/u", headers=AUTH)
        assert response.headers["Cache-Status"] == "wallet-proxy; fwd=uri-miss; stored"
        assert len(sessionm.calls(OFFERS_PATH)) == 3

    def test_delete_forgets_every_culture(self, client, sessionm):
        client.get("/v1/wallets/u", headers=AUTH)
        client.get("/v1/wallets/u?culture=fr", headers=AUTH)
        response = client.delete("/v1/wallets/u", headers=AUTH)
        assert response.status_code == 204
        client.get("/v1/wallets/u", headers=AUTH)
        client.get("/v1/wallets/u?culture=fr", headers=AUTH)
        assert len(sessionm.calls(OFFERS_PATH)) == 4

    def test_delete_needs_admin_scope(self, client):
        response = client.delete("/v1/wallets/u", headers={"Authorization": "Bearer bz-secret"})
        assert response.status_code == 403

    def test_request_id_is_echoed_or_made(self, client):
        assert client.get("/v1/wallets/u", headers={**AUTH, "X-Request-ID": "abc-123"}).headers[
            "X-Request-ID"] == "abc-123"
        made = client.get("/v1/wallets/u", headers={**AUTH, "X-Request-ID": "bad\x01id"}).headers["X-Request-ID"]
        assert made and made != "bad\x01id"


class TestExternalIds:
    def test_external_id_is_resolved_once_and_cached(self, client, sessionm):
        sessionm.on("GET", r"/external/users/", Reply(200, {"status": "ok", "user": {"id": "seed-42"}}))
        for _ in range(3):
            body = client.get("/v1/wallets/cust-7?id_type=external", headers=AUTH).get_json()
            assert body["user_id"] == "seed-42"
        (lookup,) = sessionm.calls(r"/external/users/")
        assert lookup.path == "/priv/v1/apps/core-key/external/users/cust-7"
        assert lookup.headers["Authorization"] == "Basic " + base64.b64encode(b"core-key:core-secret").decode()
        assert sessionm.calls(OFFERS_PATH)[0].json["user_id"] == "seed-42"

    def test_unknown_external_id_is_404(self, client, sessionm):
        sessionm.on("GET", r"/external/users/", Reply(404, {"status": "error",
                                                            "errors": {"code": "user_not_found"}}))
        assert client.get("/v1/wallets/cust-7?id_type=external", headers=AUTH).status_code == 404

    def test_external_without_core_is_503_not_configured(self, sessionm, app_for):
        app = app_for(make_settings(sessionm.url))
        response = app.test_client().get("/v1/wallets/c?id_type=external", headers=AUTH)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "not_configured"


def test_wallet_routes_answer_503_when_connect_is_not_configured(app_for, sessionm):
    app = app_for(make_settings(core_url=sessionm.url))
    response = app.test_client().get("/v1/wallets/u", headers=AUTH)
    assert response.status_code == 503
    assert response.get_json() == {"ok": False, "error": {
        "code": "not_configured", "message": "the connect settings are not configured on this deployment"}}


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"
    response = client.put("/v1/wallets/u", headers=AUTH)
    assert response.status_code == 405 and json.loads(response.get_data())["error"]["code"] == "method_not_allowed"


class TestRenderedBodies:
    def test_a_refetch_in_the_same_instant_is_not_served_from_an_old_body(self, client, sessionm):
        client.get("/v1/wallets/u", headers=AUTH)
        sessionm.on("POST", OFFERS_PATH, Reply(200, payload_with(available_points=7)))
        client.delete("/v1/wallets/u", headers=AUTH)  # same fake instant: only the stamp differs
        assert client.get("/v1/wallets/u", headers=AUTH).get_json()["available_points"] == 7

    def test_reused_body_still_ticks_expires_in_days(self, client, sessionm, clock):
        sessionm.on("POST", OFFERS_PATH, Reply(200, payload_with(offer(expiration_date="2026-11-30T10:00:30Z"))))
        first = client.get("/v1/wallets/u", headers=AUTH)
        assert first.get_json()["offers"][0]["expires_in_days"] == 2
        clock.tick(29)
        assert client.get("/v1/wallets/u", headers=AUTH).get_data() == first.get_data()
        clock.tick(2)  # 2 days left became 1 day 23:59:59
        assert client.get("/v1/wallets/u", headers=AUTH).get_json()["offers"][0]["expires_in_days"] == 1



class TestSigningKeyRotation:
    """#13 item 4 (SPEC: WALLET_PROXY_SIGNING_KEY): comma-separated keys, a sig made with any is valid."""

    @pytest.fixture
    def client(self, sessionm, app_for):
        return app_for(make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="new-key-2027, old-key-2026")
                       ).test_client()

    @pytest.mark.parametrize("key", ["new-key-2027", "old-key-2026"])
    def test_a_sig_made_with_any_key_is_valid(self, client, key):
        response = client.get(f"/v1/wallets/user-9?sig={sign(key, 'user-9')}", headers=AUTH)
        assert response.status_code == 200, response.get_json()

    @pytest.mark.parametrize("sig", ["", sign("new-key-2027, old-key-2026", "user-9"),
                                     sign("other", "user-9"), sign("new-key-2027", "user-8")])
    def test_anything_else_is_refused(self, client, sig):
        response = client.get(f"/v1/wallets/user-9?sig={sig}", headers=AUTH)
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "bad_signature"

    def test_the_preview_names_the_first_key_without_printing_any(self, client):
        from wallet_proxy.preview.routes import signing_key_id

        ops = {"Authorization": "Basic " + base64.b64encode(b"test:secret").decode()}
        html = client.get("/preview", headers=ops).get_data(as_text=True)
        assert signing_key_id("new-key-2027, old-key-2026") == signing_key_id("new-key-2027")
        assert signing_key_id("new-key-2027") in html and "1 older key(s) still accepted" in html
        assert "new-key-2027" not in html and "old-key-2026" not in html


def test_a_weak_etag_matches_if_none_match(client):
    """RFC 9110 §13.1.2: If-None-Match uses the weak comparison (W/"x" matches "x")."""
    etag = client.get("/v1/wallets/u", headers=AUTH).headers["ETag"]
    for header in (f"W/{etag}", f'"nope", W/{etag}'):
        response = client.get("/v1/wallets/u", headers={**AUTH, "If-None-Match": header})
        assert response.status_code == 304, header
