"""Builds the collaborators of one app (clients, caches, auth) from Settings; no globals."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import requests
from cachetools import TTLCache

from .preview.session import PreviewParts
from .settings import SANDBOX_BRAZE_URL, SANDBOX_CONNECT_URL, SANDBOX_CORE_URL, Settings
from .upstream import transport as upstream
from .upstream.connect import ConnectClient
from .upstream.core import CoreClient
from .wallet.service import WalletService
from .wallet.stores import MemoryStore, Store
from .web import ratelimit
from .web.admission import Gate
from .web.auth import Authenticator
from .web.lag import LoopLag, running_under_gevent
from .web.metrics import Metrics, carry_context, instrument_session

if TYPE_CHECKING:  # annotations only: these are imported where they are built, when configured
    import redis

    from .sandbox import SimState
    from .sends.engine import TriggerEngine
    from .sync.service import AttributeSync
    from .upstream.braze import BrazeClient
    from .web.ratelimit import RateLimiter

log = logging.getLogger(__name__)

EXTERNAL_ID_TTL = 86400  # SPEC: the external id -> user id mapping is cached for a day
EXTERNAL_ID_BYTES = 450  # bytes one remembered external id costs besides its value (key of <= 128)
# WALLET_PROXY_CACHE_MB split between the in-process caches: wallets, rendered bodies (a window of
# seconds: the 2nd and 3rd renders of a message), external ids. Records of sends and syncs are not
# caches (dropping one would resend): they keep their own count bound.
WALLET_SHARE, RENDERED_SHARE, EXTERNAL_ID_SHARE = 0.75, 0.2, 0.05
RECORDS = 100_000


def cache_budgets(settings: Settings) -> dict:
    """Bytes each in-process cache may hold, from WALLET_PROXY_CACHE_MB."""
    total = int(settings.cache_mb * 2**20)
    return {"wallets": int(total * WALLET_SHARE), "rendered": int(total * RENDERED_SHARE),
            "external_ids": int(total * EXTERNAL_ID_SHARE)}


class ExternalIds:
    """Resolves customer external ids to SessionM user ids through Core, cached for a day."""

    def __init__(self, core: CoreClient | None, max_bytes: int, clock=time.time):
        self.core = core
        self._cache: TTLCache = TTLCache(maxsize=max_bytes, ttl=EXTERNAL_ID_TTL, timer=clock,
                                         getsizeof=lambda user_id: len(user_id) + EXTERNAL_ID_BYTES)
        self._lock = threading.Lock()

    def resolve(self, external_id: str, timeout: float) -> str:
        """Return the SessionM user id of `external_id` (ApiError when Core cannot say)."""
        with self._lock:
            known = self._cache.get(external_id)
        if known is not None:
            return known
        user_id = self.core.resolve_external_id(external_id, timeout)
        with self._lock:
            self._cache[external_id] = user_id  # weighed by its value; the key is as long, at most 128
        return user_id


@dataclass
class Services:
    """Everything a request handler needs, hung on `app.extensions["wallet_proxy"]`."""

    settings: Settings
    clock: Callable[[], float]
    session: requests.Session
    auth: Authenticator
    store: Store
    wallets: WalletService
    metrics: Metrics
    preview: PreviewParts
    connect: ConnectClient | None = None
    core: CoreClient | None = None
    external_ids: ExternalIds | None = None
    sandbox: SimState | None = None  # the built-in SessionM/Braze, when nothing is configured
    # The shared Redis client (None without WALLET_PROXY_REDIS_URL); other features reuse it.
    redis: redis.Redis | None = None
    ratelimit: RateLimiter | None = None  # None when per-client limits are off
    braze: BrazeClient | None = None  # None without the Braze settings
    trigger: TriggerEngine | None = None  # sends, at most once
    attribute_sync: AttributeSync | None = None  # loyalty data into Braze profiles
    openapi: dict | None = None  # the OpenAPI document, built on first request (after every blueprint)
    gate: Gate | None = None  # inbound admission: auth behind the one failed-attempt throttle (built from auth)

    def __post_init__(self):
        if self.gate is None:
            self.gate = Gate(self.auth)


def build(settings: Settings, *, clock=time.time, session: requests.Session | None = None,
          store=None, spawn=None, braze_options: dict | None = None) -> Services:
    """Build the services for `settings`; tests inject clock, session, store, spawn and Braze timings."""
    injected = session is not None
    session = session or upstream.make_session(settings.upstream_concurrency)
    sandbox_state = None
    if settings.sandbox:
        from .sandbox import SandboxAdapter, SimState, make_sandbox_app

        sandbox_state = SimState(settings.sandbox_latency, settings.sandbox_fault, clock=clock)
        adapter = SandboxAdapter(make_sandbox_app(sandbox_state))
        for url in (SANDBOX_CONNECT_URL, SANDBOX_CORE_URL, SANDBOX_BRAZE_URL):
            session.mount(url, adapter)
    connect = core = None
    if settings.connect_configured:
        connect = ConnectClient(settings.connect_url, settings.connect_authorization, settings.retailer_id,
                                session, transport=_fast_connect(settings, session, injected))
    if settings.core_configured:
        core = CoreClient(settings.core_url, settings.core_api_key, settings.core_api_secret, session)
    metrics = Metrics()
    instrument_session(session, metrics, {settings.core_url: "sessionm_core", settings.braze_url: "braze"})
    budgets = cache_budgets(settings)
    memory = MemoryStore(budgets["wallets"], settings.cache_ttl + settings.stale_ttl, timer=clock)
    redis_client = locker = None
    if settings.redis_url:
        from .redis_client import make_client
        from .wallet.redis_store import RedisLocker, RedisStore

        redis_client = make_client(settings.redis_url, settings.upstream_concurrency)
        if store is None:
            store = RedisStore(redis_client, memory, settings.cache_ttl, settings.stale_ttl, clock=clock,
                               metrics=metrics)
            locker = RedisLocker(redis_client, store)
    if store is None:  # not `store or memory`: an empty store has len() 0 and is falsy
        store = memory
    # Under gunicorn's gevent worker one loop runs every request: watch its lag (CPU admission).
    lag = LoopLag().start() if running_under_gevent() else None
    wallets = WalletService(connect, store, settings, clock=clock, spawn=spawn, locker=locker,
                            metrics=metrics, lag=lag)
    wallets.spawn = carry_context(wallets.spawn)  # upstream time lands on the leading request's log line
    braze = trigger = None
    if settings.braze_configured:
        braze, trigger = _build_trigger(settings, session, redis_client, clock, braze_options or {})
    attribute_sync = None
    if settings.braze_configured:
        # A webhook gets its answer soon: a few quick retries, then 429/503 + Retry-After for Braze to retry.
        attribute_sync = build_attribute_sync(settings, session, redis_client, wallets, clock, max_attempts=3)
    return Services(settings=settings, clock=clock, session=session, auth=Authenticator(settings.clients),
                    store=store, wallets=wallets, connect=connect, core=core,
                    external_ids=ExternalIds(core, budgets["external_ids"], clock) if core else None,
                    sandbox=sandbox_state, redis=redis_client, metrics=metrics,
                    preview=PreviewParts(settings, redis_client, clock=clock),
                    ratelimit=ratelimit.build(settings, clock=clock), braze=braze, trigger=trigger,
                    attribute_sync=attribute_sync)


def _fast_connect(settings: Settings, session: requests.Session, injected: bool):
    """The hot SessionM call's own transport (upstream/fast.py) under gunicorn's gevent worker; None
    (the session's requests transport) elsewhere: threads, the sandbox's in-process adapter, a
    session a test injected, or a proxy configured in the environment (requests honours it)."""
    if injected or settings.sandbox or not running_under_gevent() or session.trust_env:
        return None
    from .upstream.fast import GeventTransport

    return GeventTransport(settings.connect_url, settings.upstream_concurrency, verify=session.verify)


def _build_trigger(settings: Settings, session, redis_client, clock, options: dict):
    """The Braze client and the at-most-once trigger engine (idempotency in Redis when configured)."""
    from .sends.engine import TriggerEngine
    from .sends.idempotency import MemoryIdempotency, RedisIdempotency
    from .upstream.braze import BrazeClient, RateLimiter

    options = dict(options)
    wait = options.pop("idempotency_wait", 30.0)
    limits = options.pop("rate_limits", {})  # tests: smaller hourly / broadcast_per_minute budgets
    if redis_client is not None and "limiter" not in options:
        # SPEC: with Redis the Braze rate budget is shared by every process and host
        timing = {k: options[k] for k in ("sleep", "monotonic") if k in options}
        options["limiter"] = RateLimiter.shared(redis_client, settings.braze_api_key, **limits, **timing)
    elif limits and "limiter" not in options:
        options["limiter"] = RateLimiter(**limits, **{k: options[k] for k in ("sleep", "monotonic")
                                                      if k in options})
    braze = BrazeClient(settings.braze_url, settings.braze_api_key, session, clock=clock, **options)
    if redis_client is not None:
        store = RedisIdempotency(redis_client, clock=clock, wait_timeout=wait)
    else:
        store = MemoryIdempotency(RECORDS, clock=clock, wait_timeout=wait)
    return braze, TriggerEngine(braze, store)


def build_attribute_sync(settings: Settings, session, redis_client, wallets, clock, *, state=None, bucket=None,
                         **client_options):
    """The attribute sync (route and CLI): Braze's /users/track client and the last-synced state.

    With Redis, the state lives there (shared by every process and the CLI); else the route keeps it
    in process memory and the CLI passes its state file.
    """
    from .sync.service import AttributeSync
    from .sync.state import MemoryState, RedisState
    from .upstream.braze_users import BrazeUsersClient

    if state is None:
        state = RedisState(redis_client) if redis_client is not None else MemoryState(RECORDS)
    from .upstream.braze_users import WINDOW, track_bucket, track_bucket_shape

    limit = settings.track_rate * WINDOW  # BRAZE_TRACK_RATE, as Braze counts it: per 3 s window
    if bucket is None and redis_client is not None:
        from .upstream.budget import RedisTokenBucket, budget_name

        # Braze counts /users/track calls per workspace: every process and CLI run shares one budget.
        bucket = RedisTokenBucket(redis_client, budget_name(settings.braze_api_key, "users_track"),
                                  *track_bucket_shape(limit, WINDOW), fallback=track_bucket(limit, WINDOW))
    elif bucket is None:
        bucket = track_bucket(limit, WINDOW)
    client = BrazeUsersClient(settings.braze_url, settings.braze_api_key, session, bucket=bucket,
                              batch=settings.track_batch, clock=clock, **client_options)
    return AttributeSync(wallets, client, state, clock=clock)
