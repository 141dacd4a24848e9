"""Braze simulator: `campaigns/trigger/send` and `canvas/trigger/send`, answering as Braze documents.

- every answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch seconds of the end of the
  hourly window) — https://braze.com/docs/api/api_limits;
- errors are `{"message", "errors"}`; success is `201 {"dispatch_id", "message": "success"}`
  — https://braze.com/docs/api/errors;
- recipients are checked as Braze checks them: at most 50, exactly one of `external_user_id`,
  `user_alias`, `braze_id`, `email`; `prioritization` with `email`; `send_to_existing_only: false` needs
  `attributes` and is refused with `user_alias` — https://braze.com/docs/api/objects_filters/recipient_object;
- properties objects at most 50 KB — https://braze.com/docs/api/objects_filters/trigger_properties_object;
- a canvas whose id starts `paused-` or `archived-` answers 201 with a `notice`: nothing is sent.
Faults by the first recipient's id prefix (or the global fault): `fault-500`, `fault-429` (the window
spent: `Remaining: 0`, `Reset` 2 s ahead), `fault-timeout`.
"""
from __future__ import annotations

import hashlib
import threading

from flask import Blueprint, current_app, jsonify, request

from ..braze_limits import IDENTIFIERS, RECIPIENTS_PER_CALL, properties_problem

bp = Blueprint("sandbox_braze", __name__)

MAX_RECIPIENTS = RECIPIENTS_PER_CALL  # Braze: at most 50 recipients per trigger call
HOURLY_LIMIT = 250_000
PROPERTY_FIELDS = ("trigger_properties", "context", "canvas_entry_properties")
NOTICES = {
    "paused-": "The Canvas is paused. Resume the Canvas to ensure trigger requests will take effect.",
    "archived-": "The Canvas is archived. Unarchive the Canvas to ensure trigger requests will take effect.",
}
_lock = threading.Lock()


def _rate_headers(sim, spent: bool = False) -> dict:
    """Braze's rate-limit headers: this hour's window, counted per simulator."""
    now = sim.clock()
    window = int(now // 3600)
    with _lock:
        counted = current_app.extensions.setdefault("sandbox_braze_window", {})
        used = counted.get(window, 0) + 1
        counted.clear()
        counted[window] = used
    if spent:
        return {"X-RateLimit-Limit": str(HOURLY_LIMIT), "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(now) + 2)}
    return {"X-RateLimit-Limit": str(HOURLY_LIMIT), "X-RateLimit-Remaining": str(max(0, HOURLY_LIMIT - used)),
            "X-RateLimit-Reset": str((window + 1) * 3600)}


def _error(sim, status: int, message: str, errors=(), spent: bool = False):
    return jsonify(message=message, errors=list(errors)), status, _rate_headers(sim, spent)


def _fault(sim, body: dict):
    """The fault this call plays: the global one, else the one named by the first recipient's id prefix."""
    recipients = body.get("recipients") if isinstance(body.get("recipients"), list) else []
    first = recipients[0] if recipients and isinstance(recipients[0], dict) else {}
    return sim.fault_for(str(first.get("external_user_id") or ""))


def _too_big(value) -> bool:
    return properties_problem(value) is not None


def _recipient_problems(recipients: list) -> list[str]:
    problems = []
    for index, recipient in enumerate(recipients):
        if not isinstance(recipient, dict):
            problems.append(f"recipients[{index}] must be an object")
            continue
        given = [name for name in IDENTIFIERS if name in recipient]
        if len(given) != 1:
            problems.append(f"recipients[{index}] must have exactly one of {', '.join(IDENTIFIERS)}")
        if "email" in recipient and not recipient.get("prioritization"):
            problems.append(f"recipients[{index}]: prioritization is required when using email")
        if "user_alias" in recipient and "send_to_existing_only" in recipient:
            problems.append(f"recipients[{index}]: send_to_existing_only cannot be used with user_alias")
        if recipient.get("send_to_existing_only") is False and "attributes" not in recipient:
            problems.append(f"recipients[{index}]: attributes are required when "
                            "send_to_existing_only is false")
        problems += [f"recipients[{index}].{name} exceeds 50 KB" for name in PROPERTY_FIELDS
                     if name in recipient and _too_big(recipient[name])]
    return problems


def _send(kind: str):
    sim = current_app.config["SIM"]
    sim.count(f"braze_{kind}")
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return _error(sim, 401, "Invalid API key")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(sim, 400, "Request body must be a JSON object")
    if "api_key" in body:
        sim.count("braze_api_key_in_body")  # legacy key-in-body: a proxy must never forward one
    own, other = ("campaign_id", "canvas_id") if kind == "campaign" else ("canvas_id", "campaign_id")
    if not body.get(own) or other in body:
        return _error(sim, 400, f"Exactly one {own} is required")
    recipients = body.get("recipients")
    if body.get("broadcast") is True and recipients:
        return _error(sim, 400, "Cannot specify recipients when broadcast is true")
    if recipients is not None and (not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS):
        return _error(sim, 400, f"recipients must be an array of at most {MAX_RECIPIENTS} objects")
    if not recipients and body.get("broadcast") is not True and "audience" not in body:
        return _error(sim, 400, "Either recipients, audience or broadcast is required")
    problems = _recipient_problems(recipients or [])
    problems += [f"{name} exceeds 50 KB" for name in PROPERTY_FIELDS if name in body and _too_big(body[name])]
    if problems:
        return _error(sim, 400, "Invalid recipients or properties", problems)
    fault = _fault(sim, body)
    if fault == "fault-500":
        return _error(sim, 500, "Internal Server Error")
    if fault == "fault-429":
        return _error(sim, 429, "Rate limit exceeded", spent=True)
    headers = _rate_headers(sim)
    if fault == "fault-timeout":
        return jsonify(message="success"), 201, {**headers, "X-Sandbox-Delay": "30"}
    digest = hashlib.sha256(repr((kind, sim.calls[f"braze_{kind}"], body.get(own))).encode()).hexdigest()
    if sim.latency:
        headers["X-Sandbox-Delay"] = str(sim.latency)
    notice = next((text for prefix, text in NOTICES.items() if kind == "canvas"
                   and str(body.get(own)).startswith(prefix)), None)
    if notice:
        sim.count("braze_not_sent")
        return jsonify(dispatch_id=digest[:32], message="success", notice=notice), 201, headers
    sim.count("braze_sent")
    return jsonify(dispatch_id=digest[:32], message="success"), 201, headers


@bp.post("/campaigns/trigger/send")
def campaigns_trigger_send():
    return _send("campaign")


@bp.post("/canvas/trigger/send")
def canvas_trigger_send():
    return _send("canvas")
