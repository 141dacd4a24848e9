"""Built-in simulators of SessionM Connect, SessionM Core and Braze (sandbox mode).

They are small WSGI apps. In the service they are reached through `SandboxAdapter`, a requests
transport mounted on the `.sandbox.invalid` hosts, so the real clients run unchanged; tests and the
benchmark can also serve them on loopback as real HTTP servers.

Faults and latency are switchable for demos: globally with WALLET_PROXY_SANDBOX_FAULT /
WALLET_PROXY_SANDBOX_LATENCY, or per user id by its prefix (see `FAULTS`).
"""
from __future__ import annotations

import io
import threading
import time

import requests
from flask import Flask
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.response import HTTPResponse
from werkzeug.test import EnvironBuilder, run_wsgi_app

from . import braze, connect, core, track

# user-id prefix (or WALLET_PROXY_SANDBOX_FAULT value) -> what the simulator does
FAULTS = {
    "unknown": "USER_NOT_FOUND inside HTTP 200",
    "fault-invalid": "validation (our request refused as invalid) inside HTTP 200",
    "fault-500": "HTTP 500",
    "fault-429": "HTTP 429 with Retry-After: 2",
    "fault-timeout": "no answer for 30 s",
    "fault-slow": "answers after 1 s",
    "fault-garbage": "HTTP 200 with an HTML body",
    "fault-auth": "HTTP 401 (our credentials refused)",
}


class SimState:
    """Knobs and counters shared by the simulators (tests flip these directly)."""

    def __init__(self, latency: float = 0.0, fault: str | None = None, clock=time.time):
        self.latency = latency
        self.fault = fault
        self.clock = clock
        self.calls: dict = {}
        self.tags: dict = {}  # user id -> {tag: {"count": n} or {"expires_at": epoch seconds}}
        self.lock = threading.Lock()

    def count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def fault_for(self, user_id: str | None) -> str | None:
        """The fault for this call: the global one, else the one named by the user id's prefix."""
        if self.fault:
            return self.fault
        for prefix in FAULTS:
            if user_id and user_id.startswith(prefix):
                return prefix
        return None


def make_sandbox_app(state: SimState | None = None) -> Flask:
    """One WSGI app answering SessionM Connect, SessionM Core and Braze's paths."""
    app = Flask("wallet_proxy.sandbox")
    app.config["SIM"] = state or SimState()
    app.register_blueprint(connect.bp)
    app.register_blueprint(core.bp)
    app.register_blueprint(braze.bp)
    app.register_blueprint(track.bp)
    return app


class SandboxAdapter(BaseAdapter):
    """A requests transport that answers from a WSGI app in-process, honouring read timeouts.

    A simulator asks for latency with an `X-Sandbox-Delay` header; the adapter sleeps it (or raises
    ReadTimeout when it exceeds the caller's timeout), as a slow network would.
    """

    def __init__(self, app):
        super().__init__()
        self.app = app

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        builder = EnvironBuilder(path=requests.utils.urlparse(request.url).path or "/",
                                 query_string=requests.utils.urlparse(request.url).query,
                                 method=request.method, headers=dict(request.headers),
                                 data=request.body or b"")
        environ = builder.get_environ()
        app_iter, status, headers = run_wsgi_app(self.app, environ, buffered=True)
        body = b"".join(app_iter)
        delay = float(headers.get("X-Sandbox-Delay", "0") or 0)
        read_timeout = timeout[1] if isinstance(timeout, tuple) else timeout
        if read_timeout is not None and delay > read_timeout:
            time.sleep(read_timeout)
            raise requests.exceptions.ReadTimeout(f"sandbox: no answer within {read_timeout}s")
        if delay:
            time.sleep(delay)
        raw = HTTPResponse(body=io.BytesIO(body), headers=dict(headers),
                           status=int(status.split()[0]), preload_content=False)
        response = requests.Response()
        response.status_code = raw.status
        response.headers = CaseInsensitiveDict(dict(headers))
        response.raw = raw
        response.url = request.url
        response.request = request
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        return response

    def close(self):
        pass
