"""SessionM Core simulator: external-id lookup and user tags (kept in SimState.tags, counted as Core does)."""
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
    """Validate a tags body as Core would, apply the user id's fault, apply the tags to SimState.tags.

    Core answers errors inside HTTP 200 with a code, upper case in SessionM's table and lower case in
    its example (https://docs.sessionm.com/developer/APIs/Core/Overview/overview_statuses_errors.htm):
    the simulator sends both, so the service must compare them case-insensitively.
    """
    body = request.get_json(silent=True)
    tags = body.get("tags") if isinstance(body, dict) else None
    ttl = body.get("ttl") if isinstance(body, dict) else None
    if not isinstance(tags, list) or not tags:
        return jsonify(status="error", errors={"code": "MISSING_DATA", "message": "tags is required"}), 200
    if (not all(isinstance(t, str) and t for t in tags)
            or (ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0))):
        return jsonify(status="error", errors={"code": "argument_error",
                                               "message": "tags must be strings, ttl positive seconds"}), 200
    fault = sim.fault_for(user_id)
    headers = delay_headers(latency_for(sim, fault))
    if fault == "unknown":
        return jsonify(status="error", errors={"code": "USER_NOT_FOUND", "message": "User not found"}), 200
    if fault == "fault-invalid":
        return jsonify(status="error", errors={"code": "validation", "message": "Invalid tag"}), 200, headers
    answer = fault_response(fault, latency_for(sim, fault))
    if fault in ("fault-timeout", "fault-slow") or answer is None:
        # A slow or hung answer still lands: Core counts the tags; only the answer is late or lost.
        held = apply_tags(sim, user_id, tags, ttl)
    if answer is not None:
        return answer
    return jsonify(status="ok", user={"id": user_id, "tags": sorted(held)}), 200, headers


def apply_tags(sim, user_id: str, tags: list, ttl: int | None) -> dict:
    """Apply one tags call as Core does; return the user's tags.

    https://docs.sessionm.com/developer/APIs/Core/Customers/customers_tags.htm: without a TTL a tag is a
    counter, created at 1 and incremented by one on each call; with a TTL it is an expiring tag with no
    count, set to expire `ttl` seconds from now (sending it again renews it). A tag has a count or a
    TTL, not both: the last call decides which (the page is silent on switching kinds).
    """
    now = sim.clock()
    with sim.lock:
        held = sim.tags.setdefault(user_id, {})
        for tag, state in list(held.items()):
            if state.get("expires_at") is not None and state["expires_at"] <= now:
                del held[tag]  # expired tags disappear
        for tag in tags:
            if ttl:
                held[tag] = {"expires_at": now + ttl}
            else:
                previous = held.get(tag) or {}
                held[tag] = {"count": previous.get("count", 0) + 1}
        return dict(held)


@bp.post("/priv/v1/apps/<api_key>/users/<path:user_id>/tags")
def user_tags(api_key, user_id):
    sim = current_app.config["SIM"]
    return refuse_without_basic(sim, "user_tags") or _add_tags(sim, user_id)


@bp.post("/priv/v1/apps/<api_key>/external/users/<path:external_id>/tags")
def external_user_tags(api_key, external_id):
    sim = current_app.config["SIM"]
    return (_refuse_external(sim, "external_user_tags", external_id)
            or _add_tags(sim, seed_for_external(external_id)))
