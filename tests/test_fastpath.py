"""The wallet GET is one handler (wallet/handler.py): hits, misses and errors all go through it, in
front of Flask; Cache-Status, the access line and the cache metric read one typed outcome."""
from __future__ import annotations

import json

import pytest

from tests.conftest import OFFERS_PATH, make_settings
from tests.fakes import Reply
from wallet_proxy.web.auth import sign

BASIC = {"Authorization": "Basic dGVzdDpzZWNyZXQ="}  # test:secret
BEARER = {"Authorization": "Bearer bz-secret"}
METRICS = {"Authorization": "Bearer secret"}


def answer(client, url, headers):
    response = client.get(url, headers={**headers, "X-Request-ID": "same-id"})
    return response.status_code, dict(response.headers), response.get_data()


@pytest.fixture
def signed(sessionm, app_for):
    return app_for(make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="k"))


def handler(app):
    return app.wsgi_app  # create_app puts the wallet handler in front of Flask


def scrape(app) -> str:
    return app.test_client().get("/metrics", headers=METRICS).get_data(as_text=True)


@pytest.mark.parametrize("query", ["", "?culture=fr", "?sort=-title&limit=1", "?on_error=empty&type=x"])
@pytest.mark.parametrize("headers", [BASIC, BEARER])
def test_a_hit_is_the_misses_answer_with_its_own_cache_headers(signed, clock, query, headers):
    sig = ("&" if query else "?") + "sig=" + sign("k", "user-1")
    url = f"/v1/wallets/user-1{query}{sig}"
    client = signed.test_client()
    miss = answer(client, url, headers)
    hit = answer(client, url, headers)
    assert miss[0] == hit[0] == 200 and miss[2] == hit[2]
    assert miss[1].pop("Cache-Status") == "wallet-proxy; fwd=uri-miss; stored"
    assert hit[1].pop("Cache-Status").startswith("wallet-proxy; hit; ttl=")
    assert miss[1] == hit[1]  # ETag, Cache-Control, X-Request-ID, security headers, length: the same
    assert handler(signed).answered == 2


@pytest.mark.parametrize("case", ["no auth", "wrong secret", "wrong scope", "bad sig", "if-none-match",
                                  "new query", "stale", "external id", "bad id", "bad query", "head"])
def test_every_wallet_read_is_answered_by_the_one_handler(signed, clock, sessionm, case):
    client = signed.test_client()
    sig = sign("k", "user-1")
    url = f"/v1/wallets/user-1?sig={sig}"
    etag = client.get(url, headers=BASIC).headers["ETag"]
    before = handler(signed).answered
    headers, target, method = dict(BASIC), url, "GET"
    if case == "no auth":
        headers = {}
    elif case == "wrong secret":
        headers = {"Authorization": "Bearer nope"}
    elif case == "wrong scope":
        headers = {"Authorization": "Bearer tg-secret"}
    elif case == "bad sig":
        target = "/v1/wallets/user-1?sig=00"
    elif case == "if-none-match":
        headers["If-None-Match"] = f'W/{etag}'
    elif case == "new query":
        target = url + "&limit=1"
    elif case == "stale":
        clock.tick(61)
    elif case == "external id":  # a sig covers the id and its id_type
        target = f"/v1/wallets/user-1?sig={sign('k', 'user-1', 'external')}&id_type=external"
    elif case == "bad id":
        target = f"/v1/wallets/user-1%0A?sig={sig}"
    elif case == "bad query":
        target = url + "&limit=0"
    elif case == "head":
        method = "HEAD"
    response = client.open(target, method=method, headers=headers)
    assert handler(signed).answered == before + 1
    expected = {"no auth": 401, "wrong secret": 401, "wrong scope": 403, "bad sig": 403, "if-none-match": 304,
                "new query": 200, "stale": 200, "external id": 503, "bad id": 400, "bad query": 400,
                "head": 200}[case]
    assert response.status_code == expected  # (external ids need Core, not configured here: 503)
    assert response.headers["X-Request-ID"] and response.headers["X-Content-Type-Options"] == "nosniff"
    if expected >= 400:
        assert response.get_json()["ok"] is False and response.headers["Cache-Control"] == "no-store"
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    if case == "head":
        assert response.get_data() == b"" and int(response.headers["Content-Length"]) > 0
    if case == "bad query":
        assert "limit" in response.get_json()["error"]["details"]


def test_flask_never_sees_a_wallet_read_but_serves_the_purge(signed, sessionm):
    client = signed.test_client()
    url = f"/v1/wallets/user-1?sig={sign('k', 'user-1')}"
    assert client.get(url, headers=BASIC).status_code == 200
    assert client.delete("/v1/wallets/user-1", headers={"Authorization": "Bearer ops-secret"}).status_code == 204
    assert client.get(url, headers=BASIC).headers["Cache-Status"] == "wallet-proxy; fwd=uri-miss; stored"
    assert len(sessionm.calls(OFFERS_PATH)) == 2
    assert client.post("/v1/wallets/user-1", headers=BASIC).status_code == 405  # Flask's, with Allow
    assert handler(signed).answered == 2


def test_reads_are_logged_and_counted_from_one_outcome(signed, capsys):
    client = signed.test_client()
    url = f"/v1/wallets/user-1?sig={sign('k', 'user-1')}"
    client.get(url, headers=BASIC)
    client.get(url, headers={**BASIC, "X-Request-ID": "rid-7"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    miss, hit = [entry for entry in lines if entry.get("logger") == "wallet_proxy.access"]
    assert miss["cache"] == "wallet-proxy; fwd=uri-miss; stored" and "upstream_ms" in miss
    assert hit["request_id"] == "rid-7" and hit["route"] == "/v1/wallets/<anypath:user_id>"
    assert hit["status"] == 200 and hit["cache"].startswith("wallet-proxy; hit") and hit["client"] == "test"
    assert "upstream_ms" not in hit
    assert "user-1" not in json.dumps(hit)
    metrics = scrape(signed)
    assert 'wallet_proxy_cache_total{result="hit"} 1.0' in metrics
    assert 'wallet_proxy_cache_total{result="miss"} 1.0' in metrics
    assert ('wallet_proxy_requests_total{method="GET",route="/v1/wallets/<anypath:user_id>",status="200"} 2.0'
            in metrics)


@pytest.mark.parametrize("outcome", ["hit", "miss", "stale_while_revalidate", "stale_if_error", "error"])
def test_cache_status_and_the_metric_name_the_same_outcome(signed, sessionm, clock, outcome):
    from wallet_proxy.wallet.service import Outcome

    client = signed.test_client()
    query = f"?sig={sign('k', 'user-1')}" + ("&on_error=empty" if outcome == "error" else "")
    url = f"/v1/wallets/user-1{query}"
    if outcome != "miss":
        if outcome == "error":
            sessionm.on("POST", OFFERS_PATH, Reply(500, {}))
        else:
            client.get(url, headers=BASIC)
    if outcome == "stale_while_revalidate":
        clock.tick(65)
    elif outcome == "stale_if_error":
        clock.tick(100)
        sessionm.on("POST", OFFERS_PATH, Reply(500, {}))
    before = scrape(signed)
    response = client.get(url, headers=BASIC)
    assert response.status_code == 200
    seen = Outcome(outcome)
    expected = seen.cache_status(-5 if seen in (Outcome.SWR, Outcome.SIE) else 60)
    header = response.headers["Cache-Status"] if outcome != "error" else None
    if outcome == "error":
        assert response.get_json()["ok"] is False
    elif outcome in ("hit", "miss"):
        assert header == expected
    else:
        assert header.startswith("wallet-proxy; hit; ttl=-") and header.endswith(expected.rpartition(";")[2])
    line = f'wallet_proxy_cache_total{{result="{outcome}"}} '
    count = lambda text: float(next((n for n in text.splitlines() if n.startswith(line)), line + "0")
                               .rpartition(" ")[2])
    assert count(scrape(signed)) == count(before) + 1


def test_unknown_parameters_share_one_rendered_body(signed, sessionm):
    client = signed.test_client()
    sig = sign("k", "user-1")
    bodies = {client.get(f"/v1/wallets/user-1?sig={sig}&cb={n}", headers=BASIC).get_data() for n in range(20)}
    assert len(bodies) == 1
    assert len(handler(signed).rendered._cache) == 1
    assert len(sessionm.calls(OFFERS_PATH)) == 1


def test_the_handler_route_is_the_real_rule(app):
    from wallet_proxy.wallet.handler import ROUTE

    assert ROUTE in {rule.rule for rule in app.url_map.iter_rules()}


def test_the_upstream_is_called_once_for_miss_then_hits(signed, sessionm):
    client = signed.test_client()
    url = f"/v1/wallets/user-1?sig={sign('k', 'user-1')}"
    for _ in range(5):
        assert client.get(url, headers=BASIC).status_code == 200
    assert handler(signed).answered == 5 and len(sessionm.calls(OFFERS_PATH)) == 1


def open_breaker(app):
    breaker = app.extensions["wallet_proxy"].wallets.breaker
    for _ in range(breaker.threshold):
        breaker.failure()


def test_breaker_open_503(signed, sessionm):
    client = signed.test_client()
    url = f"/v1/wallets/user-2?sig={sign('k', 'user-2')}"
    sessionm.on("POST", OFFERS_PATH, Reply(500, {}))
    assert client.get(url, headers=BASIC).status_code == 503
    open_breaker(signed)
    calls = len(sessionm.calls(OFFERS_PATH))
    status, headers, body = answer(client, url, BASIC)
    assert status == 503 and json.loads(body)["error"]["code"] == "upstream_unavailable"
    assert int(headers["Retry-After"]) >= 1 and len(sessionm.calls(OFFERS_PATH)) == calls


def test_breaker_open_still_serves_a_stale_copy(signed, sessionm, clock):
    client = signed.test_client()
    url = f"/v1/wallets/user-1?sig={sign('k', 'user-1')}"
    client.get(url, headers=BASIC)
    clock.tick(100)  # past the TTL, well inside the stale window
    open_breaker(signed)
    response = client.get(url, headers=BASIC)
    assert response.status_code == 200 and response.get_json()["stale"] is True
    assert response.headers["Cache-Status"].endswith("detail=stale-if-error")


def test_overload_refusal(signed):
    client = signed.test_client()
    url = f"/v1/wallets/user-3?sig={sign('k', 'user-3')}"
    wallets = signed.extensions["wallet_proxy"].wallets
    wallets.sleep = lambda seconds: None  # paced refusals: no need to wait for the turn here
    for _ in range(wallets.slots.size):  # every SessionM slot busy, and a call holds one long
        assert wallets.slots.take(float("inf"))
    wallets.slots.hold = 60.0
    status, headers, body = answer(client, url, BASIC)
    assert status == 503 and "no slot" in json.loads(body)["error"]["message"]
    assert headers["Retry-After"] == "1" and headers["Cache-Control"] == "no-store"
    (line,) = [n for n in scrape(signed).splitlines() if n.startswith("wallet_proxy_errors_total{")]
    assert 'code="upstream_unavailable"' in line and line.endswith(" 1.0")
