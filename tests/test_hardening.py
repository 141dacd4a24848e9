"""The hardened surface: headers, CORS off, size limits, rate limit, constant-time auth, no stack traces."""
from __future__ import annotations

import base64
import hmac

import pytest
import requests
from flask import Blueprint, abort, jsonify

from tests.conftest import make_settings
from tests.test_metrics import ADMIN, samples, value

WALLET = {"Authorization": "Basic " + base64.b64encode(b"braze:bz-secret").decode()}
TAGGER = {"Authorization": "Basic " + base64.b64encode(b"tagger:tg-secret").decode()}


class TestHeaders:
    def test_json_answers_carry_security_headers_and_no_hsts_over_http(self, client):
        for response in (client.get("/v1/wallets/u1", headers=WALLET), client.get("/v1/wallets/u1"),
                         client.get("/healthz"), client.get("/nowhere")):
            headers = response.headers
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert "Strict-Transport-Security" not in headers
            assert headers["X-Request-ID"]

    def test_hsts_only_over_https(self, client):
        response = client.get("/healthz", base_url="https://wallet.example.com")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")


class TestCorsOff:
    def test_no_access_control_headers_even_for_a_preflight(self, client):
        origin = {"Origin": "https://evil.example"}
        answers = [client.get("/v1/wallets/u1", headers={**WALLET, **origin}),
                   client.options("/v1/wallets/u1",
                                  headers={**origin, "Access-Control-Request-Method": "GET"}),
                   client.get("/openapi.json", headers=origin)]
        for response in answers:
            assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]

    def test_a_route_cannot_turn_it_on(self, app):
        leaky = Blueprint("leaky", __name__)

        @leaky.get("/leaky")
        def view():
            response = jsonify(ok=True)
            response.headers["Access-Control-Allow-Origin"] = "*"
            return response

        app.register_blueprint(leaky)
        assert "Access-Control-Allow-Origin" not in app.test_client().get("/leaky").headers


class TestLimits:
    def test_oversized_body_is_413_json_over_real_http(self, sessionm, app_for, live):
        url = live(app_for(make_settings(sessionm.url, core_url=sessionm.url)))
        big = b'{"tags": ["' + b"a" * 1_100_000 + b'"]}'
        response = requests.post(f"{url}/v1/users/u1/tags", data=big, timeout=10,
                                 headers={**TAGGER, "Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert sessionm.calls("/tags") == []

    def test_malformed_json_is_400_not_500(self, client):
        response = client.post("/v1/users/u1/tags", data=b'{"tags": [', headers=TAGGER,
                               content_type="application/json")
        assert response.status_code == 400 and response.get_json()["ok"] is False


class TestNoStackTraces:
    def test_werkzeug_5xx_is_our_internal_error(self, app):
        bp = Blueprint("five", __name__)

        @bp.get("/five")
        def five():
            abort(501, "NotImplemented at /srv/app/secret_module.py line 3")

        app.register_blueprint(bp)
        response = app.test_client().get("/five")
        assert response.status_code == 501
        assert response.get_json() == {"ok": False,
                                       "error": {"code": "internal", "message": "internal error"}}

    def test_unknown_routes_and_methods_are_json_objects(self, client):
        assert client.get("/v1/nope").get_json()["error"]["code"] == "not_found"
        answer = client.put("/v1/wallets/u1", headers=WALLET)
        assert answer.status_code == 405 and answer.get_json()["error"]["code"] == "method_not_allowed"
        assert set(answer.headers["Allow"].split(", ")) >= {"GET", "DELETE"}


class TestRateLimit:
    def test_off_by_default(self, client):
        codes = {client.get("/v1/wallets/u1", headers=WALLET).status_code for _ in range(50)}
        assert codes == {200}

    def test_per_client_bucket_answers_429_with_retry_after(self, sessionm, app_for, clock):
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_CLIENT_RATE="2"))
        client = app.test_client()
        assert [client.get("/v1/wallets/u1", headers=WALLET).status_code for _ in range(2)] == [200, 200]
        limited = client.get("/v1/wallets/u1", headers=WALLET)
        assert limited.status_code == 429
        assert limited.get_json()["error"]["code"] == "rate_limited"
        assert limited.headers["Retry-After"] == "1"
        # another client has its own bucket; unauthenticated requests never reach the limiter
        assert client.get("/metrics", headers=ADMIN).status_code == 200
        assert client.get("/v1/wallets/u1").status_code == 401
        clock.tick(0.5)  # half a second refills one token at 2/s
        assert client.get("/v1/wallets/u1", headers=WALLET).status_code == 200
        assert client.get("/v1/wallets/u1", headers=WALLET).status_code == 429
        found = samples(client.get("/metrics", headers=ADMIN).get_data(as_text=True))
        assert value(found, "wallet_proxy_rate_limited_total", client="braze") == 2

    def test_slow_rate_gives_a_longer_retry_after(self, sessionm, app_for):
        client = app_for(make_settings(sessionm.url, WALLET_PROXY_CLIENT_RATE="0.1")).test_client()
        assert client.get("/v1/wallets/u1", headers=WALLET).status_code == 200
        limited = client.get("/v1/wallets/u1", headers=WALLET)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "10"


class TestConstantTimeCredentials:
    @pytest.mark.parametrize("header", [WALLET, {"Authorization": "Bearer nope"},
                                        {"Authorization": "Basic " + base64.b64encode(b"braze:b").decode()}])
    def test_every_client_is_compared_whatever_the_credential(self, client, monkeypatch, header):
        compared = []
        real = hmac.compare_digest

        def counting(a, b):
            compared.append(1)
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", counting)
        client.get("/v1/wallets/u1", headers=header)
        # 4 configured clients: the secret of each (and the name, for Basic) is compared every time,
        # so how long a check takes says nothing about which client, or how much, matched
        assert len(compared) == (8 if header["Authorization"].startswith("Basic") else 4)


class TestNonAsciiCredentials:
    def test_non_ascii_sig_is_403_not_500(self, sessionm, app_for):
        settings = make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="sign-key-123456")
        client = app_for(settings).test_client()
        response = client.get("/v1/wallets/u1?sig=%C3%A9t%C3%A9", headers=WALLET)
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "bad_signature"

    @pytest.mark.parametrize("raw", ["bénédicte:sécret", "braze:bz-secrét", "€:€"])
    def test_non_ascii_basic_credentials_are_401_not_500(self, client, raw):
        header = {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}
        assert client.get("/v1/wallets/u1", headers=header).status_code == 401
