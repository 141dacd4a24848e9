"""GET /metrics: requests, latency, cache results, coalescing, upstream calls, breaker, Redis fallback."""
from __future__ import annotations

import base64
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OFFERS_PATH, ROOT, fixture_json, free_port, make_settings, need
from tests.fakes import Reply

ADMIN = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode()}
WALLET = {"Authorization": "Basic " + base64.b64encode(b"braze:bz-secret").decode()}
TAGGER = {"Authorization": "Basic " + base64.b64encode(b"tagger:tg-secret").decode()}
WALLET_RULE = "/v1/wallets/<anypath:user_id>"


def samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(client, headers=ADMIN) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.get_data(as_text=True))


class TestAccess:
    def test_needs_the_admin_scope(self, client):
        assert client.get("/metrics").status_code == 401
        forbidden = client.get("/metrics", headers=WALLET)
        assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "forbidden"
        assert client.get("/metrics", headers=ADMIN).status_code == 200

    def test_public_metrics_opens_it(self, sessionm, app_for):
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_PUBLIC_METRICS="1"))
        assert app.test_client().get("/metrics").status_code == 200


class TestRequests:
    def test_counted_by_route_template_never_raw_path(self, client):
        for user in ("alice", "bob", "carol"):
            assert client.get(f"/v1/wallets/{user}", headers=WALLET).status_code == 200
        client.get("/v1/wallets/alice")  # 401
        client.get("/no/such/secret-looking/path")  # 404
        text = client.get("/metrics", headers=ADMIN).get_data(as_text=True)
        found = samples(text)
        assert value(found, "wallet_proxy_requests_total", route=WALLET_RULE, method="GET", status="200") == 3
        assert value(found, "wallet_proxy_requests_total", route=WALLET_RULE, method="GET", status="401") == 1
        assert value(found, "wallet_proxy_requests_total", route="<unmatched>", method="GET",
                     status="404") == 1
        assert "alice" not in text and "secret-looking" not in text
        assert value(found, "wallet_proxy_request_duration_seconds_count", route=WALLET_RULE,
                     method="GET") == 4
        assert value(found, "wallet_proxy_request_duration_seconds_bucket", route=WALLET_RULE, method="GET",
                     le="+Inf") == 4

    def test_every_registered_route_is_counted(self, app):
        """Routes added by any blueprint are counted with no code of their own (after_request hook)."""
        client = app.test_client()
        rules = [r for r in app.url_map.iter_rules() if "<" not in r.rule]
        for rule in rules:
            method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
            client.open(rule.rule, method=method, headers=ADMIN, json={})
        found = scrape(client)
        for rule in rules:
            method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
            counted = sum(v for (name, labels), v in found.items()
                          if name == "wallet_proxy_requests_total"
                          and ("route", rule.rule) in labels and ("method", method) in labels)
            assert counted >= 1, f"{method} {rule.rule} was not counted"


class TestCache:
    def test_hit_miss_and_stale(self, client, sessionm, clock):
        client.get("/v1/wallets/u1", headers=WALLET)  # miss
        client.get("/v1/wallets/u1", headers=WALLET)  # hit
        sessionm.on("POST", OFFERS_PATH, Reply(500, {"status": "error"}))
        clock.tick(120)  # past the 60 s TTL and the 10 s SWR window, inside the stale window
        stale = client.get("/v1/wallets/u1", headers=WALLET)
        assert stale.get_json()["stale"] is True
        found = scrape(client)
        assert value(found, "wallet_proxy_cache_total", result="miss") == 1
        assert value(found, "wallet_proxy_cache_total", result="hit") == 1
        assert value(found, "wallet_proxy_cache_total", result="stale_if_error") == 1

    def test_on_error_empty_counts_as_error(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(500, {"status": "error"}))
        assert client.get("/v1/wallets/u2?on_error=empty", headers=WALLET).status_code == 200
        assert value(scrape(client), "wallet_proxy_cache_total", result="error") == 1


class TestUpstream:
    def test_sessionm_calls_by_outcome(self, client, sessionm):
        client.get("/v1/wallets/ok-user", headers=WALLET)
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
        client.get("/v1/wallets/nobody", headers=WALLET)
        sessionm.on("POST", OFFERS_PATH, Reply(200, b"<html>oops</html>"))
        client.get("/v1/wallets/garbage", headers=WALLET)
        found = scrape(client)
        for outcome in ("ok", "user_not_found", "upstream_error"):
            assert value(found, "wallet_proxy_upstream_calls_total", upstream="sessionm",
                         outcome=outcome) == 1
            assert value(found, "wallet_proxy_upstream_duration_seconds_count", upstream="sessionm",
                         outcome=outcome) == 1

    def test_core_calls_counted_without_the_client_reporting(self, client, sessionm):
        sessionm.on("POST", r"/priv/v1/apps/.*/tags$", Reply(200, {"status": "ok"}))
        assert client.post("/v1/users/u1/tags", json={"tags": ["vip"]}, headers=TAGGER).status_code == 200
        sessionm.on("POST", r"/priv/v1/apps/.*/tags$", Reply(503, {"status": "error"}))
        assert client.post("/v1/users/u1/tags", json={"tags": ["vip"], "ttl": 60},  # a counter tag would be 409
                           headers=TAGGER).status_code == 503
        found = scrape(client)
        assert value(found, "wallet_proxy_upstream_calls_total", upstream="sessionm_core", outcome="ok") == 1
        assert value(found, "wallet_proxy_upstream_calls_total", upstream="sessionm_core",
                     outcome="http_5xx") == 1

    def test_coalesced_waits(self, sessionm, app_for, live):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json"), delay=0.4))
        url = live(app_for(make_settings(sessionm.url)))
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: requests.get(f"{url}/v1/wallets/same", headers=WALLET,
                                                         timeout=5).status_code, range(6)))
        assert codes == [200] * 6
        assert len(sessionm.calls(OFFERS_PATH)) == 1
        found = samples(requests.get(f"{url}/metrics", headers=ADMIN, timeout=5).text)
        assert value(found, "wallet_proxy_coalesced_total") == 5
        assert value(found, "wallet_proxy_cache_total", result="miss") == 6

    def test_breaker_state(self, sessionm, app_for):
        app = app_for(make_settings(sessionm.url, WALLET_PROXY_BREAKER_FAILURES="2"))
        client = app.test_client()
        assert value(scrape(client), "wallet_proxy_sessionm_breaker_state") == 0
        sessionm.on("POST", OFFERS_PATH, Reply(500, {"status": "error"}))
        client.get("/v1/wallets/a", headers=WALLET)
        client.get("/v1/wallets/b", headers=WALLET)
        assert value(scrape(client), "wallet_proxy_sessionm_breaker_state") == 2


class TestRedisFallback:
    def test_unreachable_redis_is_counted_and_degrades_readyz(self, sessionm, app_for):
        dead = f"redis://127.0.0.1:{free_port()}/0"
        client = app_for(make_settings(sessionm.url, WALLET_PROXY_REDIS_URL=dead)).test_client()
        assert client.get("/v1/wallets/u1", headers=WALLET).status_code == 200  # served from memory
        found = scrape(client)
        assert value(found, "wallet_proxy_cache_fallback_total") == 1
        assert value(found, "wallet_proxy_cache_degraded") == 1
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.get_json()
        assert body["status"] == "degraded" and body["checks"]["redis"] == "unreachable"


@pytest.mark.redis
def test_gunicorn_workers_share_one_set_of_counters(redis_url, tmp_path):
    """Under several gunicorn workers, every scrape (whichever worker answers) sums all workers."""
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    need("gunicorn", gunicorn is not None)
    port = free_port()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_", "PROMETHEUS_"))}
    env.update(PORT=str(port), WEB_CONCURRENCY="2", WALLET_PROXY_REDIS_URL=redis_url,
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), WALLET_PROXY_SANDBOX="1")
    proc = subprocess.Popen([gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        # Wait until both workers have booted (each writes its own files), so requests spread.
        while len({p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("*.db")}) < 2:
            try:
                requests.get(f"{base}/healthz", timeout=2, headers={"Connection": "close"})
            except requests.RequestException:
                time.sleep(0.1)
            assert time.monotonic() < deadline, "the second worker never answered"
        before = value(samples(requests.get(f"{base}/metrics", auth=("demo", "demo"), timeout=5).text),
                       "wallet_proxy_requests_total", route="/healthz", method="GET", status="200")
        for _ in range(40):
            requests.get(f"{base}/healthz", timeout=2, headers={"Connection": "close"})
        for _ in range(6):
            found = samples(requests.get(f"{base}/metrics", auth=("demo", "demo"), timeout=5,
                                         headers={"Connection": "close"}).text)
            assert value(found, "wallet_proxy_requests_total", route="/healthz", method="GET",
                         status="200") == before + 40
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


class TestErrorCodes:
    """wallet_proxy_errors_total: error answers by route and the JSON body's error.code."""

    def test_each_error_answer_is_counted_by_its_code(self, client, sessionm):
        sessionm.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.user_not_found.json")))
        assert client.get("/v1/wallets/nobody", headers=WALLET).status_code == 404
        assert client.get("/v1/wallets/nobody").status_code == 401
        found = scrape(client)
        route = "/v1/wallets/<anypath:user_id>"
        assert value(found, "wallet_proxy_errors_total", route=route, code="user_not_found") == 1
        assert value(found, "wallet_proxy_errors_total", route=route, code="unauthorized") == 1

    def test_a_trigger_whose_outcome_is_unknown_is_counted(self, app_for, braze):
        braze.on("POST", "/campaigns/trigger/send", Reply(201, {"dispatch_id": "late"}, delay=0.8))
        app = app_for(make_settings(braze_url=braze.url), braze_options={"timeout": 0.3})
        client = app.test_client()
        answer = client.post("/v1/braze/trigger", json={"campaign_id": "c", "external_user_id": "u"},
                             headers={"Authorization": "Bearer secret"})
        assert answer.status_code == 504 and answer.get_json()["error"]["code"] == "outcome_unknown"
        found = scrape(client)
        assert value(found, "wallet_proxy_errors_total", route="/v1/braze/trigger", code="outcome_unknown") == 1

    def test_a_code_outside_the_declared_ones_is_other(self):
        from wallet_proxy.web.metrics import Metrics

        metrics = Metrics()
        metrics.error("/x", "made-up")
        assert metrics.registry.get_sample_value("wallet_proxy_errors_total",
                                                 {"route": "/x", "code": "other"}) == 1
