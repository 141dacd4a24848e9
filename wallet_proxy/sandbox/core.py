"""SessionM Core simulator: external-id lookup (and tags, see below)."""
from __future__ import annotations

import hashlib

from flask import Blueprint, current_app, jsonify, request

bp = Blueprint("sandbox_core", __name__)


def seed_for_external(external_id: str) -> str:
    """A stable SessionM-style user id for an external id."""
    digest = hashlib.sha256(("ext:" + external_id).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


@bp.get("/priv/v1/apps/<api_key>/external/users/<path:external_id>")
def external_user(api_key, external_id):
    sim = current_app.config["SIM"]
    sim.count("external_user")
    if not request.headers.get("Authorization", "").startswith("Basic "):
        return jsonify(status="error", errors={"code": "unauthorized"}), 401
    if sim.fault_for(external_id) == "unknown":
        return jsonify(status="error", errors={"code": "user_not_found", "message": "User not found"}), 404
    return jsonify(status="ok", user={"id": seed_for_external(external_id), "external_id": external_id})
