"""Stand-ins for SessionM (Connect + Core) and Braze (triggers + /users/track) for `make gameday`.

Each runs in its own process (gunicorn, one gevent worker: the counters live in it) and wraps the
built-in simulators (wallet_proxy.sandbox: SessionM's and Braze's answer shapes, Core's counter
tags, Braze's profiles and `X-RateLimit-*` headers) with what a game day needs:

- latency: SessionM answers after 150 ms, Braze after 50 ms (a real greenlet sleep);
- a fault control, `POST /_gd/fault?mode=<mode>&seconds=<s>`: SessionM `errors30` (30 % of calls
  answer 500) and `hang` (no answer until the window ends, then the call lands); Braze `429` (429 with
  `X-RateLimit-Remaining: 0` and a reset 2 s away) and `5xx` (503);
- `GET /_gd/stats`: every Connect call (time, user, status), trigger sends Braze accepted per
  `gd_msg` property, Core's tag counters and Braze's profiles, for the run to count from.

Run: `gunicorn -k gevent -w 1 --chdir bench gameday_upstreams:sessionm` (or `:braze`).
"""
from __future__ import annotations

import io
import json
import random
import time
from urllib.parse import parse_qs

from wallet_proxy.sandbox import SimState, make_sandbox_app
from wallet_proxy.sandbox.track import track_state

LATENCY = {"sessionm": 0.15, "braze": 0.05}


class StandIn:
    """The sandbox app behind a fault switch, a latency and counters."""

    def __init__(self, role: str):
        self.role = role
        self.sim = SimState()
        self.app = make_sandbox_app(self.sim)
        self.mode, self.until = None, 0.0
        self.connect_calls: list = []  # (epoch seconds, user_id, status)
        self.sent: dict = {}  # gd_msg -> trigger calls Braze accepted
        self.rng = random.Random(25)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_gd/fault":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            self.mode = (query.get("mode") or [""])[0] or None
            self.until = time.time() + float((query.get("seconds") or ["0"])[0])
            return self._json(start_response, {"mode": self.mode, "until": self.until})
        if path == "/_gd/stats":
            return self._json(start_response, self.stats())
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        mode = self.mode if time.time() < self.until else None
        time.sleep(LATENCY[self.role])
        connect = path.endswith("/get_user_offers")
        user = _field(raw, "user_id") if connect else None
        fault = self._fault(mode, path)
        if fault is not None:
            if connect:
                self.connect_calls.append((time.time(), user, fault[0]))
            return self._json(start_response, fault[1], fault[0], fault[2])
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        body = b"".join(self.app(environ, capture))
        if connect:
            self.connect_calls.append((time.time(), user, captured["status"]))
        if path.endswith("/trigger/send") and 200 <= captured["status"] < 300:
            message = _trigger_message(raw)
            self.sent[message] = self.sent.get(message, 0) + 1
        return [body]

    def _fault(self, mode, path):
        """(status, body, headers) for a call the current fault answers, else None."""
        if mode is None or path.startswith("/_gd"):
            return None
        if self.role == "sessionm":
            if mode == "hang":
                # No answer until the window ends; then the call lands (Core counts the tags), long
                # after its caller gave up.
                time.sleep(max(0.0, self.until - time.time()))
                return None
            if mode == "errors30" and self.rng.random() < 0.3:
                return 500, {"status": "error", "errors": {"code": "internal"}}, {}
            return None
        if not path.endswith(("/trigger/send", "/users/track")):
            return None
        reset = str(int(time.time()) + 2)
        if mode == "429":
            return 429, {"message": "API rate limit exceeded", "errors": []}, {
                "X-RateLimit-Limit": "250000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        if mode == "5xx":
            return 503, {"message": "Service Unavailable", "errors": []}, {}
        return None

    def stats(self) -> dict:
        return {"connect_calls": self.connect_calls, "sent": self.sent,
                "tags": self.sim.tags, "profiles": track_state(self.sim).profiles}

    @staticmethod
    def _json(start_response, body, status: int = 200, headers=None):
        data = json.dumps(body).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"),
                                       ("Content-Length", str(len(data))), *(headers or {}).items()])
        return [data]


def _field(raw: bytes, name: str):
    try:
        return json.loads(raw).get(name)
    except (ValueError, AttributeError):
        return None


def _trigger_message(raw: bytes) -> str:
    """The game day's message id, carried as the trigger property `gd_msg`."""
    try:
        body = json.loads(raw)
        properties = body.get("trigger_properties") or {}
        for recipient in body.get("recipients") or []:
            properties = {**properties, **(recipient.get("trigger_properties") or {})}
        return str(properties.get("gd_msg"))
    except (ValueError, AttributeError):
        return "unreadable"


sessionm = StandIn("sessionm")
braze = StandIn("braze")
