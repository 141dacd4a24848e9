"""A WSGI fast path for the hottest answer: a fresh wallet already rendered for this very URL.

During a send most requests are the 2nd and 3rd render (HTML, text, AMP) of a wallet fetched a
moment ago. Answering those through Flask's request context, blueprint dispatch and three
after-request hooks costs several times the work of the answer itself, so this middleware answers
them directly, with the same pieces the route uses (Authenticator, id and signature checks, the
validated-query memo, the store, the rendered-body cache, the same headers, log line and metrics).

It only ever answers a plain 200 hit. Anything else -- a miss, a stale or not yet rendered wallet,
bad or missing credentials, an unseen query string, `If-None-Match`, an external id, a per-client
rate limit -- falls through to Flask unchanged, which gives the full answer or error.
"""
from __future__ import annotations

import os
import time

from .auth import check_signature
from .errors import ApiError
from .http import HSTS, JSON_CSP, REQUEST_ID, SECURITY_HEADERS
from .logs import ACCESS, hash_user_id, level_for, log_request
from .view import valid_user_id

PREFIX = "/v1/wallets/"
ROUTE = "/v1/wallets/<anypath:user_id>"  # the rule's text, as the slow path logs and counts it
_STATIC = [("Content-Type", "application/json"), *SECURITY_HEADERS.items(),
           ("Content-Security-Policy", JSON_CSP)]


class HitFastPath:
    """Wraps the app's WSGI callable; answers fresh, already rendered wallet reads itself."""

    def __init__(self, wsgi_app, services):
        self.wsgi_app = wsgi_app
        self.services = services
        self.served = 0  # answers given here (tests and curiosity)

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
            client = services.auth.authenticate(environ.get("HTTP_AUTHORIZATION"), "wallet")
            check_signature(settings.signing_key, user_id, query["sig"])
        except ApiError:
            return None
        entry = services.store.get(user_id, query["culture"])
        if entry is None:
            return None
        ttl_left = (entry.ttl or settings.cache_ttl) - (services.clock() - entry.fetched_at)
        if ttl_left <= 0:
            return None
        rendered = services.rendered.get((user_id, entry.stamp, False, raw_query), services.clock())
        if rendered is None:
            return None
        body, etag = rendered

        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if REQUEST_ID.match(incoming) else os.urandom(16).hex()
        cache_status = f"wallet-proxy; hit; ttl={int(ttl_left)}"
        headers = [("Content-Length", str(len(body))), ("Cache-Status", cache_status),
                   ("Cache-Control", f"private, max-age={int(ttl_left)}"), ("ETag", f'"{etag}"'),
                   ("X-Request-ID", request_id), *_STATIC]
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(("Strict-Transport-Security", HSTS))

        seconds = time.monotonic() - started
        level = level_for(200, ROUTE)
        if ACCESS.isEnabledFor(level):
            log_request(level, {"request_id": request_id, "method": "GET", "route": ROUTE, "status": 200,
                                "duration_ms": round(seconds * 1000, 1), "cache": cache_status,
                                "user": hash_user_id(user_id), "client": client.name})
        if services.metrics is not None:
            services.metrics.record(ROUTE, "GET", 200, seconds, cache_status)
        self.served += 1
        return "200 OK", headers, body
