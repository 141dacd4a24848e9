"""Inbound admission: the one place every door lets a request in.

Each door (wallet, tags, sync, sends, the Braze-compatible relay, the preview page and its API, the
operator routes) admits a request in the same order, through this module:

1. **who** -- `Gate.admit`: Basic or Bearer credentials against WALLET_PROXY_CLIENTS (the preview's
   form comes here too, as Basic), behind ONE throttle of failed attempts per address and per client
   name (`FailureThrottle`); then the route's scope.
2. **which ids** -- `ids.check_user_id`, `ids.check_id_type` (one `id_type` vocabulary),
   `ids.normalise_culture`, `ids.check_flag` (one boolean flag rule) and `resolve_seed_id` (external ids
   through Core, in one place); the signature wherever wallet data leaves (`check_wallet_signature`:
   a `sig` covers the id and its `id_type`).
3. **what body** -- `request.get_json()` (web/http.py `JsonRequest`): Content-Type, size, then depth,
   duplicate keys, non-finite numbers and unpaired surrogates before any route looks inside; a list
   longer than its route allows is refused before its items are validated (sends/plan.py).

The CLI's entry admits itself the same way at its start: no command runs on the built-in simulators
unless WALLET_PROXY_SANDBOX=1 asks for them (wallet_proxy/cli.py).
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
import time

from cachetools import TTLCache

from ..errors import AuthThrottled, InvalidRequest, NotConfigured, Unauthorized
from ..ids import EXTERNAL
from ..upstream.pacing import TokenBucket
from .auth import Authenticator, check_signature, credentials

FAILURES = 10  # failed authentications per address, and per client name...
WINDOW = 60.0  # ...within this many seconds; then 429 + Retry-After (SPEC: WALLET_PROXY_CLIENTS)
KNOWN_CREDENTIALS = 256  # credentials that authenticated here, never throttled (see Gate)


class FailureThrottle:
    """At most FAILURES failed authentications per key (an address, a client name) in any WINDOW.

    A token bucket per key (the one of `upstream.pacing`): FAILURES at once, then one more every
    WINDOW / FAILURES seconds. A key's bucket is forgotten once it has refilled. Per process, like
    the per-client rate limit.
    """

    def __init__(self, *, failures: int = FAILURES, window: float = WINDOW, clock=time.monotonic,
                 maxsize: int = 100_000):
        self.failures = failures
        self.window = window
        self.clock = clock
        self._buckets: TTLCache = TTLCache(maxsize=maxsize, ttl=window * failures, timer=clock)
        self._lock = threading.Lock()

    def retry_after(self, *keys) -> float:
        """Seconds before every one of `keys` may try again (0.0: they may try now)."""
        wait = 0.0
        with self._lock:
            buckets = [self._buckets.get(key) for key in keys if key is not None]
        for bucket in buckets:
            if bucket is not None:
                wait = max(wait, bucket.wait_time(1))
        return wait

    def failed(self, *keys) -> None:
        """Count one failed attempt against each of `keys`."""
        for key in keys:
            if key is None:
                continue
            with self._lock:
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = self._buckets[key] = TokenBucket.for_window(self.failures, self.window,
                                                                         self.failures, self.clock)
            bucket.take(1)


class Gate:
    """Authentication for every door, behind the one throttle of failed attempts.

    While an address (or a client name) is over its failures, a credential is refused with `429`
    BEFORE it is compared: guessing stays slow whatever is tried, and a right guess cannot be told
    from a wrong one. A credential that has already authenticated in this process is not a guess and
    is never throttled: Braze calls from shared addresses, and one campaign with a wrong secret must
    not lock out every other campaign's (correct) requests from the same address. Missing credentials
    are not counted (a browser asks without them first).
    """

    def __init__(self, authenticator: Authenticator, throttle: FailureThrottle | None = None):
        self.authenticator = authenticator
        self.throttle = throttle or FailureThrottle()
        self._names = {client.name for client in authenticator.clients}
        self._key = os.urandom(16)  # known credentials are kept as keyed digests, never as text
        self._known: dict[bytes, object] = {}
        self._lock = threading.Lock()

    def _digest(self, header: str) -> bytes:
        return hashlib.blake2b(header.encode("utf-8", "surrogatepass"), key=self._key, digest_size=16).digest()

    def known(self, header: str | None, scope: str):
        """The client of a credential that already authenticated here, if it has `scope`; else None.

        What a fast path may trust without counting or throttling anything."""
        if not header:
            return None
        with self._lock:
            client = self._known.get(self._digest(header))
        return client if client is not None and scope in client.scopes else None

    def admit(self, header: str | None, scope: str, address: str):
        """The client of `header` for `scope`; Unauthorized, Forbidden, or AuthThrottled (429)."""
        digest = self._digest(header) if header else None
        if digest is not None:
            with self._lock:
                client = self._known.get(digest)
            if client is not None:
                return self.authenticator.check_scope(client, scope)
        name, secret = credentials(header)
        name_key = ("name", name) if name in self._names else None  # a bounded set of keys
        address_key = ("address", address)
        if secret is not None:
            wait = self.throttle.retry_after(address_key, name_key)
            if wait > 0:
                raise AuthThrottled(retry_after=max(1, math.ceil(wait)))
        try:
            client = self.authenticator.identify(name, secret)
        except Unauthorized:
            if secret is not None and self.authenticator.clients:
                self.throttle.failed(address_key, name_key)
            raise
        if digest is not None and len(header) <= 1024:
            with self._lock:
                if len(self._known) >= KNOWN_CREDENTIALS:
                    self._known.clear()  # a rotation or many clients: start over, never grow
                self._known[digest] = client
        return self.authenticator.check_scope(client, scope)


MAX_SIG = 128  # a hex HMAC-SHA256 is 64; the wallet query schema allows up to 128


def check_wallet_signature(settings, user_id: str, sig: str | None, id_type: str) -> None:
    """The one signature check wherever wallet data leaves (wallet reads, profile sync).

    A `sig` longer than any signature (128 characters, as the wallet query's schema says) is a 400
    whether signing is on or not: one rule for every door that takes one.
    """
    if sig is not None and len(sig) > MAX_SIG:
        raise InvalidRequest(details={"sig": [f"Longer than maximum length {MAX_SIG}."]})
    check_signature(settings.signing_key, user_id, sig, id_type)


def resolve_seed_id(services, user_id: str, id_type: str, deadline: float) -> str:
    """The SessionM user id of a request's id: itself, or Core's answer for an external id."""
    if id_type != EXTERNAL:
        return user_id
    if services.external_ids is None:
        raise NotConfigured("id_type=external needs the SessionM Core settings")
    return services.external_ids.resolve(user_id, max(0.05, deadline - time.monotonic()))


# The Braze-compatible door: the top-level paths of Braze's own REST API. A Braze client pointed at this
# service (SessionM's Braze variant, a Braze client library) calls these; every answer under them,
# unknown paths (404), wrong methods (405), auth, validation and our own 500 included, is Braze-shaped
# (`message` and `errors` beside our `ok` / `error`). Our own routes (/v1/..., /preview, /metrics...)
# never start with one of these.
BRAZE_DOOR = ("/campaigns", "/canvas", "/users", "/messages", "/transactional", "/sends", "/subscription",
              "/catalogs", "/segments", "/kpi", "/templates", "/content_blocks", "/email", "/sms", "/events",
              "/purchases", "/preference_center", "/scim", "/feed", "/app_group", "/custom_attributes")


def braze_door(path: str) -> bool:
    """True when `path` is on the Braze-compatible door (its first segment is one of Braze's)."""
    first = "/" + path.lstrip("/").split("/", 1)[0]
    return first in BRAZE_DOOR
