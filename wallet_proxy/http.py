"""Request plumbing: request ids, deadlines, the one JSON error handler, scope checks."""
from __future__ import annotations

import functools
import logging
import math
import re
import time
import uuid

from flask import Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from .errors import (ApiError, Internal, InvalidRequest, MethodNotAllowed, NotConfigured, NotFound,
                     PayloadTooLarge)

log = logging.getLogger("wallet_proxy.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


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
    response = jsonify(exc.body())
    response.status_code = exc.status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
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
            if group and not getattr(services.settings, f"{group}_configured"):
                raise NotConfigured(f"the {group} settings are not configured on this deployment")
            return view(*args, **kwargs)

        wrapped.required_scope = scope
        return wrapped

    return decorate


def init_app(app: Flask) -> None:
    """Install request ids, security headers and the error handlers on `app`."""

    @app.before_request
    def _start():
        g.started = time.monotonic()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.cache_status = None

    @app.after_request
    def _finish(response):
        response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "application/json":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        if exc.status >= 500:
            log.warning("answering %s %s: %s", exc.status, exc.code, exc.message)
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        mapped = {404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}.get(exc.code)
        if mapped is None:
            error = InvalidRequest(exc.description or "bad request", status=exc.code)
            error.code = "invalid_request" if exc.code < 500 else "internal"
        else:
            error = mapped()
        return error_response(error)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(Internal())
