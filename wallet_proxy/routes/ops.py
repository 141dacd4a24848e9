"""Operator routes: the index page, liveness and readiness."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..http import state

bp = Blueprint("ops", __name__)


@bp.get("/")
def index():
    """Say what this is and in which mode it runs (sandbox or live)."""
    services = state()
    settings = services.settings
    body = {
        "ok": True,
        "service": "wallet-proxy",
        "mode": "sandbox" if settings.sandbox else "live",
        "routes": {
            "wallet": "/v1/wallets/<user_id>",
            "tags": "/v1/users/<user_id>/tags",
            "trigger": "/v1/braze/trigger",
            "preview": "/preview",
            "openapi": "/openapi.json",
        },
        "configured": {"connect": settings.connect_configured, "core": settings.core_configured,
                       "braze": settings.braze_configured},
    }
    if settings.sandbox:
        body["sandbox"] = ("No SessionM or Braze settings: answering from built-in simulators. "
                           "Log in as demo:demo unless WALLET_PROXY_CLIENTS is set.")
    return jsonify(body)


@bp.get("/healthz")
def healthz():
    """The process is alive."""
    return jsonify(ok=True)


@bp.get("/readyz")
def readyz():
    """Ready while the service can answer; Redis down or breaker open only make it `degraded`."""
    services = state()
    checks = {"settings": "ok", "sessionm_breaker": services.wallets.breaker.state,
              "cache": services.store.name if services.store.healthy() else "fallback"}
    degraded = checks["sessionm_breaker"] != "closed" or checks["cache"] == "fallback"
    return jsonify(ok=True, status="degraded" if degraded else "ready", checks=checks)
