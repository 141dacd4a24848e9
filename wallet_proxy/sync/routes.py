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
from ..ids import ID_TYPES, check_id_type, check_user_id
from ..web.admission import check_wallet_signature, resolve_seed_id
from ..web.http import deadline, require, state

bp = Blueprint("sync", __name__)

BRAZE_SECONDS = 5.0  # then 429/503 + Retry-After: Braze retries the webhook rather than holding a worker
QUERY = ("id_type", "sig")


@bp.post("/v1/users/<anypath:user_id>/sync")
@require("sync", "braze")
def sync_user(user_id: str):
    """Sync one profile; 200 {"ok", "user_id", "attributes", "changed"} once Braze accepted."""
    check_user_id(user_id)
    unknown = sorted(set(request.args) - set(QUERY))
    if unknown:
        raise InvalidRequest(f"invalid query: {unknown[0][:40]}: unknown field",
                             details={name[:40]: ["Unknown field."] for name in unknown[:10]})
    id_type = check_id_type(request.args.get("id_type"))
    services = state()
    # the answer holds wallet data (points, offer ids, next expiry): signed like a wallet read
    check_wallet_signature(services.settings, user_id, request.args.get("sig"), id_type)
    if request.get_data(cache=True):  # a webhook may send a body; if it does, it must be {}
        if request.get_json() != {}:
            raise InvalidRequest("the body must be empty or {} (the user id is in the URL)",
                                 details={"_body": ["must be empty or {}"]})
    if not services.settings.connect_configured:
        raise NotConfigured("the connect settings are not configured on this deployment")
    seed_id = resolve_seed_id(services, user_id, id_type, deadline())
    planned = services.attribute_sync.sync_one(user_id, seed_id, deadline(),
                                               time.monotonic() + BRAZE_SECONDS)
    return jsonify(ok=True, user_id=user_id, attributes=planned.attributes, changed=planned.changed_names)


_ERROR = {"type": "object", "required": ["ok", "error"],
          "properties": {"ok": {"const": False}, "error": {"type": "object", "required": ["code", "message"]}}}
_RETRY = {"Retry-After": {"description": "seconds to wait before retrying",
                          "schema": {"type": "integer", "minimum": 1}}}


def _answer(description: str, schema=None, headers=None) -> dict:
    answer = {"description": description, "content": {"application/json": {"schema": schema or _ERROR}}}
    return {**answer, "headers": headers} if headers else answer


sync_user.openapi = {"post": {
    "summary": "Write a user's loyalty data to their Braze profile (Braze webhook or SessionM target)",
    "parameters": [{"in": "query", "name": "id_type", "required": False,
                    "schema": {"type": "string", "enum": list(ID_TYPES), "default": "seed"},
                    "description": "`external`: the id is the customer's external id (resolved through Core); "
                                   "the Braze profile is always external_id = the id in the URL"},
                   {"in": "query", "name": "sig", "required": False,
                    "schema": {"type": "string", "maxLength": 128},
                    "description": "required when WALLET_PROXY_SIGNING_KEY is set: hex HMAC-SHA256 of the id "
                                   "(of `external/<id>` with id_type=external), as for wallet reads"}],
    "requestBody": {"required": False, "description": "empty, or {}",
                    "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}}},
    "responses": {
        "200": _answer("Braze accepted the changed attributes (or nothing had changed)", {
            "type": "object", "required": ["ok", "user_id", "attributes", "changed"],
            "properties": {
                "ok": {"const": True}, "user_id": {"type": "string"},
                "attributes": {"type": "object", "properties": {
                    "sessionm_available_points": {"type": ["number", "null"]},
                    "sessionm_offer_count": {"type": "integer"},
                    "sessionm_next_expiry": {"type": ["string", "null"], "format": "date-time"},
                    "sessionm_offer_ids": {"type": "array", "maxItems": 25, "items": {"type": "string"}}}},
                "changed": {"type": "array", "items": {"type": "string"},
                            "description": "attributes written this time (empty: Braze already had them)"}}}),
        "403": _answer("`bad_signature`: signing is on and `sig` is missing or wrong for this id and "
                       "id_type; or `forbidden` (scope)"),
        "404": _answer("SessionM does not know the user"),
        "422": _answer("Braze refused the profile's attributes (not retried)"),
        "429": _answer("Braze's /users/track budget is spent", headers=_RETRY),
        "502": _answer("an upstream answered something unusable, or refused this service's key"),
        "503": _answer("Braze or SessionM down; or `not_configured`", headers=_RETRY),
        "504": _answer("an upstream did not answer in time (safe to retry)"),
    }}}
