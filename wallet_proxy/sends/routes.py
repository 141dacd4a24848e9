"""SessionM -> Braze triggered sends: `POST /v1/braze/trigger` and the Braze-compatible relay paths."""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from ..web.http import require, state
from .engine import check_key, invalid, plan_flat, plan_native

bp = Blueprint("trigger", __name__)


def _body():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise invalid({"body": ["must be a JSON object (Content-Type: application/json)"]})
    return body


def _run(plan, key):
    """Run a plan under the caller's key (namespaced by client) and render the outcome."""
    scoped = f"{g.client.name}:{key}" if key is not None else None
    outcome = state().trigger.run(plan, scoped)
    if outcome.error is not None:
        raise outcome.error
    response = jsonify(outcome.body)
    response.status_code = 201  # as Braze answers a trigger send
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/v1/braze/trigger")
@require("trigger", "braze")
def trigger():
    """Send SessionM's flat template fields as a Braze campaign or canvas trigger, at most once."""
    body = _body()
    plan = plan_flat(body)
    key = check_key(request.headers.get("Idempotency-Key") or body.get("message_id"))
    return _run(plan, key)


@bp.post("/campaigns/trigger/send")
@require("trigger", "braze")
def campaigns_trigger_send():
    """Relay Braze's own campaign trigger body with the real Braze key (SessionM's Braze variant)."""
    return _run(plan_native("campaign", _body()), check_key(request.headers.get("Idempotency-Key")))


@bp.post("/canvas/trigger/send")
@require("trigger", "braze")
def canvas_trigger_send():
    """Relay Braze's own canvas trigger body with the real Braze key (SessionM's Braze variant)."""
    return _run(plan_native("canvas", _body()), check_key(request.headers.get("Idempotency-Key")))
