"""Request plumbing: request ids, deadlines, the one JSON error handler, scope checks."""
from __future__ import annotations

import functools
import logging
import os
import re
import time

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from ..errors import (
    ApiError,
    Internal,
    InvalidRequest,
    MethodNotAllowed,
    NotConfigured,
    NotFound,
    PayloadTooLarge,
    RateLimited,
)

log = logging.getLogger("wallet_proxy.http")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}\Z")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# JSON answers are never rendered as documents: nothing may load, run or frame them.
JSON_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
JSON_HEADERS = (("Cache-Control", "no-store"), ("Content-Security-Policy", JSON_CSP))
HSTS = "max-age=31536000"  # only sent over https (RFC 6797 §7.2: ignored, and wrong, over http)


def request_id(incoming: str | None) -> str:
    """The request's id: the caller's X-Request-ID when well-formed, else a new random one."""
    return incoming if incoming and REQUEST_ID.match(incoming) else os.urandom(16).hex()


class AnyPathConverter(PathConverter):
    """Like `path`, but also takes CR/LF and other controls, so a bad id is a 400 from validation
    rather than a 404 from routing."""

    regex = r"[\s\S]+?"
    part_isolating = False


def state():
    """The per-app services object (see wallet_proxy.services)."""
    return current_app.extensions["wallet_proxy"]


def deadline() -> float:
    """Monotonic time by which this request's answer must leave (WALLET_PROXY_DEADLINE)."""
    return g.started + state().settings.deadline


def error_response(exc: ApiError):
    """Render an ApiError as the SPEC's JSON error, with Retry-After when it has one."""
    response = Response(exc.encode(), status=exc.status, mimetype="application/json")
    retry_after = exc.retry_after_header()
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="wallet-proxy", charset="UTF-8"'
    return response


def require(scope: str, group: str | None = None):
    """Decorate a view: check the client's credentials for `scope` and that `group` is configured."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            services = state()
            g.client = services.auth.authenticate(request.headers.get("Authorization"), scope)
            limiter = getattr(services, "ratelimit", None)
            if limiter is not None:
                try:
                    limiter.check(g.client.name)
                except RateLimited:
                    if getattr(services, "metrics", None) is not None:
                        services.metrics.client_limited(g.client.name)
                    raise
            if group and not getattr(services.settings, f"{group}_configured"):
                raise NotConfigured(f"the {group} settings are not configured on this deployment")
            return view(*args, **kwargs)

        wrapped.required_scope = scope
        return wrapped

    return decorate


def init_app(app: Flask) -> None:
    """Install request ids, security headers, error handlers, request logs and metrics on `app`."""
    from . import logs, metrics

    services = app.extensions["wallet_proxy"]
    logs.configure(services.settings)
    # Registered first, so they run last (Flask runs after_request hooks in reverse): they see the
    # final status and headers, whichever blueprint answered.
    logs.init_app(app)
    if getattr(services, "metrics", None) is not None:
        metrics.init_app(app, services.metrics, services)

    @app.before_request
    def _start():
        g.started = time.monotonic()
        g.request_id = request_id(request.headers.get("X-Request-ID"))
        g.cache_status = None

    @app.after_request
    def _finish(response):
        # One pass over the headers (this runs on every answer: werkzeug's setdefault rescans them
        # per call, which cost more than the rest of a cache hit's header work together).
        headers = response.headers
        present = set()
        cors = []
        for name in headers.keys():
            lower = name.lower()
            present.add(lower)
            if lower.startswith("access-control-"):
                cors.append(name)
        # CORS stays off: no browser page of another origin may read an answer (or preflight one).
        for name in cors:
            del headers[name]
        add = [(n, v) for n, v in SECURITY_HEADERS.items() if n.lower() not in present]
        if response.mimetype == "application/json":
            add += [(n, v) for n, v in JSON_HEADERS if n.lower() not in present]
        if request.is_secure and "strict-transport-security" not in present:
            add.append(("Strict-Transport-Security", HSTS))
        headers["X-Request-ID"] = g.get("request_id") or request_id(None)
        headers.extend(add)
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        g.error_code = exc.code
        if exc.status >= 500:
            # Why, on the request's own line (at WARNING): during an outage a second line per
            # answer would double the log volume exactly when it is read.
            g.error_detail = exc.message
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = exc.code or 500
        mapped = {404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}.get(code)
        if mapped is None:
            error = InvalidRequest(exc.description or "bad request", status=code)
            error.code = "invalid_request" if code < 500 else "internal"
        else:
            error = mapped()
        if error.status >= 500:
            error = Internal(status=error.status)  # werkzeug's 5xx descriptions are not ours to show
        g.error_code = error.code
        response = error_response(error)
        allowed = getattr(exc, "valid_methods", None)
        if code == 405 and allowed:  # RFC 9110 §15.5.6: a 405 lists the methods the route takes
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # The traceback goes to the log (secrets redacted there), never into the answer.
        rule = request.url_rule
        log.exception("unhandled error on %s %s", request.method, rule.rule if rule else "<unmatched>")
        g.error_code = Internal.code
        return error_response(Internal())
