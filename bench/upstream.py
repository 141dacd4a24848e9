"""A SessionM Connect stand-in for the benchmark (run under gunicorn gevent).

It shares the machine with the service and wrk, so it must cost as little CPU as possible: it
answers from 64 pre-built sandbox wallets (wallet_proxy.sandbox.connect.make_wallet) with the
caller's user id spliced in, as a bare WSGI app, after a real (greenlet) sleep for SessionM's
latency. Two control routes: `GET /_bench/calls` (get_user_offers calls so far) and
`POST /_bench/config?latency=&fault=` (set latency and fault, reset the counter). Faults:
`fault-timeout` (no answer for 30 s) and `fault-500`.
"""
import json
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs

from wallet_proxy.sandbox.connect import make_wallet

state = {"latency": 0.15, "fault": None, "calls": 0}
MARK = "@@USER@@"
TEMPLATES = []
for n in range(64):
    payload = make_wallet(f"bench-template-{n}", "en-US", datetime.now(timezone.utc))
    payload["user_id"] = MARK
    TEMPLATES.append(json.dumps({"status": "ok", "payload": payload}).split(json.dumps(MARK)))


def _json(start_response, body: dict, status: str = "200 OK"):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def app(environ, start_response):
    """get_user_offers with real latency, plus the two control routes."""
    path = environ.get("PATH_INFO", "")
    if path == "/_bench/calls":
        return _json(start_response, {"calls": state["calls"]})
    if path == "/_bench/config":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        state.update(latency=float(query.get("latency", ["0"])[0]), fault=query.get("fault", [""])[0] or None,
                     calls=0)
        return _json(start_response, {"latency": state["latency"], "fault": state["fault"]})
    if not path.endswith("/get_user_offers"):
        return _json(start_response, {"error": "not found"}, "404 Not Found")
    state["calls"] += 1
    length = int(environ.get("CONTENT_LENGTH") or 0)
    user_id = json.loads(environ["wsgi.input"].read(length) or b"{}").get("user_id", "")
    if state["fault"] == "fault-timeout":
        time.sleep(30)
    elif state["latency"]:
        time.sleep(state["latency"])
    if state["fault"] == "fault-500":
        return _json(start_response, {"error": "internal"}, "500 Internal Server Error")
    parts = TEMPLATES[hash(user_id) % len(TEMPLATES)]
    data = json.dumps(user_id).join(parts).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
