"""The preview page and its JSON API, through Flask's test client against a fake SessionM on loopback."""
from __future__ import annotations

import base64
import copy
import re

import pytest

from tests.conftest import OFFERS_PATH, fixture_json, make_settings
from tests.fakes import Reply
from wallet_proxy.preview.routes import CSP, SESSION_COOKIE, connected_content_block, liquid_path, tree

OPS = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode()}
BRAZE = {"Authorization": "Basic " + base64.b64encode(b"braze:bz-secret").decode()}
HOSTILE = "<script>alert('pwned')</script>"


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html).group(1)


def login_csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


@pytest.fixture
def hostile(sessionm):
    """SessionM answering an offer whose every string is markup."""
    body = copy.deepcopy(fixture_json("get_user_offers.ok.json"))
    offer = body["payload"]["user_offers"][0]
    offer.update(name=HOSTILE, description='<img src=x onerror="alert(1)">', logo_uri="javascript:alert(1)")
    body["payload"]["offer_groups"][0]["name"] = "</summary><script>alert(2)</script>"
    sessionm.on("POST", OFFERS_PATH, Reply(200, body))
    return sessionm


def sign_in(client, name="ops", secret="ops-secret"):
    page = client.get("/preview/login")
    return client.post("/preview/login", data={"name": name, "secret": secret,
                                                "csrf_token": login_csrf_of(page.get_data(as_text=True))})


class TestAccess:
    def test_anonymous_gets_the_login_form_not_the_page(self, client):
        response = client.get("/preview")
        html = response.get_data(as_text=True)
        assert response.status_code == 401
        assert '<form method="post" action="/preview/login"' in html
        assert "available-points" not in html

    def test_login_basic_asks_for_the_browser_prompt(self, client):
        response = client.get("/preview?login=basic")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert '<form method="post" action="/preview/login"' in response.get_data(as_text=True)
        assert "WWW-Authenticate" not in client.get("/preview").headers  # the form alone by default

    def test_strict_csp_without_inline_script(self, client):
        response = client.get("/preview", headers=OPS)
        csp = response.headers["Content-Security-Policy"]
        assert csp == CSP
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        scripts = re.findall(r"<script[^>]*>", response.get_data(as_text=True))
        assert scripts and all(' src="/static/' in tag for tag in scripts)
        assert "onclick=" not in response.get_data(as_text=True)
        assert response.headers["Cache-Control"] == "no-store"

    def test_static_assets_ship_with_the_package(self, client):
        for name, kind in (("preview.css", "text/css"), ("preview.js", "javascript")):
            response = client.get(f"/static/{name}")
            assert response.status_code == 200 and kind in response.content_type
            assert b"http://" not in response.data and b"https://" not in response.data  # no CDN

    def test_basic_auth_with_admin_scope(self, client):
        response = client.get("/preview", headers=OPS)
        assert response.status_code == 200
        assert "signed in as" in response.get_data(as_text=True)

    def test_wallet_only_client_is_forbidden(self, client):
        response = client.get("/preview", headers=BRAZE)
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"

    def test_api_without_credentials_prompts_for_basic(self, client):
        response = client.get("/preview/api/wallet?user_id=u-1")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")

    def test_login_form_sets_a_strict_session_cookie(self, client):
        response = sign_in(client)
        assert response.status_code == 303 and response.headers["Location"] == "/preview"
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(SESSION_COOKIE + "=")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/preview" in cookie
        assert "ops-secret" not in cookie
        page = client.get("/preview")
        assert page.status_code == 200
        assert "<strong>ops</strong>" in page.get_data(as_text=True)

    def test_login_needs_the_forms_csrf_token(self, client):
        client.get("/preview/login")
        response = client.post("/preview/login", data={"name": "ops", "secret": "ops-secret",
                                                        "csrf_token": "0" * 64})
        assert response.status_code == 403
        assert client.get("/preview").status_code == 401

    def test_wrong_secret_and_wrong_scope_are_refused(self, client):
        wrong = sign_in(client, secret="nope")
        assert wrong.status_code == 401 and "Wrong name or secret" in wrong.get_data(as_text=True)
        scope = sign_in(client, name="braze", secret="bz-secret")
        assert scope.status_code == 403 and "preview scope" in scope.get_data(as_text=True)
        assert client.get("/preview").status_code == 401

    def test_logout_needs_csrf_and_ends_the_session(self, client):
        sign_in(client)
        html = client.get("/preview").get_data(as_text=True)
        assert client.post("/preview/logout", data={"csrf_token": "bad"}).status_code == 403
        assert client.get("/preview").status_code == 200
        assert client.post("/preview/logout", data={"csrf_token": csrf_of(html)}).status_code == 303
        assert client.get("/preview").status_code == 401

    @pytest.mark.redis
    def test_workers_agree_on_sessions_and_a_new_secret_ends_them(self, sessionm, app_for, redis_url):
        settings = make_settings(sessionm.url, WALLET_PROXY_REDIS_URL=redis_url)
        first, second = app_for(settings).test_client(), app_for(settings).test_client()
        sign_in(first)
        token = first.get_cookie(SESSION_COOKIE, path="/preview").value
        second.set_cookie(SESSION_COOKIE, token, path="/preview")
        assert second.get("/preview").status_code == 200  # another worker accepts the cookie
        rotated = app_for(make_settings(
            sessionm.url, WALLET_PROXY_CLIENTS="ops:new-secret:admin",
            WALLET_PROXY_REDIS_URL=redis_url)).test_client()
        rotated.set_cookie(SESSION_COOKIE, token, path="/preview")
        assert rotated.get("/preview").status_code == 401

    def test_logout_ends_the_session_on_the_server_a_copied_cookie_stops_working(self, client, app):
        """#11 item 8: the signed cookie alone was valid for 8 hours after logout."""
        sign_in(client)
        token = client.get_cookie(SESSION_COOKIE, path="/preview").value
        thief = app.test_client()
        thief.set_cookie(SESSION_COOKIE, token, path="/preview")
        assert thief.get("/preview").status_code == 200
        html = client.get("/preview").get_data(as_text=True)
        assert client.post("/preview/logout", data={"csrf_token": csrf_of(html)}).status_code == 303
        assert thief.get("/preview").status_code == 401
        assert thief.get("/preview/api/wallet?user_id=u-1").status_code == 401

    @pytest.mark.redis
    def test_logout_in_one_process_ends_the_session_in_every_process(self, sessionm, app_for, redis_url):
        settings = make_settings(sessionm.url, WALLET_PROXY_REDIS_URL=redis_url)
        first, second = app_for(settings).test_client(), app_for(settings).test_client()
        sign_in(first)
        token = first.get_cookie(SESSION_COOKIE, path="/preview").value
        second.set_cookie(SESSION_COOKIE, token, path="/preview")
        html = first.get("/preview").get_data(as_text=True)
        assert first.post("/preview/logout", data={"csrf_token": csrf_of(html)}).status_code == 303
        assert second.get("/preview").status_code == 401

    def test_forged_cookie_is_ignored(self, client):
        client.set_cookie(SESSION_COOKIE, "eyJuYW1lIjoib3BzIn0.forged.sig", path="/preview")
        assert client.get("/preview").status_code == 401


class TestLookup:
    def test_cards_points_and_status(self, client, sessionm):
        html = client.get("/preview?user_id=u-1&culture=fr", headers=OPS).get_data(as_text=True)
        assert '<h3 class="offer-title">Free medium coffee</h3>' in html
        assert "Expires in 33 days" in html  # 2026-12-31T23:59:59Z seen from 2026-11-28T10:00Z
        assert '<dd id="available-points">100</dd>' in html
        assert 'id="status" title="wallet-proxy; fwd=uri-miss; stored">fresh<' in html
        assert 'src="https://cdn.example.com/offers/coffee.png"' in html
        assert sessionm.calls(OFFERS_PATH)[0].json["culture"] == "fr"
        again = client.get("/preview?user_id=u-1&culture=fr", headers=OPS).get_data(as_text=True)
        assert ">cached<" in again

    def test_liquid_paths_and_raw_payload(self, client):
        html = client.get("/preview?user_id=u-1", headers=OPS).get_data(as_text=True)
        assert 'data-path="wallet.offers[0].title"' in html
        assert 'data-path="wallet.available_points"' in html
        assert 'data-path="wallet.user.opted_in"' in html
        raw = re.search(r'<pre class="code raw" id="raw">(.*?)</pre>', html, re.S).group(1)
        assert "&#34;user_offers&#34;" in raw and "&#34;retailer_id&#34;" not in raw

    def test_every_sessionm_string_is_escaped(self, client, hostile):
        html = client.get("/preview?user_id=u-1", headers=OPS).get_data(as_text=True)
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
        assert '<img src=x onerror' not in html
        assert 'src="javascript:' not in html  # shown as text in the tree, never used as a logo
        assert "&lt;/summary&gt;&lt;script&gt;alert(2)" in html

    def test_same_wallet_as_the_connected_content_endpoint(self, client):
        preview = client.get("/preview/api/wallet?user_id=u-1&culture=en-US", headers=OPS).get_json()
        served = client.get("/v1/wallets/u-1?culture=en-US", headers=BRAZE).get_json()
        assert preview["wallet"] == served
        assert preview["raw"]["http_status"] == 200
        assert preview["raw"]["body"]["status"] == "ok"

    def test_unknown_user_shows_the_error_and_sessionm_answer(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
        response = client.get("/preview?user_id=nobody", headers=OPS)
        html = response.get_data(as_text=True)
        assert response.status_code == 404
        assert "user_not_found" in html and "SessionM does not know this user" in html
        assert "&#34;User not found&#34;" in html

    def test_bad_user_id_and_culture_name_the_field(self, client, sessionm):
        response = client.get("/preview?user_id=a%20b", headers=OPS)
        assert response.status_code == 400 and "user_id must be" in response.get_data(as_text=True)
        response = client.get("/preview?user_id=u-1&culture=not_a_culture!", headers=OPS)
        assert response.status_code == 400 and "culture:" in response.get_data(as_text=True)
        api = client.get("/preview/api/wallet?culture=fr", headers=OPS)
        assert api.status_code == 400 and "user_id" in api.get_json()["error"]["message"]
        # a culture alone is checked too, as the OpenAPI document's pattern says (schemathesis found it)
        alone = client.get("/preview?culture=%C3%99%60x", headers=OPS)
        assert alone.status_code == 400 and "culture:" in alone.get_data(as_text=True)
        assert client.get("/preview?culture=fr_fr", headers=OPS).status_code == 200
        assert sessionm.calls(OFFERS_PATH) == []


class TestConnectedContentBlock:
    def test_block_for_this_deployment(self, client):
        html = client.get("/preview", headers=OPS,
                          base_url="https://wallet.example.org").get_data(as_text=True)
        block = re.search(r'<pre class="code" id="cc-block">(.*?)</pre>', html, re.S).group(1)
        assert block.startswith("{% connected_content https://wallet.example.org/v1/wallets/")
        for part in (":basic_auth wallet_proxy", ":save wallet", ":no_cache",
                     "{% if wallet.ok != true %}"
                     "{% abort_message(&#39;wallet unavailable&#39;) %}{% endif %}"):
            assert part in block
        assert "sig=" not in block

    def test_sig_when_signing_is_on_and_no_secret_printed(self, sessionm, app_for):
        client = app_for(make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="sign-me-please")).test_client()
        html = client.get("/preview?user_id=u-1", headers=OPS).get_data(as_text=True)
        assert ("&amp;sig={{custom_attribute.${sessionm_user_id} | "
                "hmac_sha256_hex: &#39;YOUR_SIGNING_KEY&#39;}}") in html
        for secret in ("sign-me-please", "ops-secret", "bz-secret", "Y29ubmVjdDpzZWNyZXQ=", "tg-secret"):
            assert secret not in html
        # the rule for external ids, as the service checks it (a sig covers the id and its id_type)
        assert "{{ 'external/' | append: ${user_id} | hmac_sha256_hex: 'YOUR_SIGNING_KEY' }}" in html

    def test_block_renders_in_the_playground(self, client):
        """The block the page hands out is itself valid Liquid for the playground."""
        html = client.get("/preview?user_id=u-1", headers=OPS).get_data(as_text=True)
        block = connected_content_block("http://localhost/", False)
        answer = client.post("/preview/api/render", headers={**OPS, "X-CSRF-Token": csrf_of(html)},
                             json={"user_id": "u-1", "template": block + "{{wallet.available_points}}"})
        assert answer.status_code == 200 and answer.get_json()["output"].strip() == "100"


class TestRender:
    @pytest.fixture
    def post(self, client):
        token = csrf_of(client.get("/preview", headers=OPS).get_data(as_text=True))

        def send(body, headers=None):
            return client.post("/preview/api/render", json=body,
                               headers={**OPS, "X-CSRF-Token": token, **(headers or {})})

        return send

    def test_renders_against_the_users_wallet(self, post):
        answer = post({"user_id": "u-1", "culture": "en-US",
                       "template": "{{wallet.offers[0].title}} / {{wallet.available_points}} / "
                                   "{{${user_id}}}"})
        assert answer.status_code == 200
        assert answer.get_json()["output"] == "Free medium coffee / 100 / u-1"
        assert answer.get_json()["aborted"] is None

    def test_output_is_returned_as_data_not_markup(self, post, hostile):
        answer = post({"user_id": "u-1", "template": "{{wallet.offers[0].title}}"})
        # JSON string; the page puts it in textContent, never innerHTML
        assert answer.get_json()["output"] == HOSTILE
        assert answer.content_type == "application/json"

    def test_syntax_error_is_422_with_line_and_reason(self, post):
        answer = post({"user_id": "u-1",
                       "template": "Hello\n{% for offer in wallet.offers %}\n{{offer.title}}"})
        assert answer.status_code == 422
        error = answer.get_json()["error"]
        assert error["code"] == "template_error"
        assert error["details"]["kind"] == "syntax" and error["details"]["line"] == 2
        assert "endfor" in error["details"]["reason"]
        assert error["message"].startswith("syntax error: line 2:")

    def test_limits_are_422_not_500(self, post):
        answer = post({"user_id": "u-1",
                       "template": "{% for a in (1..5000) %}{% for b in (1..5000) %}x"
                                   "{% endfor %}{% endfor %}"})
        assert answer.status_code == 422 and answer.get_json()["error"]["details"]["kind"] == "limit"

    def test_unknown_user_renders_the_empty_wallet_so_the_guard_can_be_tried(self, post, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
        answer = post({"user_id": "ghost", "template":
                       "{% if wallet.ok != true %}{% abort_message('no wallet') %}{% endif %}Hi"}).get_json()
        assert answer["aborted"] == "no wallet"
        assert answer["wallet_error"]["code"] == "user_not_found"

    def test_csrf_is_required(self, client, post):
        answer = client.post("/preview/api/render", json={"user_id": "u-1", "template": "x"}, headers=OPS)
        assert answer.status_code == 403 and "CSRF" in answer.get_json()["error"]["message"]

    def test_cross_origin_is_refused(self, post):
        answer = post({"user_id": "u-1", "template": "x"}, headers={"Origin": "https://evil.example"})
        assert answer.status_code == 403

    def test_session_csrf_token_works(self, client):
        sign_in(client)
        token = csrf_of(client.get("/preview").get_data(as_text=True))
        answer = client.post("/preview/api/render", json={"user_id": "u-1", "template": "{{wallet.ok}}"},
                             headers={"X-CSRF-Token": token})
        assert answer.status_code == 200 and answer.get_json()["output"] == "true"

    @pytest.mark.parametrize("body, field", [
        ({"user_id": "u-1"}, "template"),
        ({"user_id": "u-1", "template": 5}, "template"),
        ({"template": "x"}, "user_id"),
        ({"user_id": "bad id", "template": "x"}, "user_id"),
        ({"user_id": "u-1", "culture": "??", "template": "x"}, "culture"),
        ({"user_id": "u-1", "template": "x" * 20_001}, "template"),
    ])
    def test_bad_bodies_name_the_field(self, post, body, field):
        answer = post(body)
        assert answer.status_code == 400
        assert field in answer.get_json()["error"]["message"]


class TestHelpers:
    def test_liquid_paths(self):
        assert liquid_path("wallet", "offers") == "wallet.offers"
        assert liquid_path("wallet.offers", 2) == "wallet.offers[2]"
        assert liquid_path("wallet", "odd key") == 'wallet["odd key"]'

    def test_tree_gives_every_leaf_its_path(self):
        node = tree({"ok": True, "offers": [{"title": "x"}]})
        offers = node["children"][1]
        assert (offers["kind"], offers["size"]) == ("array", 1)
        leaf = offers["children"][0]["children"][0]
        assert (leaf["path"], leaf["json"]) == ("wallet.offers[0].title", '"x"')


def test_non_ascii_tokens_are_refused_not_crashed(app_for):
    """hmac.compare_digest raises on non-ASCII str; every token check must answer 403, not 500."""
    from wallet_proxy.settings import parse

    client = app_for(parse({})).test_client()
    client.get("/preview")
    response = client.post("/preview/login", data={"csrf_token": "é" * 10, "name": "demo", "secret": "demo"})
    assert response.status_code == 403
    response = client.post("/preview/api/render", headers={"X-CSRF-Token": "ü", "Authorization":
                                                           "Basic ZGVtbzpkZW1v"}, json={"template": "x"})
    assert response.status_code == 403


class TestPreviewScope:
    """#11 item 9: marketers get the preview without the admin secret (SPEC: `preview` scope)."""

    @pytest.fixture
    def client(self, sessionm, app_for):
        clients = "marketer:m-secret-0123456789:preview,ops:ops-secret:admin"
        return app_for(make_settings(sessionm.url, WALLET_PROXY_CLIENTS=clients)).test_client()

    def test_a_preview_client_signs_in_and_uses_the_page_but_not_admin_routes(self, client):
        assert sign_in(client, "marketer", "m-secret-0123456789").status_code == 303
        assert client.get("/preview?user_id=u-1").status_code == 200
        marketer = {"Authorization": "Basic " + base64.b64encode(b"marketer:m-secret-0123456789").decode()}
        assert client.get("/preview/api/wallet?user_id=u-1", headers=marketer).status_code == 200
        assert client.get("/metrics", headers=marketer).status_code == 403
        assert client.delete("/v1/wallets/u-1", headers=marketer).status_code == 403
        assert client.get("/v1/wallets/u-1", headers=marketer).status_code == 403

    def test_admin_still_includes_the_preview(self, client):
        assert sign_in(client, "ops", "ops-secret").status_code == 303
        assert client.get("/preview").status_code == 200

    def test_the_login_page_speaks_to_marketers(self, client):
        html = client.get("/preview/login").get_data(as_text=True)
        assert "Connected Content" in html and "preview" in html
        assert "WALLET_PROXY_CLIENTS" not in html and "admin" not in html


class TestLoginThrottle:
    """#11 item 7: 300 wrong passwords in 0.2 s, then the right one worked."""

    def test_ten_failures_in_a_minute_then_429_with_retry_after_even_for_the_right_secret(self, client):
        for _ in range(10):
            assert sign_in(client, secret="guess").status_code == 401
        refused = sign_in(client)  # the right secret, from the same address
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "Too many failed sign-ins" in refused.get_data(as_text=True)
        assert client.get("/preview").status_code == 401

    def test_another_address_is_not_slowed(self, app):
        one, two = app.test_client(), app.test_client()
        for _ in range(10):
            sign_in(one, secret="guess")
        assert sign_in(one).status_code == 429
        # behind a trusted proxy (127.0.0.1 by default) the address is X-Forwarded-For's last hop; the
        # name guessed at (ops) is throttled too, wherever from: another client signs in
        page = two.get("/preview/login", headers={"X-Forwarded-For": "203.0.113.9"})
        answer = two.post("/preview/login", headers={"X-Forwarded-For": "203.0.113.9"},
                          data={"name": "test", "secret": "secret",
                                "csrf_token": login_csrf_of(page.get_data(as_text=True))})
        assert answer.status_code == 303

    def test_the_guessed_name_is_throttled_from_every_address(self, app):
        one, two = app.test_client(), app.test_client()
        for _ in range(10):
            sign_in(one, secret="guess")
        page = two.get("/preview/login", headers={"X-Forwarded-For": "203.0.113.9"})
        answer = two.post("/preview/login", headers={"X-Forwarded-For": "203.0.113.9"},
                          data={"name": "ops", "secret": "ops-secret",
                                "csrf_token": login_csrf_of(page.get_data(as_text=True))})
        assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1

    def test_a_credential_that_already_worked_is_never_locked_out(self, client):
        """Braze calls from shared addresses: a campaign with a wrong secret must not lock out the
        others, whose credentials have already been admitted (a guess never has)."""
        assert client.get("/v1/wallets/u-1", headers=BRAZE).status_code == 200
        assert client.get("/preview", headers=OPS).status_code == 200
        for _ in range(15):
            sign_in(client, secret="guess")
        assert client.get("/v1/wallets/u-1", headers=BRAZE).status_code == 200
        assert client.get("/preview", headers=OPS).status_code == 200
