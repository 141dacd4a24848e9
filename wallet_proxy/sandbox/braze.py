"""Braze simulator: `campaigns/trigger/send` and `canvas/trigger/send`, validating as Braze does."""
from __future__ import annotations

import hashlib

from flask import Blueprint, current_app, jsonify, request

bp = Blueprint("sandbox_braze", __name__)

MAX_RECIPIENTS = 50  # Braze: at most 50 recipients per trigger call


def _fault(sim, body: dict):
    """The fault this call plays: the global one, else the one named by the first recipient's id prefix."""
    recipients = body.get("recipients") if isinstance(body.get("recipients"), list) else []
    first = recipients[0] if recipients and isinstance(recipients[0], dict) else {}
    return sim.fault_for(str(first.get("external_user_id") or ""))


def _send(kind: str):
    sim = current_app.config["SIM"]
    sim.count(f"braze_{kind}")
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return jsonify(message="Invalid API key"), 401
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(message="Request body must be a JSON object"), 400
    own, other = ("campaign_id", "canvas_id") if kind == "campaign" else ("canvas_id", "campaign_id")
    if not body.get(own) or other in body:
        return jsonify(message=f"Exactly one {own} is required"), 400
    recipients = body.get("recipients")
    if body.get("broadcast") is True and recipients:
        return jsonify(message="Cannot specify recipients when broadcast is true"), 400
    if recipients is not None and (not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS):
        return jsonify(message=f"recipients must be an array of at most {MAX_RECIPIENTS} objects"), 400
    if not recipients and body.get("broadcast") is not True and "audience" not in body:
        return jsonify(message="Either recipients, audience or broadcast is required"), 400
    fault = _fault(sim, body)
    if fault == "fault-500":
        return jsonify(message="Internal Server Error"), 500
    if fault == "fault-429":
        return jsonify(message="Rate limit exceeded"), 429, {"Retry-After": "2"}
    if fault == "fault-timeout":
        return jsonify(message="success"), 201, {"X-Sandbox-Delay": "30"}
    sim.count("braze_sent")
    digest = hashlib.sha256(repr((kind, sim.calls[f"braze_{kind}"], body.get(own))).encode()).hexdigest()
    headers = {"X-Sandbox-Delay": str(sim.latency)} if sim.latency else {}
    return jsonify(dispatch_id=digest[:32], message="success"), 201, headers


@bp.post("/campaigns/trigger/send")
def campaigns_trigger_send():
    return _send("campaign")


@bp.post("/canvas/trigger/send")
def canvas_trigger_send():
    return _send("canvas")
