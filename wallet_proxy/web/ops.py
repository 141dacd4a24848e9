"""Operator routes: the index page, liveness, readiness, metrics and the OpenAPI document."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..version import __version__
from .http import client_address, state
from .metrics import refresh_gauges
from .openapi import build_spec

bp = Blueprint("ops", __name__)


@bp.get("/")
def index():
    """Say what this is and in which mode it runs (sandbox or live)."""
    services = state()
    settings = services.settings
    body = {
        "ok": True,
        "service": "wallet-proxy",
        "version": __version__,
        "mode": "sandbox" if settings.sandbox else "live",
        "routes": {
            "wallet": "/v1/wallets/<user_id>",
            "tags": "/v1/users/<user_id>/tags",
            "trigger": "/v1/braze/trigger",
            "preview": "/preview",
            "openapi": "/openapi.json",
            "health": "/healthz",
            "ready": "/readyz",
            "metrics": "/metrics",
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
    """Ready while the service can answer; Redis down or breaker open only make it `degraded`.

    Always 200: pulling every instance from the load balancer because SessionM or Redis is down
    would turn a degraded service (stale wallets, `on_error=empty`) into no service at all.
    """
    services = state()
    settings = services.settings
    checks = {
        "settings": "ok",  # Settings.from_env refused to start otherwise
        "mode": "sandbox" if settings.sandbox else "live",
        "groups": {"connect": settings.connect_configured, "core": settings.core_configured,
                   "braze": settings.braze_configured},
        "clients": len(settings.clients),
        "sessionm_breaker": services.wallets.breaker.state,
        "cache": services.store.name if services.store.healthy() else "fallback",
    }
    problems = []
    if not settings.clients:
        problems.append("no clients configured (WALLET_PROXY_CLIENTS): API routes answer 401")
    if checks["sessionm_breaker"] != "closed":
        problems.append(f"SessionM circuit breaker is {checks['sessionm_breaker']}")
    if checks["cache"] == "fallback":
        problems.append("Redis failing: serving from the in-process cache")
    redis_client = getattr(services, "redis", None)
    if redis_client is not None:
        try:
            redis_client.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # any Redis trouble is a degradation, never a failed probe
            checks["redis"] = "unreachable"
            problems.append(f"Redis unreachable ({type(exc).__name__})")
    body = {"ok": True, "status": "degraded" if problems else "ready", "checks": checks}
    if problems:
        body["problems"] = problems
    return jsonify(body)


@bp.get("/metrics")
def metrics():
    """Prometheus text of every counter, by route and status (`metrics` or `admin` scope unless public)."""
    services = state()
    if not services.settings.public_metrics:
        g.client = services.gate.admit(request.headers.get("Authorization"), "metrics", client_address())
    refresh_gauges(services.metrics, services)  # the states as of this scrape
    data, content_type = services.metrics.exposition()
    return Response(data, mimetype=None, content_type=content_type,
                    headers={"Cache-Control": "no-store"})


metrics.required_scope = "metrics"  # `metrics` or `admin`; WALLET_PROXY_PUBLIC_METRICS=1 opens it


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 document of this API, generated from the app's routes and schemas."""
    services = state()
    spec = services.openapi
    if spec is None:  # built once per app, after every blueprint is registered
        spec = services.openapi = build_spec(current_app)
    response = jsonify(spec)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
