"""SessionM Core simulator: external-id lookup and user tags (kept in SimState.tags)."""
from __future__ import annotations

import hashlib

from flask import Blueprint, current_app, jsonify, request

from .faults import delay_headers, fault_response, latency_for, refuse_without_basic

bp = Blueprint("sandbox_core", __name__)


def seed_for_external(external_id: str) -> str:
    """A stable SessionM-style user id for an external id."""
    digest = hashlib.sha256(("ext:" + external_id).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


def _refuse_external(sim, name: str, external_id: str):
    """Count the call; refuse it without Basic credentials, or with a 404 for an unknown customer."""
    refused = refuse_without_basic(sim, name)
    if refused:
        return refused
    if sim.fault_for(external_id) == "unknown":
        return jsonify(status="error", errors={"code": "user_not_found", "message": "User not found"}), 404
    return None


@bp.get("/priv/v1/apps/<api_key>/external/users/<path:external_id>")
def external_user(api_key, external_id):
    sim = current_app.config["SIM"]
    return _refuse_external(sim, "external_user", external_id) or jsonify(
        status="ok", user={"id": seed_for_external(external_id), "external_id": external_id})


def _add_tags(sim, user_id: str):
    """Validate a tags body as Core would, apply the user id's fault, store the tags in SimState.tags."""
    body = request.get_json(silent=True)
    tags = body.get("tags") if isinstance(body, dict) else None
    ttl = body.get("ttl") if isinstance(body, dict) else None
    if (not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags)
            or (ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0))):
        return jsonify(status="error", errors={"code": "invalid_request",
                                               "message": "tags must be a non-empty list of strings"}), 400
    fault = sim.fault_for(user_id)
    headers = delay_headers(latency_for(sim, fault))
    if fault == "unknown":
        return jsonify(status="error", errors={"code": "user_not_found", "message": "User not found"}), 200
    answer = fault_response(fault, latency_for(sim, fault))
    if answer is not None:
        return answer
    # Core's tags expire after ttl seconds; the simulator keeps the expiry so a demo can show it.
    expires = sim.clock() + ttl if ttl else None
    # dict.setdefault and item assignment are atomic under the GIL: no lock needed for a simulator.
    held = sim.tags.setdefault(user_id, {})
    for tag in tags:
        held[tag] = expires
    return jsonify(status="ok", user={"id": user_id, "tags": sorted(held)}), 200, headers


@bp.post("/priv/v1/apps/<api_key>/users/<path:user_id>/tags")
def user_tags(api_key, user_id):
    sim = current_app.config["SIM"]
    return refuse_without_basic(sim, "user_tags") or _add_tags(sim, user_id)


@bp.post("/priv/v1/apps/<api_key>/external/users/<path:external_id>/tags")
def external_user_tags(api_key, external_id):
    sim = current_app.config["SIM"]
    return (_refuse_external(sim, "external_user_tags", external_id)
            or _add_tags(sim, seed_for_external(external_id)))
