"""Prometheus metrics: one registry per app, hooked on Flask's request lifecycle so every route counts.

Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py does when
WEB_CONCURRENCY > 1): each worker then writes its samples to files there and `/metrics`, whichever
worker answers it, sums them all (prometheus_client's multiprocess mode).
"""
from __future__ import annotations

import contextvars
import os
import time

from flask import Flask, g, has_request_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Braze gives up after 2 s: buckets are dense below it, so the SLO line is readable off the histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 1.8, 2.0, 3.0, 5.0, 10.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
UNMATCHED = "<unmatched>"  # 404s: never label by raw path (unbounded cardinality, user ids in paths)
# Label values come from fixed sets (SPEC): a method is one of these or "other", so invented methods
# (any token is a valid HTTP method) cannot each add a histogram to every scrape.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER = "other"


def status_label(status: int) -> str:
    """A status code as a label: the real code for HTTP's range, else "other"."""
    return str(status) if 100 <= status <= 599 else OTHER


GAUGE_REFRESH = 1.0  # seconds between refreshes of the state gauges from the request hook


def multiprocess_dir() -> str | None:
    """The PROMETHEUS_MULTIPROC_DIR in use, if any."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


# The SessionM seconds of the wallet read being answered (wallet/handler.py sets a one-item list per
# request; the call it leads runs in a copy of its context, see carry_context, and adds its time here).
upstream_time: contextvars.ContextVar = contextvars.ContextVar("wallet_proxy_upstream_time", default=None)


class Metrics:
    """The service's metrics; the WalletService, Redis store and upstream clients report into it."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("wallet_proxy_requests_total", "Answers by route, method and status",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("wallet_proxy_request_duration_seconds",
                                 "Seconds from arrival to answer, by route", ("route", "method"),
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.cache = Counter("wallet_proxy_cache_total",
                             "Wallet reads by cache result (hit, miss, stale_*, error)", ("result",),
                             registry=r)
        self.coalesced_waits = Counter("wallet_proxy_coalesced_total",
                                       "Wallet reads that waited for another request's SessionM call",
                                       registry=r)
        self.upstream_calls = Counter("wallet_proxy_upstream_calls_total",
                                      "Calls to SessionM / Braze by outcome", ("upstream", "outcome"),
                                      registry=r)
        self.upstream_latency = Histogram("wallet_proxy_upstream_duration_seconds",
                                          "Seconds per upstream call, by outcome", ("upstream", "outcome"),
                                          buckets=LATENCY_BUCKETS, registry=r)
        # livemax: across workers, the worst breaker wins (0 closed, 1 half open, 2 open).
        self.breaker = Gauge("wallet_proxy_sessionm_breaker_state",
                             "SessionM circuit breaker: 0 closed, 1 half open, 2 open",
                             registry=r, multiprocess_mode="livemax")
        self.cache_fallbacks = Counter("wallet_proxy_cache_fallback_total",
                                       "Times Redis failed and a process fell back to its own memory",
                                       registry=r)
        self.cache_degraded = Gauge("wallet_proxy_cache_degraded",
                                    "1 while a process serves from memory because Redis fails",
                                    registry=r, multiprocess_mode="livemax")
        # livemax: the busiest worker's standing event-loop lag (web/lag.py); 0 without gevent.
        self.loop_lag = Gauge("wallet_proxy_event_loop_lag_seconds",
                              "Standing lag of a worker's event loop "
                              "(above 0.1 s: new SessionM calls refused)",
                              registry=r, multiprocess_mode="livemax")
        self.rate_limited = Counter("wallet_proxy_rate_limited_total", "Requests answered 429 by client",
                                    ("client",), registry=r)
        # The JSON body's error.code, e.g. outcome_unknown for a triggered send that may have gone.
        self.errors = Counter("wallet_proxy_errors_total", "Error answers by route and error code",
                              ("route", "code"), registry=r)
        self._children: dict = {}  # label values -> resolved children (.labels() locks and allocates)
        self._gauges_at = 0.0  # monotonic time the breaker/cache gauges were last refreshed

    # -- reported by collaborators ---------------------------------------------------------------

    def coalesced(self) -> None:
        """A wallet read joined a SessionM call already in flight."""
        self.coalesced_waits.inc()

    def upstream(self, name: str, outcome: str, seconds: float) -> None:
        """Record one upstream call; also add its time to the current request's log line."""
        key = ("upstream", name, outcome)
        children = self._children.get(key)
        if children is None:  # .labels() takes a lock and builds a key each time: resolve once
            lower = name.lower()
            children = self._children[key] = (self.upstream_calls.labels(lower, outcome),
                                               self.upstream_latency.labels(lower, outcome))
        children[0].inc()
        children[1].observe(seconds)
        spent = upstream_time.get()
        if spent is not None:
            spent[0] += seconds
        elif has_request_context():
            g.upstream_seconds = g.get("upstream_seconds", 0.0) + seconds

    def cache_fallback(self) -> None:
        """Redis failed; this process serves from its in-process cache for a while."""
        self.cache_fallbacks.inc()
        self.cache_degraded.set(1)

    def client_limited(self, client: str) -> None:
        """A client was answered 429 by the per-client rate limit."""
        self.rate_limited.labels(client).inc()

    def breaker_state(self, state: str) -> None:
        """Publish the SessionM breaker's state."""
        self.breaker.set(BREAKER_STATES.get(state, 2))

    # -- request lifecycle ------------------------------------------------------------------------

    def observe(self, response, seconds: float) -> None:
        """Count one answered request (called from the app's after_request hook)."""
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        self.record(route, request.method, response.status_code, seconds)
        code = g.get("error_code")  # set by the JSON error handler (web/http.py) for every error answer
        if code:
            self.error(route, code)

    def error(self, route: str, code: str) -> None:
        """Count one error answer of `route` by its code (one of the codes of wallet_proxy.errors)."""
        key = ("error", route, code)
        child = self._children.get(key)
        if child is None:
            label = code if code in error_codes() else OTHER_CODE
            child = self._children[key] = self.errors.labels(route, label)
        child.inc()

    def record(self, route: str, method: str, status: int, seconds: float, cache: str | None = None) -> None:
        """Count one answer of `route` and, for a wallet read, its cache result (an Outcome's label)."""
        if method not in KNOWN_METHODS:
            method = OTHER
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # .labels() takes a lock and builds a key each time: resolve once
            children = self._children[key] = (self.requests.labels(route, method, status_label(status)),
                                              self.latency.labels(route, method))
        children[0].inc()
        children[1].observe(seconds)
        if cache is not None:
            child = self._children.get(cache)
            if child is None:
                child = self._children[cache] = self.cache.labels(cache)
            child.inc()

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of this process, or of every worker in multiprocess mode."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


OTHER_CODE = "other"


def error_codes() -> frozenset:
    """Every code an ApiError class declares: the fixed label set of wallet_proxy_errors_total.

    Walked again for each new (route, code) pair only, so classes of modules imported late count.
    """
    from ..errors import ApiError

    codes, todo = set(), [ApiError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo.extend(cls.__subclasses__())
    return frozenset(codes)


def carry_context(spawn):
    """Wrap a `spawn(target, *args)` so the target runs in a copy of the caller's context.

    The wallet's SessionM call runs in its own thread/greenlet; with the request's context carried
    over, its time lands on the request that led the call (the `upstream_ms` of its log line).
    """

    def run(target, *args):
        spawn(contextvars.copy_context().run, target, *args)

    return run


def init_app(app: Flask, metrics: Metrics, services) -> None:
    """Count every request of `app`, whichever blueprint added its route."""

    @app.after_request
    def _observe(response):
        now = time.monotonic()
        started = g.get("started")
        metrics.observe(response, now - started if started else 0.0)
        if now - metrics._gauges_at >= GAUGE_REFRESH:  # states, not events: a refresh a second will do
            metrics._gauges_at = now
            refresh_gauges(metrics, services)
        return response


def refresh_gauges(metrics: Metrics, services) -> None:
    """Publish the SessionM breaker's state, whether the cache fell back from Redis, the loop's lag."""
    breaker = getattr(getattr(services, "wallets", None), "breaker", None)
    if breaker is not None:
        metrics.breaker_state(breaker.state)
    metrics.cache_degraded.set(0 if services.store.healthy() else 1)  # every Store says
    lag = getattr(getattr(services, "wallets", None), "lag", None)
    metrics.loop_lag.set(lag.standing() if lag is not None else 0.0)


def _outcome(response=None, error: Exception | None = None, status: int | None = None) -> str:
    if error is not None:
        name = type(error).__name__.lower()
        return "timeout" if "timeout" in name else "connection_error" if "connection" in name else "error"
    status = response.status_code if status is None else status
    if status < 400:
        return "ok"
    return "http_429" if status == 429 else f"http_{status // 100}xx"


def instrument_session(session, metrics: Metrics, upstreams: dict) -> None:
    """Time every call `session` makes to one of `upstreams` ({base URL: name}), by outcome.

    Covers every client sharing the session (Core tags, Braze sends, and any added later) without
    each one reporting: the one transport reports each call (`upstream.transport.observe`). SessionM
    Connect is left out because the WalletService reports it with SessionM's own outcome
    (user_not_found, upstream_error...).
    """
    from ..upstream import transport

    prefixes = [(url.rstrip("/"), name) for url, name in upstreams.items() if url]

    def observed(request, reply, error, seconds):
        name = next((n for prefix, n in prefixes if str(request.url).startswith(prefix)), None)
        if name is not None:
            outcome = _outcome(error=error.__cause__ or error) if error is not None else _outcome(status=reply.status)
            metrics.upstream(name, outcome, seconds)

    transport.observe(session, observed)
