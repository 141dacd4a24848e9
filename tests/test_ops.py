"""Operator routes: /healthz, /readyz (200 even when degraded, with reasons)."""
from __future__ import annotations

import base64

import pytest

from tests.conftest import OFFERS_PATH, make_settings
from tests.fakes import Reply
from wallet_proxy.settings import parse

WALLET = {"Authorization": "Basic " + base64.b64encode(b"braze:bz-secret").decode()}


def test_healthz_is_open(client):
    assert client.get("/healthz").get_json() == {"ok": True}


def test_ready_reports_settings_groups_and_breaker(client):
    body = client.get("/readyz").get_json()
    assert body["status"] == "ready" and "problems" not in body
    checks = body["checks"]
    assert checks["settings"] == "ok" and checks["mode"] == "live" and checks["clients"] == 4
    assert checks["groups"] == {"connect": True, "core": True, "braze": False}
    assert checks["sessionm_breaker"] == "closed" and checks["cache"] == "memory" and "redis" not in checks


def test_open_breaker_is_degraded_but_still_200(sessionm, app_for):
    client = app_for(make_settings(sessionm.url, WALLET_PROXY_BREAKER_FAILURES="1")).test_client()
    sessionm.on("POST", OFFERS_PATH, Reply(500, {"status": "error"}))
    assert client.get("/v1/wallets/u1", headers=WALLET).status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "degraded"
    assert ready.get_json()["problems"] == ["SessionM circuit breaker is open"]


def test_no_clients_is_degraded_and_says_why(sessionm, app_for):
    settings = make_settings(sessionm.url).with_overrides(clients=())
    body = app_for(settings).test_client().get("/readyz").get_json()
    assert body["status"] == "degraded"
    assert "WALLET_PROXY_CLIENTS" in body["problems"][0]


@pytest.mark.redis
def test_reachable_redis_is_ready(sessionm, app_for, redis_url):
    app = app_for(make_settings(sessionm.url, WALLET_PROXY_REDIS_URL=redis_url))
    body = app.test_client().get("/readyz").get_json()
    assert body["status"] == "ready"
    assert body["checks"]["redis"] == "ok" and body["checks"]["cache"] == "redis"


def test_sandbox_mode_is_said(app_for):
    body = app_for(parse({})).test_client().get("/readyz").get_json()
    assert body["checks"]["mode"] == "sandbox" and body["status"] == "ready"
