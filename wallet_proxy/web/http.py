"""Request plumbing: request ids, deadlines, the one JSON error handler, scope checks."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time

import orjson
from flask import Flask, Request, Response, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from ..errors import (
    ApiError,
    BrazeShaped,
    Internal,
    InvalidRequest,
    MethodNotAllowed,
    NotConfigured,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
    invalid_fields,
    release,
)
from .admission import braze_door

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


MAX_JSON_DEPTH = 32  # SPEC "All JSON POST routes": deeper bodies are a 400


class _DuplicateKey(ValueError):
    pass


def _object(pairs):
    """object_pairs_hook: a JSON object, refusing a key given twice (which value wins is ambiguous)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


class _NotFinite(ValueError):
    pass


def _refuse_constant(name):
    raise _NotFinite(name)


def _finite(text: str) -> float:
    """parse_float: Python reads `1e400` as inf, which no JSON encoder can write back (it reached
    Braze as the bare word Infinity): refused like NaN."""
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text[:20])
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value) -> bool:
    """True when a key or string holds an unpaired surrogate (`"\\ud800"`): Python's json lets it
    through, and it cannot be written as UTF-8 to SessionM, Braze or a log."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _depth(value) -> int:
    """Nesting depth of parsed JSON (1 for a flat object), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _refuse_long_lists(data: bytes, lists: dict) -> None:
    """Count the route's lists (`{"recipients": 2500}`) before anything else looks at the body.

    orjson reads 1 MB in a few ms; the strict reading below (duplicate keys, depth, surrogates) visits
    every object in Python, which for 61,000 recipients costs a hundred times more. What orjson
    refuses is left to the strict reading, which says why.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if not isinstance(value, dict):
        return
    for name, limit in lists.items():
        items = value.get(name)
        if isinstance(items, list) and len(items) > limit:
            raise invalid_fields("body", {name: [f"at most {limit} {name} a call (got {len(items)}); send "
                                                 "the rest in another call"]})


def parse_json_object(data: bytes, lists: dict | None = None) -> dict:
    """The strict reading of every JSON POST body (SPEC): an object, UTF-8, nested at most 32 levels,
    no duplicate keys, no non-finite number (NaN, Infinity, 1e400), no unpaired surrogate;
    InvalidRequest naming the reason otherwise. Size and Content-Type are checked before (JsonRequest)."""
    if lists:
        _refuse_long_lists(data, lists)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("body: must be a JSON object in UTF-8",
                             details={"_body": ["not UTF-8"]}) from None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_refuse_constant,
                           parse_float=_finite)
    except _NotFinite:
        raise InvalidRequest("body: a number is not finite (NaN, Infinity, or too large such as 1e400)",
                             details={"_body": ["non-finite number"]}) from None
    except _DuplicateKey:
        # the key itself is not echoed: it is caller data, and this message may be logged
        raise InvalidRequest("body: a JSON object has the same key twice",
                             details={"_body": ["duplicate key"]}) from None
    except RecursionError:
        value = None
        depth = MAX_JSON_DEPTH + 1
    except ValueError as exc:
        reason = getattr(exc, "msg", None) or "not JSON"
        raise InvalidRequest(f"body: must be a JSON object (not valid JSON: {reason})",
                             details={"_body": ["not JSON"]}) from None
    else:
        depth = _depth(value)
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequest(f"body: nested deeper than {MAX_JSON_DEPTH} levels",
                             details={"_body": ["too deep"]})
    if not isinstance(value, dict):
        raise InvalidRequest("body: must be a JSON object", details={"_body": ["not a JSON object"]})
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(value):
        raise InvalidRequest("body: a string holds an unpaired surrogate (such as \\ud800): not text",
                             details={"_body": ["unpaired surrogate"]})
    return value


class JsonRequest(Request):
    """The app's request: `get_json()` is the one strict reading of a JSON POST body.

    Content-Type must be application/json (else 415): a page of another origin can make a browser
    post text/plain, form-urlencoded or multipart bodies without asking, never application/json
    (that needs a CORS preflight, which this service never grants). `force` and `silent` are ignored:
    a body that is not what the SPEC says is answered with the SPEC's error, not read loosely.
    """

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True, lists: dict | None = None):
        """The body as a JSON object; `lists` caps top-level lists by name (`{"recipients": 2500}`),
        counted before anything else reads the body."""
        cached = self.__dict__.get("_strict_json")
        if cached is not None:
            return cached
        if self.mimetype != "application/json":
            raise UnsupportedMediaType()
        value = parse_json_object(self._body(), lists)
        self.__dict__["_strict_json"] = value
        return value

    def _body(self) -> bytes:
        """The body, at most max_content_length bytes (413 past it), with or without Content-Length.

        A chunked body has no length: werkzeug hands such a stream over empty or unbounded depending
        on the server, so it is read here, up to one byte past the limit, from the server's stream
        (gunicorn terminates it: `wsgi.input_terminated`).
        """
        limit = self.max_content_length
        if self.content_length is not None or not self.environ.get("wsgi.input_terminated"):
            return self.get_data(cache=True)
        stream = self.environ["wsgi.input"]
        data = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(data) > limit:
            raise PayloadTooLarge()
        return data


class AnyPathConverter(PathConverter):
    """Like `path`, but also takes CR/LF and other controls, so a bad id is a 400 from validation
    rather than a 404 from routing."""

    regex = r"[\s\S]+?"
    part_isolating = False


def state():
    """The per-app services object (see wallet_proxy.services)."""
    return current_app.extensions["wallet_proxy"]


def client_address() -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy (gunicorn's
    FORWARDED_ALLOW_IPS, default 127.0.0.1 and ::1), the last hop it added to X-Forwarded-For."""
    return address_of(request.remote_addr, request.headers.get("X-Forwarded-For", ""))


def address_of(peer: str | None, forwarded_for: str | None) -> str:
    """`client_address` from its two inputs: one rule for Flask's doors and the wallet handler's."""
    peer = peer or "-"
    trusted = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
    if trusted.strip() == "*" or peer in {t.strip() for t in trusted.split(",")}:
        last = (forwarded_for or "").rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return peer


def deadline() -> float:
    """Monotonic time by which this request's answer must leave (WALLET_PROXY_DEADLINE)."""
    return g.started + state().settings.deadline


def error_response(exc: ApiError):
    """Render an ApiError as the SPEC's JSON error, with Retry-After when it has one; on the Braze-compatible
    door (web/admission.py `braze_door`) with Braze's `message` and `errors` too, whatever the error."""
    if not isinstance(exc, BrazeShaped) and braze_door(request.path):
        exc = BrazeShaped(exc)
    response = Response(exc.encode(), status=exc.status, mimetype="application/json")
    retry_after = exc.retry_after_header()
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    for name, value in (exc.headers or getattr(getattr(exc, "inner", None), "headers", None) or {}).items():
        response.headers[name] = value
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="wallet-proxy", charset="UTF-8"'
    return response


def check_single_query() -> None:
    """A query parameter given twice is a 400 at every door (see `refuse_repeated`)."""
    refuse_repeated(request.args.items(multi=True))


def refuse_repeated(pairs) -> None:
    """A query parameter given twice is a 400 at every door: which copy counts would be a guess
    (`?dry_run=0&dry_run=1` sent for real; `?id_type=seed&id_type=external` read as seed)."""
    seen: set = set()
    repeated: set = set()
    for name, _ in pairs:
        (repeated if name in seen else seen).add(name)
    if repeated:
        names = sorted(name[:40] for name in repeated)
        raise InvalidRequest(f"invalid query: {names[0]}: given more than once",
                             details={name: ["Given more than once."] for name in names[:10]})


def check_client(services, client, group: str | None = None) -> None:
    """After admission, at every door (Flask's routes and the wallet handler alike): the client's own
    rate (WALLET_PROXY_CLIENT_RATE; a 429 is counted in the metrics), then the route's settings group."""
    limiter = getattr(services, "ratelimit", None)
    if limiter is not None:
        try:
            limiter.check(client.name)
        except RateLimited:
            if getattr(services, "metrics", None) is not None:
                services.metrics.client_limited(client.name)
            raise
    if group and not getattr(services.settings, f"{group}_configured"):
        raise NotConfigured(f"the {group} settings are not configured on this deployment")


def require(scope: str, group: str | None = None):
    """Decorate a view: check the client's credentials for `scope` and that `group` is configured."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            services = state()
            g.client = services.gate.admit(request.headers.get("Authorization"), scope, client_address())
            if scope != "preview":  # the marketers' page and its API answer the browser, not a caller's URL
                check_single_query()
            check_client(services, g.client, group)
            return view(*args, **kwargs)

        wrapped.required_scope = scope
        return wrapped

    return decorate


def init_app(app: Flask) -> None:
    """Install request ids, security headers, error handlers, request logs and metrics on `app`."""
    from . import logs, metrics

    services = app.extensions["wallet_proxy"]
    app.request_class = JsonRequest
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
        response = error_response(exc)
        release(exc)  # errors.release: no frames kept alive by an answered error
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = exc.code or 500
        mapped = {404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge,
                  415: UnsupportedMediaType}.get(code)
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
        release(exc)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # The traceback goes to the log (secrets redacted there), never into the answer.
        rule = request.url_rule
        log.exception("unhandled error on %s %s", request.method, rule.rule if rule else "<unmatched>")
        g.error_code = Internal.code
        release(exc)
        return error_response(Internal())
