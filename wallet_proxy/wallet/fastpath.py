"""A WSGI fast path for the hottest answer: a fresh wallet already rendered for this very URL.

During a send most requests are the 2nd and 3rd render (HTML, text, AMP) of a wallet fetched a
moment ago. Answering those through Flask's request context, blueprint dispatch and three
after-request hooks costs several times the work of the answer itself, so this middleware answers
them directly, with the same pieces the route uses (Authenticator, id and signature checks, the
validated-query memo, the store, the rendered-body cache, the same headers, log line and metrics).

It answers a plain 200 hit, and the two 503s a miss can only get at once: breaker open while
SessionM is failing, and refused by admission control while more SessionM calls wait than can
start in time (during an outage or an overload most of a send turns into those: at a quarter of
the cost per answer, the requests that do wait on SessionM are not starved of the worker).
Anything else -- a miss, a stale or not yet rendered wallet, bad or missing credentials, an unseen
query string, `If-None-Match`, an external id, `on_error=empty`, a per-client rate limit -- falls
through to Flask unchanged, which gives the full answer or error.
"""
from __future__ import annotations

import time

from ..errors import ApiError, Unauthorized
from ..ids import valid_user_id
from ..web.auth import check_signature
from ..web.http import HSTS, JSON_CSP, SECURITY_HEADERS, request_id
from ..web.logs import ACCESS, access_fields, level_for, log_request
from .service import render_key, wallet_headers

PREFIX = "/v1/wallets/"
ROUTE = "/v1/wallets/<anypath:user_id>"  # the rule's text, as the slow path logs and counts it
STATUS_LINES = {200: "200 OK", 503: "503 SERVICE UNAVAILABLE"}
_STATIC = [("Content-Type", "application/json"), *SECURITY_HEADERS.items(),
           ("Content-Security-Policy", JSON_CSP)]
_KNOWN_CLIENTS = 64  # Authorization headers remembered (a few per client: Basic, Bearer, rotation)


class HitFastPath:
    """Wraps the app's WSGI callable; answers fresh, already rendered wallet reads itself."""

    def __init__(self, wsgi_app, services):
        self.wsgi_app = wsgi_app
        self.services = services
        self.served = 0  # answers given here (tests and curiosity)
        # Authorization header -> the client it authenticated for the wallet scope: a send repeats
        # one header thousands of times, so decode and compare it once (failures are never kept).
        self._clients: dict = {}

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO", "").startswith(PREFIX):
            answer = self._answer(environ)
            if answer is not None:
                status, headers, body = answer
                start_response(status, headers)
                return [body]
        return self.wsgi_app(environ, start_response)

    def _answer(self, environ):
        started = time.monotonic()
        services = self.services
        settings = services.settings
        if settings.client_rate or not settings.connect_configured or "HTTP_IF_NONE_MATCH" in environ:
            return None
        # PATH_INFO is WSGI's latin-1 text of the decoded path; a valid id is plain ASCII anyway.
        user_id = environ["PATH_INFO"][len(PREFIX):]
        if not valid_user_id(user_id):
            return None
        raw_query = environ.get("QUERY_STRING", "").encode("latin-1")
        query = services.queries.get(raw_query)
        if query is None or query["id_type"] != "seed":
            return None
        try:
            client = self._client(environ.get("HTTP_AUTHORIZATION"))
            check_signature(settings.signing_key, user_id, query["sig"])
        except ApiError:
            return None
        wallets = services.wallets
        culture = query["culture"]
        entry = services.store.get(user_id, culture)
        served = wallets.hit(entry) if entry is not None else None
        if served is None:  # a fresh hit is served whatever SessionM's state: ask only otherwise
            if query["on_error"] == "status":
                refusal = wallets.refusal(user_id, culture, entry, started + settings.deadline)
                if refusal is not None:
                    return self._refuse(environ, started, user_id, client, refusal)
            return None
        rendered = services.rendered.get(render_key(user_id, served, raw_query), services.clock())
        if rendered is None:
            return None
        body, etag = rendered
        headers = wallet_headers(served, etag)
        return self._finish(environ, started, 200, body, user_id, client, headers[0][1], headers)

    def _client(self, header: str | None):
        """The client of an Authorization header for the wallet scope (ApiError when none)."""
        client = self._clients.get(header)
        if client is None:
            # only a credential the route has admitted (web/admission.py): a first try, a guess or a
            # throttled address goes through the route's admission, which counts failures
            client = self.services.gate.known(header, "wallet")
            if client is None:
                raise Unauthorized()
            if len(self._clients) < _KNOWN_CLIENTS:
                self._clients[header] = client
        return client

    def _refuse(self, environ, started: float, user_id: str, client, error):
        """The route's 503 when no SessionM call can be made now and nothing can be served stale."""
        return self._finish(environ, started, error.status, error.encode(), user_id, client, None,
                            [("Retry-After", error.retry_after_header()), ("Cache-Control", "no-store")],
                            error=error)

    def _finish(self, environ, started: float, status: int, body: bytes, user_id: str, client,
                cache_status: str | None, extra: list, error=None):
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        headers = [("Content-Length", str(len(body))), *extra, ("X-Request-ID", rid), *_STATIC]
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(("Strict-Transport-Security", HSTS))
        seconds = time.monotonic() - started
        level = level_for(status, ROUTE)
        if ACCESS.isEnabledFor(level):
            log_request(level, access_fields(rid, "GET", ROUTE, status, seconds, cache_status, user_id,
                                             client.name, error.code if error else None,
                                             error.message if error else None))
        metrics = self.services.metrics
        if metrics is not None:
            metrics.record(ROUTE, "GET", status, seconds, cache_status)
            if error is not None:  # as the route's hook counts its error answers
                metrics.error(ROUTE, error.code)
        self.served += 1
        return STATUS_LINES[status], headers, body
