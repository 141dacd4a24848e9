"""The WSGI fast path answers exactly what the Flask route would, and only fresh rendered hits."""
from __future__ import annotations

import json

import pytest

from tests.conftest import OFFERS_PATH, make_settings
from tests.fakes import Reply
from wallet_proxy.web.auth import sign

BASIC = {"Authorization": "Basic dGVzdDpzZWNyZXQ="}  # test:secret
BEARER = {"Authorization": "Bearer bz-secret"}


def answer(client, url, headers):
    response = client.get(url, headers={**headers, "X-Request-ID": "same-id"})
    return response.status_code, dict(response.headers), response.get_data()


@pytest.fixture
def pair(sessionm, app_for):
    """Two apps on one fake SessionM and clock: one as built, one with the fast path taken out."""
    settings = make_settings(sessionm.url, WALLET_PROXY_SIGNING_KEY="k")
    fast, slow = app_for(settings), app_for(settings)
    slow.wsgi_app = slow.wsgi_app.wsgi_app
    return fast, slow


@pytest.mark.parametrize("query", ["", "?culture=fr", "?sort=-title&limit=1", "?on_error=empty&type=x"])
@pytest.mark.parametrize("headers", [BASIC, BEARER])
def test_a_fast_hit_is_the_same_answer_as_the_route(pair, clock, query, headers):
    fast, slow = pair
    sig = ("&" if query else "?") + "sig=" + sign("k", "user-1")
    url = f"/v1/wallets/user-1{query}{sig}"
    answers = []
    for app in (fast, slow):
        client = app.test_client()
        first = answer(client, url, headers)  # miss: fetched, rendered, remembered
        assert first[0] == 200 and first[1]["Cache-Status"] == "wallet-proxy; fwd=uri-miss; stored"
        answers.append(answer(client, url, headers))
    (fast_status, fast_headers, fast_body), (slow_status, slow_headers, slow_body) = answers
    assert fast.wsgi_app.served == 1
    assert (fast_status, fast_body) == (slow_status, slow_body)
    assert fast_headers == slow_headers
    assert fast_headers["Cache-Status"].startswith("wallet-proxy; hit; ttl=")


@pytest.mark.parametrize("case", ["no auth", "wrong secret", "wrong scope", "bad sig", "if-none-match",
                                  "new query", "stale", "external id", "bad id"])
def test_everything_but_a_fresh_rendered_hit_falls_through(pair, clock, sessionm, case):
    fast, _ = pair
    client = fast.test_client()
    sig = sign("k", "user-1")
    url = f"/v1/wallets/user-1?sig={sig}"
    etag = client.get(url, headers=BASIC).headers["ETag"]
    headers, target = dict(BASIC), url
    if case == "no auth":
        headers = {}
    elif case == "wrong secret":
        headers = {"Authorization": "Bearer nope"}
    elif case == "wrong scope":
        headers = {"Authorization": "Bearer tg-secret"}
    elif case == "bad sig":
        target = "/v1/wallets/user-1?sig=00"
    elif case == "if-none-match":
        headers["If-None-Match"] = etag
    elif case == "new query":
        target = url + "&limit=1"
    elif case == "stale":
        clock.tick(61)
    elif case == "external id":  # a sig covers the id and its id_type
        target = f"/v1/wallets/user-1?sig={sign('k', 'user-1', 'external')}&id_type=external"
    elif case == "bad id":
        target = f"/v1/wallets/user-1%0A?sig={sig}"
    response = client.get(target, headers=headers)
    assert fast.wsgi_app.served == 0
    expected = {"no auth": 401, "wrong secret": 401, "wrong scope": 403, "bad sig": 403, "if-none-match": 304,
                "new query": 200, "stale": 200, "external id": 503, "bad id": 400}[case]
    assert response.status_code == expected  # (external ids need Core, not configured here: 503)


def test_fast_hits_are_logged_and_counted_like_the_route(pair, capsys):
    fast, _ = pair
    client = fast.test_client()
    url = f"/v1/wallets/user-1?sig={sign('k', 'user-1')}"
    client.get(url, headers=BASIC)
    capsys.readouterr()
    client.get(url, headers={**BASIC, "X-Request-ID": "rid-7"})
    assert fast.wsgi_app.served == 1
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (line,) = [entry for entry in lines if entry.get("logger") == "wallet_proxy.access"]
    assert line["request_id"] == "rid-7" and line["route"] == "/v1/wallets/<anypath:user_id>"
    assert line["status"] == 200 and line["cache"].startswith("wallet-proxy; hit") and line["client"] == "test"
    assert "user-1" not in json.dumps(line)
    metrics = client.get("/metrics", headers={"Authorization": "Bearer secret"}).get_data(as_text=True)
    assert 'wallet_proxy_cache_total{result="hit"} 1.0' in metrics
    assert ('wallet_proxy_requests_total{method="GET",route="/v1/wallets/<anypath:user_id>",status="200"} 2.0'
            in metrics)


def test_the_fast_path_route_is_the_real_rule(app):
    from wallet_proxy.wallet.fastpath import ROUTE

    assert ROUTE in {rule.rule for rule in app.url_map.iter_rules()}


def test_the_upstream_is_called_once_for_miss_then_fast_hits(pair, sessionm):
    fast, _ = pair
    client = fast.test_client()
    url = f"/v1/wallets/user-1?sig={sign('k', 'user-1')}"
    for _ in range(5):
        assert client.get(url, headers=BASIC).status_code == 200
    assert fast.wsgi_app.served == 4 and len(sessionm.calls(OFFERS_PATH)) == 1


def open_breaker(app):
    breaker = app.extensions["wallet_proxy"].wallets.breaker
    for _ in range(breaker.threshold):
        breaker.failure()


def test_breaker_open_503_is_the_same_answer_as_the_route(pair, sessionm):
    fast, slow = pair
    url = f"/v1/wallets/user-2?sig={sign('k', 'user-2')}"
    answers = []
    sessionm.on("POST", OFFERS_PATH, Reply(500, {}))
    for app in (fast, slow):
        client = app.test_client()
        assert client.get(url, headers=BASIC).status_code == 503  # nothing cached; the query is now known
        open_breaker(app)
        answers.append(answer(client, url, BASIC))
    assert fast.wsgi_app.served == 1
    assert answers[0] == answers[1]
    status, headers, body = answers[0]
    assert status == 503 and json.loads(body)["error"]["code"] == "upstream_unavailable"
    assert int(headers["Retry-After"]) >= 1


def test_breaker_open_still_serves_a_stale_copy_through_the_route(pair, sessionm, clock):
    fast, _ = pair
    client = fast.test_client()
    url = f"/v1/wallets/user-1?sig={sign('k', 'user-1')}"
    client.get(url, headers=BASIC)
    clock.tick(100)  # past the TTL, well inside the stale window
    open_breaker(fast)
    response = client.get(url, headers=BASIC)
    assert fast.wsgi_app.served == 0
    assert response.status_code == 200 and response.get_json()["stale"] is True


def test_overload_refusal_is_the_same_answer_as_the_route(pair):
    fast, slow = pair
    url = f"/v1/wallets/user-3?sig={sign('k', 'user-3')}"
    answers = []
    for app in (fast, slow):
        client = app.test_client()
        assert client.get(url, headers=BASIC).status_code == 200  # the query string is now known
        wallets = app.extensions["wallet_proxy"].wallets
        wallets.forget("user-3")  # and the next read a miss
        wallets.sleep = lambda seconds: None  # paced refusals: no need to wait for the turn here
        for _ in range(wallets.slots.size):  # every SessionM slot busy, and a call holds one long
            assert wallets.slots.take(float("inf"))
        wallets.slots.hold = 60.0
        answers.append(answer(client, url, BASIC))
    assert fast.wsgi_app.served == 1
    assert answers[0] == answers[1]
    status, headers, body = answers[0]
    assert status == 503 and "no slot" in json.loads(body)["error"]["message"]
    assert headers["Retry-After"] == "1" and headers["Cache-Control"] == "no-store"
    for app in (fast, slow):  # and counted as the route counts its error answers
        scrape = app.test_client().get("/metrics", headers={"Authorization": "Bearer secret"})
        text = scrape.get_data(as_text=True)
        (line,) = [n for n in text.splitlines() if n.startswith("wallet_proxy_errors_total{")]
        assert 'code="upstream_unavailable"' in line and line.endswith(" 1.0")
