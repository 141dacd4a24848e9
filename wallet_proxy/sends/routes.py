"""SessionM -> Braze triggered sends: `POST /v1/braze/trigger` and the Braze-compatible relay paths."""
from __future__ import annotations

import functools
import logging

from flask import Blueprint, g, jsonify, request

from ..errors import InvalidRequest
from ..ids import check_flag
from ..web.http import require, state
from ..web.logs import hash_user_id
from .engine import dry_run
from .plan import MAX_RECIPIENTS, check_key, invalid, plan_flat, plan_native, spelt_as, split_dry_run

bp = Blueprint("trigger", __name__)
log = logging.getLogger("wallet_proxy.sends")


def _body():
    body = request.get_json(lists={"recipients": MAX_RECIPIENTS})  # counted before it is read in depth
    if not isinstance(body, dict):
        raise invalid({"body": ["must be a JSON object (Content-Type: application/json)"]})
    return body


def _query_dry_run() -> bool:
    """`?dry_run=1` / `?dry_run=0`; anything else (blank, `true`) is a 400, never a send.

    The body takes any spelling of dry_run as the flag; in the query another spelling (`?dryRun=1`)
    is a 400 too, not an unknown parameter ignored into a real send."""
    misspelt = [name for name in request.args if name != "dry_run" and spelt_as(name, "dry_run")]
    if misspelt:
        name = misspelt[0][:40]
        raise InvalidRequest(f"invalid query: {name}: unknown field; the flag is spelt dry_run (1 or 0)",
                             details={name: ["Unknown field: the flag is spelt dry_run (1 or 0)."]})
    return check_flag("dry_run", request.args.get("dry_run"))


def _key(body: dict, flat: bool) -> str | None:
    """The caller's idempotency key: the header, else (flat door) `message_id`; blank or null is a 400."""
    header = request.headers.get("Idempotency-Key")
    if header is not None:
        return check_key(header, "idempotency_key")
    if flat:  # any spelling the flat door normalises to message_id (`messageId`, "Message Id")
        names = [k for k in body if spelt_as(k, "message_id")]
        if names:
            return check_key(body[names[0]], "message_id")
    return None


def _send(plan_for, flat: bool, budget: float | None = None):
    """Validate, then answer a dry run or run the plan under the caller's key (namespaced by client)."""
    body, dry = split_dry_run(_body(), _query_dry_run())
    key = _key(body, flat)
    plan = plan_for(body)
    if plan.dropped_fields:
        log.warning("dropped %s from a trigger body: never forwarded to Braze",
                    ", ".join(plan.dropped_fields))
    if dry:
        return jsonify(dry_run(plan)), 200
    scoped = f"{g.client.name}:{key}" if key is not None else None
    outcome = state().trigger.run(plan, scoped, budget)
    status = outcome.error.status if outcome.error is not None else 201
    # One line per trigger: the key's hash and Braze's dispatch ids trace a SessionM message to Braze.
    fields = {"request_id": g.get("request_id"), "idempotency_key": hash_user_id(scoped) if scoped else None,
              "dispatch_ids": ",".join(outcome.dispatch_ids) or None, "chunks": len(plan.sizes),
              "duplicates_dropped": plan.duplicates_dropped or None, "replayed": outcome.replayed or None}
    log.info("trigger %s %s", plan.kind, status, extra={k: v for k, v in fields.items() if v is not None})
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
    return _send(plan_flat, flat=True)


# Every answer under these paths is Braze-shaped (web/http.py: the Braze-compatible door).
@bp.post("/campaigns/trigger/send")
@require("trigger", "braze")
def campaigns_trigger_send():
    """Relay Braze's own campaign trigger body with the real Braze key (SessionM's Braze variant)."""
    return _send(functools.partial(plan_native, "campaign"), flat=False, budget=state().settings.relay_budget)


@bp.post("/canvas/trigger/send")
@require("trigger", "braze")
def canvas_trigger_send():
    """Relay Braze's own canvas trigger body with the real Braze key (SessionM's Braze variant)."""
    return _send(functools.partial(plan_native, "canvas"), flat=False, budget=state().settings.relay_budget)
