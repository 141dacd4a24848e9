"""GET /v1/wallets/<user_id>: the Connected Content call, one plain-WSGI handler for every answer.

A send is thousands of these a second, hits and misses alike, so the read is answered here, in front
of Flask, by one piece of code: credentials and scope, the per-client rate limit, the user id, the
query, the signature, the external id, the wallet service (cache -> single flight -> SessionM), the
rendered body, `If-None-Match`, the headers, the access line and the metrics. Flask serves every
other route, the wallet's DELETE included; its URL map still declares this GET (one rule, for the
OpenAPI document and `Allow`), but no request for it ever reaches Flask.

The answer's cache outcome is one typed value (`Outcome`): `Cache-Status`, the access line and the
`wallet_proxy_cache_total` label are all read from it.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import time
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from marshmallow import ValidationError
from werkzeug.http import parse_etags

from ..errors import ApiError, Internal, invalid_fields, release
from ..ids import DEFAULT_CULTURE, check_user_id
from ..web.admission import check_wallet_signature, resolve_seed_id as resolve_user
from ..web.http import HSTS, JSON_CSP, SECURITY_HEADERS, address_of, check_client, refuse_repeated, request_id
from ..web.logs import ACCESS, access_fields, level_for, log_request
from ..web.metrics import refresh_gauges, upstream_time
from .service import Outcome, Served
from .stores import RenderCache
from .view import VIEWS, WalletQuery, empty_wallet, encode, fit, next_change

log = logging.getLogger("wallet_proxy.http")

PREFIX = "/v1/wallets/"
ROUTE = "/v1/wallets/<anypath:user_id>"  # the URL map's rule: the route label of logs and metrics
# Errors that `on_error=empty` turns into a 200 the template can test (`wallet.ok`).
SOFT = frozenset({"user_not_found", "upstream_refused", "upstream_error", "upstream_unavailable",
                  "upstream_timeout"})
# The query's keys that change a body (besides the user and the culture): the rendered-body key.
# Anything else -- `sig`, `on_error`, `id_type`, a cache buster -- never multiplies the cache.
BODY_KEYS = ("view", "type", "group", "category", "expiring_within_days", "limit", "sort")
QUERY_MEMO_BYTES = 1 << 20  # validated query strings remembered (a send repeats a handful)
QUERY_MEMO_ITEM = 512  # bytes a remembered query costs besides its text (dict, tuple, strings)
_KNOWN_CLIENTS = 64  # Authorization headers remembered (a few per client: Basic, Bearer, rotation)
_STATUS_LINES = {200: "200 OK", 304: "304 NOT MODIFIED", 400: "400 BAD REQUEST", 401: "401 UNAUTHORIZED",
                 403: "403 FORBIDDEN", 404: "404 NOT FOUND", 422: "422 UNPROCESSABLE ENTITY",
                 429: "429 TOO MANY REQUESTS", 500: "500 INTERNAL SERVER ERROR", 502: "502 BAD GATEWAY",
                 503: "503 SERVICE UNAVAILABLE", 504: "504 GATEWAY TIMEOUT"}
_JSON = [("Content-Type", "application/json"), *SECURITY_HEADERS.items(), ("Content-Security-Policy", JSON_CSP)]
_WWW_AUTHENTICATE = ("WWW-Authenticate", 'Basic realm="wallet-proxy", charset="UTF-8"')
_query_schema = WalletQuery()


class Query:
    """A validated wallet query: its fields (`values`) and the part of it a body depends on (`key`)."""

    __slots__ = ("values", "key")

    def __init__(self, values: dict):
        self.values = values
        self.key = tuple(values[k] for k in BODY_KEYS)


def parse_query(raw: str) -> Query:
    """Validate a query string; a 400 names each bad field (a parameter given twice included)."""
    pairs = parse_qsl(raw, keep_blank_values=True)
    refuse_repeated(pairs)
    args = dict(pairs)
    try:
        return Query(_query_schema.load(args))
    except ValidationError as exc:
        raise invalid_fields("query", exc.messages) from exc


def wallet_headers(served: Served, etag: str) -> list[tuple[str, str]]:
    """The headers of a wallet answer (200 or 304): Cache-Status, Cache-Control and ETag (SPEC)."""
    return [("Cache-Status", served.outcome.cache_status(served.ttl_left)),
            ("Cache-Control", f"private, max-age={max(0, int(served.ttl_left))}"), ("ETag", f'"{etag}"')]


class _Line:
    """What the access line and the metrics say about one answer, filled in as it is made."""

    __slots__ = ("user_id", "client", "outcome", "ttl_left", "error")

    def __init__(self):
        self.user_id = self.client = self.outcome = self.error = None
        self.ttl_left = 0.0


class WalletGet:
    """The WSGI app in front of Flask: answers GET/HEAD /v1/wallets/<id>, passes everything else on."""

    def __init__(self, wsgi_app, services, *, render_bytes: int):
        self.wsgi_app = wsgi_app
        self.services = services
        self.rendered = RenderCache(render_bytes)  # recently rendered bodies, bounded in bytes
        self._queries: dict = {}  # query string -> validated Query; QUERY_MEMO_BYTES at most
        self._query_bytes = 0
        # Authorization header -> the client it authenticated for the wallet scope: a send repeats
        # one header thousands of times, so decode and compare it once (failures are never kept).
        self._clients: dict = {}
        cultures = services.settings.cultures
        self._cultures = frozenset(cultures) if cultures is not None else None
        self.answered = 0  # answers given (tests)

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        if (method == "GET" or method == "HEAD") and path.startswith(PREFIX) and len(path) > len(PREFIX):
            status, headers, body = self.answer(environ)
            start_response(_STATUS_LINES.get(status) or str(status), headers)
            return [] if method == "HEAD" else [body]
        return self.wsgi_app(environ, start_response)

    # -- one answer ------------------------------------------------------------------------------

    def answer(self, environ) -> tuple[int, list, bytes]:
        """(status, headers, body) of one wallet read, logged and counted."""
        started = time.monotonic()
        line = _Line()
        spent = [0.0]  # SessionM time of this request (of the call it led), added by the metrics
        token = upstream_time.set(spent)
        try:
            status, body, headers = self._wallet(environ, started, line)
        except ApiError as exc:
            status, body, headers = self._error(exc, line)
        except Exception as exc:  # the traceback goes to the log (secrets redacted there), never the answer
            log.exception("unhandled error on GET %s", ROUTE)
            status, body, headers = self._error(Internal(), line)
            release(exc)
        finally:
            upstream_time.reset(token)
        upstream = spent[0]
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        headers += [("Content-Length", str(len(body))), ("X-Request-ID", rid), *_JSON]
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(("Strict-Transport-Security", HSTS))
        seconds = time.monotonic() - started
        outcome, error = line.outcome, line.error
        cache_status = outcome.cache_status(line.ttl_left) if outcome is not None else None
        level = level_for(status, ROUTE)
        if ACCESS.isEnabledFor(level):
            log_request(level, access_fields(
                rid, environ.get("REQUEST_METHOD", "GET"), ROUTE, status, seconds, cache_status,
                line.user_id, line.client.name if line.client is not None else None,
                error.code if error is not None else None,
                error.message if error is not None and status >= 500 else None, upstream))
        metrics = self.services.metrics
        if metrics is not None:
            metrics.record(ROUTE, "GET", status, seconds, outcome.label if outcome is not None else None)
            if error is not None:
                metrics.error(ROUTE, error.code)
            if started - metrics._gauges_at >= 1.0:  # states, not events: a refresh a second will do
                metrics._gauges_at = started
                refresh_gauges(metrics, self.services)
        # Answered (as an error, or as on_error=empty's 200) and logged: kept on `line` with its
        # traceback, the error would hold the frames that hold `line` (errors.release)
        release(error)
        self.answered += 1
        return status, headers, body

    def _wallet(self, environ, started: float, line: _Line) -> tuple[int, bytes, list]:
        services = self.services
        settings = services.settings
        line.client = self._client(environ)
        check_client(services, line.client, "connect")
        # PATH_INFO is WSGI's latin-1 text of the decoded path; a valid id is plain ASCII anyway.
        user_id = environ["PATH_INFO"][len(PREFIX):]
        check_user_id(user_id)
        line.user_id = user_id
        query = self._query(environ.get("QUERY_STRING", ""))
        values = query.values
        check_wallet_signature(settings, user_id, values["sig"], values["id_type"])
        deadline = started + settings.deadline
        culture = values["culture"]  # a well-formed tag, normalised (view.CultureField)
        if self._cultures is not None and culture not in self._cultures:
            culture = DEFAULT_CULTURE  # WALLET_PROXY_CULTURES: never a SessionM call per spelling
        try:
            seed_id = resolve_user(services, user_id, values["id_type"], deadline)
            served = services.wallets.get(seed_id, culture, deadline)
        except ApiError as exc:
            if values["on_error"] != "empty" or exc.code not in SOFT:
                raise
            line.outcome, line.error = Outcome.ERROR, exc
            body = encode(empty_wallet(user_id=user_id, culture=culture, view=values["view"],
                                       error={"code": exc.code, "message": exc.message}))
            return 200, body, [("Cache-Control", "no-store")]
        line.outcome, line.ttl_left = served.outcome, served.ttl_left
        body, etag = self._render(served, seed_id, culture, query)
        headers = wallet_headers(served, etag)
        # RFC 9110 §13.1.2: If-None-Match uses the weak comparison, so W/"x" matches "x" (a cache or a
        # compressing proxy may have weakened the tag it stored)
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match and parse_etags(if_none_match).contains_weak(etag):
            return 304, b"", headers
        return 200, body, headers

    def _error(self, exc: ApiError, line: _Line) -> tuple[int, bytes, list]:
        line.error = exc
        headers = [("Cache-Control", "no-store")]
        retry_after = exc.retry_after_header()
        if retry_after is not None:
            headers.append(("Retry-After", retry_after))
        if exc.status == 401:
            headers.append(_WWW_AUTHENTICATE)
        return exc.status, exc.encode(), headers

    # -- its parts -------------------------------------------------------------------------------

    def _client(self, environ):
        """The client of the request's credentials for the wallet scope, admitted by the one gate
        (web/admission.py: failed attempts throttled per address and client name, like every door)."""
        header = environ.get("HTTP_AUTHORIZATION")
        client = self._clients.get(header)
        if client is None:
            client = self.services.gate.admit(
                header, "wallet", address_of(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR")))
            if len(self._clients) < _KNOWN_CLIENTS:  # only admitted credentials are remembered
                self._clients[header] = client
        return client

    def _query(self, raw: str) -> Query:
        """The validated query of a query string, remembered by its text (bounded in bytes).

        A send repeats a handful of query strings; a plain dict (started over when full) costs a
        hit less than an LRU's bookkeeping."""
        query = self._queries.get(raw)
        if query is None:
            query = parse_query(raw)
            size = len(raw) + QUERY_MEMO_ITEM
            if size <= QUERY_MEMO_BYTES // 64:  # a huge string is validated, never kept
                if self._query_bytes + size > QUERY_MEMO_BYTES:  # per-user `sig`s: start over
                    self._queries.clear()
                    self._query_bytes = 0
                self._queries[raw] = query
                self._query_bytes += size
        return query

    def _render(self, served: Served, seed_id: str, culture: str, query: Query) -> tuple[bytes, str]:
        """The JSON body and ETag of a served wallet, reused while the view cannot change."""
        services = self.services
        now_ts = services.clock()
        entry = served.entry
        key = (seed_id, culture, entry.stamp, served.stale, query.key)
        cached = self.rendered.get(key, now_ts)
        if cached is not None:
            return cached
        values = query.values
        wallet = served.wallet()  # a miss's as fetched; else decoded from the compact entry, once per render
        now = datetime.fromtimestamp(now_ts, tz=timezone.utc)
        data = fit(functools.partial(VIEWS[values["view"]], wallet, now=now, user_id=seed_id, culture=culture,
                                     fetched_at=entry.fetched_at, stale=served.stale, query=values))
        etag = hashlib.blake2b(data, digest_size=12).hexdigest()
        self.rendered.put(key, data, etag, next_change(wallet, now_ts))
        return data, etag
