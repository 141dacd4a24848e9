"""POST /v1/users/<id>/sync: write a user's loyalty data to their Braze profile (webhook target).

A Braze webhook campaign (or SessionM) calls it; as for the tags relay, a 2xx only once Braze accepted
the attributes, a 400 for a bad request (nothing sent), 404 when SessionM does not know the user,
422 when Braze refused the attributes (not retried), 429/503 with Retry-After when Braze or SessionM
is throttling or down (Braze retries those), 504 when an upstream did not answer in time.
"""
from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from ..errors import InvalidRequest, NotConfigured
from ..ids import check_user_id
from ..web.http import deadline, require, state

bp = Blueprint("sync", __name__)

ID_TYPES = ("seed", "user_id", "external")
BRAZE_SECONDS = 5.0  # then 429/503 + Retry-After: Braze retries the webhook rather than holding a worker


@bp.post("/v1/users/<anypath:user_id>/sync")
@require("sync", "braze")
def sync_user(user_id: str):
    """Sync one profile; 200 {"ok", "user_id", "attributes", "changed"} once Braze accepted."""
    check_user_id(user_id)
    unknown = sorted(set(request.args) - {"id_type"})
    if unknown:
        raise InvalidRequest(f"invalid query: {unknown[0][:40]}: unknown field",
                             details={name[:40]: ["Unknown field."] for name in unknown[:10]})
    id_type = request.args.get("id_type", "seed")
    if id_type not in ID_TYPES:
        raise InvalidRequest("invalid query: id_type: must be one of seed, user_id, external",
                             details={"id_type": ["Must be one of: seed, user_id, external."]})
    if request.get_data(cache=True):  # a webhook may send a body; if it does, it must be {}
        body = request.get_json(force=True, silent=True)
        if body != {}:
            raise InvalidRequest("the body must be empty or {} (the user id is in the URL)",
                                 details={"_body": ["must be empty or {}"]})
    services = state()
    if not services.settings.connect_configured:
        raise NotConfigured("the connect settings are not configured on this deployment")
    seed_id = user_id
    if id_type == "external":
        if services.external_ids is None:
            raise NotConfigured("id_type=external needs the SessionM Core settings")
        seed_id = services.external_ids.resolve(user_id, max(0.05, deadline() - time.monotonic()))
    planned = services.attribute_sync.sync_one(user_id, seed_id, deadline(),
                                               time.monotonic() + BRAZE_SECONDS)
    return jsonify(ok=True, user_id=user_id, attributes=planned.attributes, changed=planned.changed_names)
