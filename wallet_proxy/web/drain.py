"""How long a stopping process must keep serving: the longest request it can be in, route by route.

On SIGTERM gunicorn stops accepting and gives the requests in flight `graceful_timeout` seconds before
it kills them; a platform (Kubernetes' `terminationGracePeriodSeconds`, Compose's `stop_grace_period`)
then waits that long plus its own pause before SIGKILL. A triggered send cut there leaves its outcome
unknown to everyone (Braze may have sent; the caller got no answer), so the window is derived here
from the very settings and constants that bound each route, and gunicorn.conf.py, the manifests'
tests and the README all use this one function:

    longest request = body read + slowest route + answer write
    slowest route   = max of
        wallet read, tags        WALLET_PROXY_DEADLINE
        preview render           its isolate's 1 s limit
        POST /v1/braze/trigger   max(Braze retry budget + one Braze attempt (connect + read),
                                     the wait of a repeat for the first send with its key)
        Braze-compatible relay   WALLET_PROXY_RELAY_BUDGET + one Braze attempt
        POST .../sync            WALLET_PROXY_DEADLINE (the wallet) + the route's Braze budget
                                 + one /users/track attempt
    drain window    = ceil(longest request + DRAIN_MARGIN)
    pod grace       = preStop pause + drain window + KILL_MARGIN

"One attempt" is there because a Braze call started just before its budget ends runs to its own
timeout (connect + read): it is never cut, since a cut send's outcome is unknown. A send of many
chunks shares one budget: a chunk whose turn comes after it is not attempted (BrazeClient.send).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DRAIN_MARGIN = 3.0  # seconds: scheduling, Redis round trips for idempotency records, the log line
KILL_MARGIN = 5  # seconds between gunicorn's own give-up and the platform's SIGKILL
PRE_STOP = 5  # seconds the pod keeps serving after SIGTERM's preStop, while endpoints drop it
# What bounds reading a request body and writing an answer to a stalled reader (the same kind of
# limit as the request head's 10 s); see wallet_proxy/web/worker.py.
BODY_READ_TIMEOUT = 10.0
ANSWER_WRITE_TIMEOUT = 10.0
RELAY_BUDGET = 1.5  # WALLET_PROXY_RELAY_BUDGET's default: the relay answers before Braze clients' ~2 s
PREVIEW_RENDER_LIMIT = 1.0
# The bounds the service runs with, as their owners define them. Copied, not imported: gunicorn.conf.py
# reads this module in the master, before gevent patches the workers, and importing the HTTP clients
# there would import ssl unpatched. tests/test_drain.py keeps each equal to its source.
BRAZE_CONNECT_TIMEOUT = 2.0  # upstream/braze.py BrazeClient(connect_timeout=)
BRAZE_READ_TIMEOUT = 10.0  # BrazeClient(timeout=)
BRAZE_RETRY_BUDGET = 20.0  # BrazeClient(retry_budget=)
TRACK_CONNECT_TIMEOUT = 2.0  # upstream/braze_users.py BrazeUsersClient(connect_timeout=)
TRACK_READ_TIMEOUT = 10.0  # BrazeUsersClient(timeout=)
IDEMPOTENCY_WAIT = 30.0  # sends/idempotency.py IdempotencyStore(wait_timeout=): a repeat waits for the first
SYNC_BRAZE_SECONDS = 5.0  # sync/routes.py BRAZE_SECONDS: the sync route's Braze budget


@dataclass(frozen=True)
class Window:
    """The per-route bounds (seconds), the longest request, and the windows derived from it."""

    routes: dict
    body_read: float
    answer_write: float

    @property
    def longest_request(self) -> float:
        return self.body_read + max(self.routes.values()) + self.answer_write

    @property
    def graceful_timeout(self) -> int:
        """gunicorn's `graceful_timeout`: every request in flight at SIGTERM gets its answer."""
        return math.ceil(self.longest_request + DRAIN_MARGIN)

    def pod_grace(self, pre_stop: float = PRE_STOP) -> int:
        """The least `terminationGracePeriodSeconds` (or `stop_grace_period`) after a `pre_stop` pause."""
        return math.ceil(pre_stop) + self.graceful_timeout + KILL_MARGIN


def drain_window(settings=None, *, relay_budget: float | None = None, body_read: float | None = None,
                 answer_write: float | None = None) -> Window:
    """The drain window for `settings` (default: the defaults); see the module's formula."""
    from ..settings import Settings

    settings = settings or Settings()
    if relay_budget is None:
        relay_budget = getattr(settings, "relay_budget", RELAY_BUDGET)
    if body_read is None:  # WALLET_PROXY_BODY_TIMEOUT: the worker's bound on reading a body
        body_read = getattr(settings, "body_timeout", BODY_READ_TIMEOUT)
    if answer_write is None:  # WALLET_PROXY_WRITE_TIMEOUT: its bound on a stalled answer
        answer_write = getattr(settings, "write_timeout", ANSWER_WRITE_TIMEOUT)
    braze_attempt = BRAZE_CONNECT_TIMEOUT + BRAZE_READ_TIMEOUT
    track_attempt = TRACK_CONNECT_TIMEOUT + TRACK_READ_TIMEOUT
    routes = {
        "wallet": settings.deadline,
        "tags": settings.deadline,
        "preview_render": PREVIEW_RENDER_LIMIT,
        "trigger": max(BRAZE_RETRY_BUDGET + braze_attempt, IDEMPOTENCY_WAIT),
        "relay": relay_budget + braze_attempt,
        "sync": settings.deadline + SYNC_BRAZE_SECONDS + track_attempt,
    }
    return Window(routes=routes, body_read=body_read, answer_write=answer_write)
