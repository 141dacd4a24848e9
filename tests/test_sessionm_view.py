"""`view=sessionm`: SessionM's own get_user_offers shape, so the seed's templates work by changing a URL."""
from __future__ import annotations

import base64
import threading
from datetime import datetime, timezone

import pytest

from tests.conftest import NOW, OFFERS_PATH, ROOT, fixture_json, make_settings
from tests.fakes import Reply
from tests.test_brazejs import (EXAMPLE_HOST, SESSIONM_EXAMPLE_HOST, liquid_blocks, render_full, squash,
                                stand_in)  # noqa: F401 (fixture)
from wallet_proxy.sandbox.connect import make_wallet
from wallet_proxy.wallet import view
from wallet_proxy.web.auth import sign

AUTH = {"Authorization": "Basic " + base64.b64encode(b"test:secret").decode()}
PAYLOAD_KEYS = ["user", "user_id", "user_offers", "total_records", "offer_groups", "offer_categories",
                "total_points", "available_points"]  # SPEC: the keys SessionM sends


def offer(**fields):
    item = dict(fixture_json("get_user_offers.ok.json")["payload"]["user_offers"][0])
    item.update(fields)
    return item


def sessionm_body(*offers, **payload):
    body = fixture_json("get_user_offers.ok.json")
    body["payload"]["user_offers"] = list(offers)
    body["payload"].update(payload)
    return body


class TestShape:
    def test_sessionm_shape_without_expired_or_redeemed_offers(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, sessionm_body(
            offer(user_offer_id="live", media=[{"uri": "https://m/i.png", "content_type": 1}],
                  root_offer_id="root-1", end_date="2027-01-01T00:00:00Z"),
            offer(user_offer_id="expired", expiration_date="2026-11-28T09:59:59Z"),
            offer(user_offer_id="redeemed", redeem_date="2026-11-20T00:00:00Z"),
            user={"opted_in": True, "activated": True, "email": "ada@example.com", "first_name": "Ada"},
            total_records=3)))
        response = client.get("/v1/wallets/u1?view=sessionm", headers=AUTH)
        assert response.status_code == 200
        body = response.get_json()
        assert list(body) == ["status", "payload"] and body["status"] == "ok"
        payload = body["payload"]
        assert list(payload) == PAYLOAD_KEYS
        assert payload["user"] == {"opted_in": True, "activated": True}  # no personal data
        assert [o["user_offer_id"] for o in payload["user_offers"]] == ["live"]
        assert payload["total_records"] == 1
        item = payload["user_offers"][0]
        sent = fixture_json("get_user_offers.ok.json")["payload"]["user_offers"][0]
        for key in ("user_offer_id", "offer_group_id", "offer_type", "name", "description", "terms",
                    "logo_uri", "pos_discount_id", "start_date", "acquire_date", "expiration_date",
                    "is_redeemable", "categories"):
            assert item[key] == (sent[key] if key != "user_offer_id" else "live"), key
        assert item["root_offer_id"] == "root-1" and item["end_date"] == "2027-01-01T00:00:00Z"
        assert item["media"] == [{"uri": "https://m/i.png", "content_type": 1}]
        assert item["redeem_date"] is None
        assert payload["offer_groups"] == [{"id": "00000000-0000-0000-0000-000000000000",
                                            "name": "All Offers", "sort_order": 0}]
        assert payload["available_points"] == 100 and payload["total_points"] == 1000

    def test_filters_apply_to_user_offers(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, sessionm_body(
            offer(user_offer_id="a", offer_type="percent_discount"), offer(user_offer_id="b"))))
        payload = client.get("/v1/wallets/u1?view=sessionm&type=percent_discount",
                             headers=AUTH).get_json()["payload"]
        assert [o["user_offer_id"] for o in payload["user_offers"]] == ["a"] and payload["total_records"] == 1

    def test_bad_view_is_400(self, client, sessionm):
        response = client.get("/v1/wallets/u1?view=raw", headers=AUTH)
        assert response.status_code == 400 and "view" in response.get_json()["error"]["details"]
        assert not sessionm.calls(OFFERS_PATH)

    def test_on_error_empty_answers_sessionms_error_shape_with_an_empty_payload(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(503, {}))
        response = client.get("/v1/wallets/u1?view=sessionm&on_error=empty", headers=AUTH)
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == "error" and body["errors"]["code"] == "upstream_unavailable"
        assert list(body["payload"]) == PAYLOAD_KEYS
        assert body["payload"]["user_offers"] == [] and body["payload"]["available_points"] == 0

    def test_errors_without_on_error_empty_are_the_usual_statuses(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
        response = client.get("/v1/wallets/u1?view=sessionm", headers=AUTH)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "user_not_found"


class TestLikeTheFlatView:
    def test_cached_one_sessionm_call_for_both_views(self, client, sessionm):
        assert client.get("/v1/wallets/u1?view=sessionm", headers=AUTH).status_code == 200
        second = client.get("/v1/wallets/u1?view=sessionm", headers=AUTH)
        flat = client.get("/v1/wallets/u1", headers=AUTH)
        assert second.status_code == flat.status_code == 200
        assert second.headers["Cache-Status"].startswith("wallet-proxy; hit")
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    def test_concurrent_reads_are_coalesced(self, sessionm, app_for, live):
        import requests

        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json"), delay=0.4))
        base = live(app_for(make_settings(sessionm.url)))
        answers = []

        def read(query):
            answers.append(requests.get(f"{base}/v1/wallets/u-co?{query}", headers=AUTH, timeout=5))

        threads = [threading.Thread(target=read, args=(q,)) for q in ("view=sessionm", "view=sessionm", "")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert len(sessionm.calls(OFFERS_PATH)) == 1

    @pytest.mark.parametrize("query, status", [("", 403), ("&sig=00", 403), ("&sig=GOOD", 200)])
    def test_signed(self, sessionm, app_for, query, status):
        client = app_for(make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="k1")).test_client()
        query = query.replace("GOOD", sign("k1", "u1"))
        assert client.get(f"/v1/wallets/u1?view=sessionm{query}", headers=AUTH).status_code == status

    def test_fast_path_hit_is_the_same_body(self, app, sessionm):
        client = app.test_client()
        miss = client.get("/v1/wallets/u1?view=sessionm", headers=AUTH)
        answered = app.wsgi_app.answered  # the wallet handler's count of answers
        hit = client.get("/v1/wallets/u1?view=sessionm", headers=AUTH)
        assert hit.get_data() == miss.get_data() and hit.headers["ETag"] == miss.headers["ETag"]
        assert hit.headers["Cache-Status"].startswith("wallet-proxy; hit")
        assert app.wsgi_app.answered == answered + 1  # by the one handler, as the miss was


class TestDeclaredOnce:
    """The view's shape is declared once (wallet/view.py); code and OpenAPI follow the declaration."""

    def test_flat_view_keys_follow_the_declaration(self, client, sessionm):
        body = client.get("/v1/wallets/u1", headers=AUTH).get_json()
        assert list(body) == [k for k in view.WalletView().fields if k != "error"]
        assert list(body["offers"][0]) == list(view.OfferView().fields)
        empty = view.empty_wallet(user_id="u", culture="en-US", error={"code": "x", "message": "y"})
        rest = [k for k in view.WalletView().fields if k not in ("ok", "error")]
        assert list(empty) == ["ok", "error", *rest]

    def test_sessionm_view_keys_follow_the_declaration(self, client, sessionm):
        body = client.get("/v1/wallets/u1?view=sessionm", headers=AUTH).get_json()
        assert list(body["payload"]) == list(view.SessionMPayload().fields)
        assert list(body["payload"]["user_offers"][0]) == list(view.SessionMOffer().fields)

    def test_openapi_is_derived_from_the_declaration(self, client):
        schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
        for name in ("WalletView", "OfferView", "SessionMView", "SessionMPayload", "SessionMOffer"):
            declared = getattr(view, name)().fields
            assert list(schemas[name]["properties"]) == list(declared), name
        from wallet_proxy.web import openapi

        assert not hasattr(openapi, "OfferView") and openapi.WalletView is view.WalletView


def readme_pair() -> tuple[str, str]:
    """The README's migration pair: the seed's direct POST block, then the view=sessionm block."""
    (before,) = [b for w, b in liquid_blocks() if w.startswith("README") and SESSIONM_EXAMPLE_HOST in b]
    (after,) = [b for w, b in liquid_blocks() if w.startswith("README") and "view=sessionm" in b]
    return before, after


def user_with_expired_and_redeemed() -> str:
    now = datetime.fromtimestamp(NOW, tz=timezone.utc)
    for n in range(200):
        offers = make_wallet(f"seed-user-{n}", "en-US", now)["user_offers"]
        if any(o["redeem_date"] for o in offers) and len(offers) >= 4:
            return f"seed-user-{n}"
    raise AssertionError("no sandbox user with a redeemed offer")


def test_the_seeds_template_renders_the_same_offers_through_view_sessionm(stand_in, app_for, live):
    """The seed's own template, direct to a SessionM stand-in, then through view=sessionm: the same
    points and offers, minus the expired and redeemed ones (which the direct call shows)."""
    before, after = readme_pair()
    assert before.split("%}", 1)[1] == after.split("%}", 1)[1]  # the template itself is unchanged
    settings = make_settings(stand_in, SESSIONM_CONNECT_AUTH="Y29ubmVjdDpzZWNyZXQ=")
    base = live(app_for(settings))
    user = user_with_expired_and_redeemed()
    direct = render_full(before.replace(SESSIONM_EXAMPLE_HOST, stand_in), user_id=user)
    through = render_full(after.replace(EXAMPLE_HOST, base), user_id=user)
    assert "output" in direct and "output" in through, (direct, through)

    now = datetime.fromtimestamp(NOW, tz=timezone.utc)
    raw = make_wallet(user, "en-US", now)
    gone = [o["name"] for o in raw["user_offers"]
            if o["redeem_date"] or o["expiration_date"] <= "2026-11-28T10:00:00Z"]
    assert gone  # the direct call shows offers the service must drop
    lines = [line.strip() for line in direct["output"].splitlines() if line.strip()]
    kept = [line for line in lines if not any(line.startswith(name + " (") for name in gone)]
    assert len(kept) < len(lines)
    assert [line.strip() for line in through["output"].splitlines() if line.strip()] == kept
    assert squash(through["output"]).startswith(f"You have {raw['available_points']} points.")
