"""The SessionM Connect simulator as a real HTTP server for the benchmark (run under gunicorn gevent).

Wraps `wallet_proxy.sandbox.make_sandbox_app` and honours its `X-Sandbox-Delay` by sleeping (a
greenlet sleep under gevent), so SessionM's latency is real network-visible latency. Two control
routes: `GET /_bench/calls` (get_user_offers calls so far) and `POST /_bench/config?latency=&fault=`
(set latency/fault, reset the counter).
"""
import json
import time
from urllib.parse import parse_qs

from wallet_proxy.sandbox import SimState, make_sandbox_app

state = SimState(latency=0.15)
inner = make_sandbox_app(state)
counter = {"calls": 0}


def _json(start_response, body: dict):
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def app(environ, start_response):
    """Serve the simulator with real latency, plus the two control routes."""
    path = environ.get("PATH_INFO", "")
    if path == "/_bench/calls":
        return _json(start_response, dict(counter))
    if path == "/_bench/config":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        state.latency = float(query.get("latency", ["0"])[0])
        state.fault = query.get("fault", [""])[0] or None
        counter["calls"] = 0
        return _json(start_response, {"latency": state.latency, "fault": state.fault})
    if path.endswith("/get_user_offers"):
        counter["calls"] += 1
    captured = {}

    def capture(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers

    body = b"".join(inner(environ, capture))
    delay = float(dict(captured["headers"]).get("X-Sandbox-Delay", "0") or 0)
    if delay:
        time.sleep(delay)
    start_response(captured["status"], captured["headers"])
    return [body]
