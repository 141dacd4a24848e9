"""Braze `/users/track` simulator: attribute objects, its documented limits, errors and headers.

Braze's facts (https://www.braze.com/docs/api/endpoints/user_data/post_user_track/,
https://www.braze.com/docs/api/api_limits/, https://www.braze.com/docs/api/errors/):
- `Authorization: Bearer KEY` (401 without one); a JSON object body (400 otherwise);
- at most 75 objects in each of `attributes`, `events`, `purchases` (a longer array is a 400 for the
  whole request: nothing is processed);
- each object names its user with exactly one of `external_id`, `user_alias`, `braze_id`; an object
  that does not, or holds a value Braze cannot store (a string over 255 characters, an array over 25
  items), is skipped and reported in `errors` (`type`, `input_array`, `index`) of a 201 that still
  processes the others;
- an object for an `external_id` Braze does not know CREATES that profile, unless it carries
  `"_update_existing_only": true`, in which case nothing is written for it
  (https://www.braze.com/docs/api/objects_filters/user_attributes_object/). Here every external id has a
  profile except those starting with `no-profile-` (until an object creates one: `created` lists them);
- 3,000 requests per 3 seconds; every answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`
  (epoch seconds of the window's end); past the limit: 429.
Profiles land in `sim.profiles` ({external_id: attributes}); `sim.data_points` counts the attributes
written (what Braze bills). Faults by external id prefix as in the sandbox's FAULTS table (the first
object's id, or WALLET_PROXY_SANDBOX_FAULT): `fault-500`, `fault-429`, `fault-timeout`, `fault-slow`.
"""
from __future__ import annotations

import math
import threading

from flask import Blueprint, current_app, jsonify, request

from .faults import delay_headers, latency_for

bp = Blueprint("sandbox_track", __name__)

MAX_OBJECTS = 75
MAX_STRING = 255
MAX_ARRAY = 25
LIMIT, WINDOW = 3000, 3.0
IDENTIFIERS = ("external_id", "user_alias", "braze_id")
ABSENT_PREFIX = "no-profile-"  # external ids that have no Braze profile yet
_lock = threading.Lock()


class TrackState:
    """The simulator's memory, hung on the shared SimState: profiles, data points, the rate window."""

    def __init__(self, limit: int = LIMIT, window: float = WINDOW):
        self.limit = limit
        self.window = window
        self.profiles: dict = {}
        self.created: list = []  # external ids whose profile an object created (phantom profiles)
        self.data_points = 0
        self.calls = 0
        self.window_start = 0.0
        self.used = 0


def track_state(sim) -> TrackState:
    """The /users/track state of a SimState (made on first use)."""
    with _lock:
        found = getattr(sim, "track", None)
        if found is None:
            found = sim.track = TrackState()
        return found


def _rate(state: TrackState, now: float) -> tuple[bool, dict]:
    """Count this request in the current fixed window; (allowed, the X-RateLimit-* headers)."""
    with _lock:
        start = math.floor(now / state.window) * state.window
        if start != state.window_start:
            state.window_start, state.used = start, 0
        allowed = state.used < state.limit
        if allowed:
            state.used += 1
        reset = state.window_start + state.window
        headers = {"X-RateLimit-Limit": str(state.limit),
                   "X-RateLimit-Remaining": str(max(0, state.limit - state.used)),
                   "X-RateLimit-Reset": str(int(math.ceil(reset)))}
    return allowed, headers


def _problem(item) -> str | None:
    """Why Braze would skip this attribute object, or None."""
    if not isinstance(item, dict):
        return "attributes object must be a JSON object"
    named = [key for key in IDENTIFIERS if item.get(key) not in (None, "")]
    if len(named) != 1:
        return "'external_id' or 'braze_id' or 'user_alias' is required"
    for key, value in item.items():
        if key in IDENTIFIERS:
            continue
        if isinstance(value, str) and len(value) > MAX_STRING:
            return f"custom attribute {key!r} is longer than {MAX_STRING} characters"
        if isinstance(value, list) and len(value) > MAX_ARRAY:
            return f"custom attribute array {key!r} has more than {MAX_ARRAY} items"
    return None


@bp.post("/users/track")
def users_track():
    sim = current_app.config["SIM"]
    sim.count("braze_users_track")
    state = track_state(sim)
    allowed, headers = _rate(state, sim.clock())
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return jsonify(message="Invalid API key"), 401, headers
    if not allowed:
        return jsonify(message="API rate limit exceeded"), 429, headers
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(message="Request body must be a JSON object"), 400, headers
    for name in ("attributes", "events", "purchases"):
        items = body.get(name)
        if items is not None and (not isinstance(items, list) or len(items) > MAX_OBJECTS):
            return jsonify(message=f"'{name}' must be an array of at most {MAX_OBJECTS} objects"), 400, headers
    attributes = body.get("attributes") or []
    first = attributes[0] if attributes and isinstance(attributes[0], dict) else {}
    fault = sim.fault_for(str(first.get("external_id") or ""))
    if fault == "fault-500":
        return jsonify(message="Internal Server Error"), 500, headers
    if fault == "fault-429":
        return jsonify(message="API rate limit exceeded"), 429, {**headers, "Retry-After": "2"}
    if fault == "fault-timeout":
        return jsonify(message="success"), 201, {**headers, **delay_headers(30)}
    errors = []
    processed = 0
    with _lock:
        state.calls += 1
        for index, item in enumerate(attributes):
            problem = _problem(item)
            if problem:
                errors.append({"type": problem, "input_array": "attributes", "index": index})
                continue
            key = str(next(item[k] for k in IDENTIFIERS if item.get(k) not in (None, "")))
            if key.startswith(ABSENT_PREFIX) and key not in state.profiles:
                if item.get("_update_existing_only") is True:
                    processed += 1
                    continue  # no profile, and the object may not create one: nothing is written
                state.created.append(key)
            profile = state.profiles.setdefault(key, {})
            for name, value in item.items():
                if name in IDENTIFIERS or name.startswith("_"):
                    continue
                profile[name] = value
                state.data_points += 1
            processed += 1
    answer = {"message": "success", "attributes_processed": processed}
    if errors:
        answer["errors"] = errors
    return jsonify(answer), 201, {**headers, **delay_headers(latency_for(sim, fault))}
