"""Settings: read once from the environment (and `.env`) into one typed, immutable object."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Mapping

from dotenv import dotenv_values

from . import redis_client

SCOPES = frozenset({"wallet", "tags", "trigger", "sync", "preview", "metrics", "admin"})
# `admin` (purge, metrics) includes the marketers' `preview` and `metrics`; `preview` alone is the page and
# nothing else; `metrics` alone reads GET /metrics and nothing else (what a Prometheus server holds)
IMPLIED = {"admin": frozenset({"preview", "metrics"})}

# Hosts the built-in simulators answer on (see wallet_proxy.sandbox). `.invalid` can never resolve
# (RFC 2606), so a sandbox URL can never leak a request onto the network.
SANDBOX_CONNECT_URL = "http://sessionm-connect.sandbox.invalid"
SANDBOX_CORE_URL = "http://sessionm-core.sandbox.invalid"
SANDBOX_BRAZE_URL = "http://braze.sandbox.invalid"

GROUPS = {
    "connect": ("SESSIONM_CONNECT_URL", "SESSIONM_CONNECT_AUTH", "SESSIONM_RETAILER_ID"),
    "core": ("SESSIONM_CORE_URL", "SESSIONM_CORE_API_KEY", "SESSIONM_CORE_API_SECRET"),
    "braze": ("BRAZE_REST_URL", "BRAZE_API_KEY"),
}


class ConfigError(Exception):
    """The settings cannot run a service; the message names every problem."""


@dataclass(frozen=True)
class Client:
    """One inbound credential: a name, a secret, and the scopes it may use."""

    name: str
    secret: str = field(repr=False)
    scopes: frozenset = SCOPES

    def __post_init__(self):
        implied = frozenset().union(*(IMPLIED.get(scope, ()) for scope in self.scopes))
        object.__setattr__(self, "scopes", frozenset(self.scopes) | implied)


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, typed and validated."""

    connect_url: str | None = None
    connect_auth: str | None = field(default=None, repr=False)
    retailer_id: str | None = None
    core_url: str | None = None
    core_api_key: str | None = field(default=None, repr=False)
    core_api_secret: str | None = field(default=None, repr=False)
    braze_url: str | None = None
    braze_api_key: str | None = field(default=None, repr=False)
    clients: tuple = ()
    signing_key: str | None = field(default=None, repr=False)
    cache_ttl: float = 60.0
    stale_ttl: float = 300.0
    swr_window: float = 10.0
    cache_mb: float = 256.0  # WALLET_PROXY_CACHE_MB: every in-process cache of a process, in MiB
    cultures: tuple | None = None  # WALLET_PROXY_CULTURES: the allow-list, normalised (None: any tag)
    redis_url: str | None = field(default=None, repr=False)
    deadline: float = 1.8
    body_timeout: float = 10.0  # seconds for a whole request body (half of it at most between two bytes)
    write_timeout: float = 10.0  # seconds an answer's write may stall on a client that does not read
    upstream_timeout: float = 1.5
    breaker_failures: int = 5
    breaker_cooldown: float = 10.0
    breaker_probe_interval: float = 1.0
    upstream_concurrency: int = 64
    client_rate: float | None = None
    public_metrics: bool = False
    sandbox: bool = False
    sandbox_latency: float = 0.0
    sandbox_fault: str | None = None
    max_body_bytes: int = 1_048_576
    relay_budget: float = 1.5  # seconds of our own retrying of Braze on the Braze-compatible door
    track_batch: int = 75  # /users/track objects a call (50 on Braze's MAU contracts)
    track_rate: float = 1000.0  # /users/track requests a second (Braze: 3,000 per 3 s)

    @property
    def connect_configured(self) -> bool:
        """True when the wallet routes have a SessionM Connect to call."""
        return bool(self.connect_url)

    @property
    def core_configured(self) -> bool:
        """True when the tag routes have a SessionM Core to call."""
        return bool(self.core_url)

    @property
    def braze_configured(self) -> bool:
        """True when the trigger routes have a Braze to call."""
        return bool(self.braze_url)

    @property
    def connect_authorization(self) -> str:
        """The Authorization header for Connect: SessionM's Basic string, with or without `Basic`."""
        auth = (self.connect_auth or "").strip()
        return auth if auth.lower().startswith("basic ") else f"Basic {auth}"

    def with_overrides(self, **changes) -> "Settings":
        """Return a copy with some fields changed (tests, CLI flags)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, dotenv_path: str | None = ".env", *,
                 implicit_sandbox: bool = True) -> "Settings":
        """Read settings from `environ` (default: os.environ) over the `.env` file; raise ConfigError.

        `implicit_sandbox=False` is the production entry's reading (wsgi.py): with no upstream
        settings it refuses to start unless WALLET_PROXY_SANDBOX=1 asks for the simulators.
        """
        env: dict[str, str] = {}
        if dotenv_path and os.path.isfile(dotenv_path):
            env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        return parse(env, implicit_sandbox=implicit_sandbox)


TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def _parse_cultures(raw: str | None, problems: list) -> tuple | None:
    """WALLET_PROXY_CULTURES: comma-separated language tags, normalised as the wallet route does."""
    if raw is None:
        return None
    from .ids import DEFAULT_CULTURE, normalise_culture

    out = [DEFAULT_CULTURE]  # the culture anything outside the list is answered as
    for item in raw.split(","):
        if not item.strip():
            continue
        try:
            culture = normalise_culture(item)
        except ValueError as exc:
            problems.append(f"WALLET_PROXY_CULTURES: {item.strip()[:40]!r} {exc}")
            continue
        if culture not in out:
            out.append(culture)
    return tuple(out)


def parse(env: Mapping[str, str], *, implicit_sandbox: bool = True) -> Settings:
    """Build Settings from a plain mapping; collect every problem before raising ConfigError.

    With no upstream settings at all, `implicit_sandbox` (development: `make run`, `wallet-proxy
    serve`, tests) runs on the simulators; without it (the production entry) only an explicit
    WALLET_PROXY_SANDBOX=1 does, so a deploy that lost its environment fails instead of answering
    made-up wallets. WALLET_PROXY_SANDBOX=1 beside upstream settings is refused either way.
    """
    problems: list[str] = []
    get = lambda name: (env.get(name) or "").strip() or None  # noqa: E731

    present = {g: [n for n in names if get(n)] for g, names in GROUPS.items()}
    for group, names in GROUPS.items():
        have = present[group]
        if have and len(have) != len(names):
            missing = [n for n in names if n not in have]
            problems.append(f"{group} settings are all or nothing: {', '.join(missing)} missing "
                            f"(set: {', '.join(have)})")
    configured = [n for names in present.values() for n in names]
    asked = (get("WALLET_PROXY_SANDBOX") or "").lower()
    if asked and asked not in TRUE + FALSE:
        problems.append(f"WALLET_PROXY_SANDBOX must be 1 or 0, got {get('WALLET_PROXY_SANDBOX')!r}")
    asked_sandbox = asked in TRUE
    if asked_sandbox and configured:
        problems.append("WALLET_PROXY_SANDBOX=1 is refused together with upstream settings "
                        f"({', '.join(configured)}): unset one or the other")
    if not configured and not asked_sandbox and not implicit_sandbox:
        problems.append("no upstream settings: set at least one group -- "
                        + "; ".join(f"{group}: {', '.join(names)}" for group, names in GROUPS.items())
                        + " -- or WALLET_PROXY_SANDBOX=1 to answer from the built-in simulators "
                          "(never for real customers)")
    sandbox = not configured and (asked_sandbox or implicit_sandbox)

    def number(name, default, kind=float, low=None, high=None):
        raw = get(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            problems.append(f"{name} must be a{'n integer' if kind is int else ' number'}, got {raw!r}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            problems.append(f"{name} must be {bounds}, got {raw!r}")
            return default
        return value

    for name in ("SESSIONM_CONNECT_URL", "SESSIONM_CORE_URL", "BRAZE_REST_URL"):
        url = get(name)
        if url and not url.startswith(("http://", "https://")):
            problems.append(f"{name} must start with http:// or https://")

    clients = _parse_clients(get("WALLET_PROXY_CLIENTS"), problems)
    if sandbox and not clients:
        clients = (Client("demo", "demo"),)

    client_rate = number("WALLET_PROXY_CLIENT_RATE", None, float, 0.001)
    if get("WALLET_PROXY_CACHE_SIZE"):
        problems.append("WALLET_PROXY_CACHE_SIZE (a count of wallets) was replaced by WALLET_PROXY_CACHE_MB "
                        "(MiB of memory for every in-process cache): set that instead")
    cultures = _parse_cultures(get("WALLET_PROXY_CULTURES"), problems)
    deadline = number("WALLET_PROXY_DEADLINE", 1.8, float, 0.05, 30)
    settings = Settings(
        connect_url=(get("SESSIONM_CONNECT_URL") or (SANDBOX_CONNECT_URL if sandbox else None)),
        connect_auth=get("SESSIONM_CONNECT_AUTH") or ("c2FuZGJveDpzYW5kYm94" if sandbox else None),
        retailer_id=get("SESSIONM_RETAILER_ID") or ("sandbox-retailer" if sandbox else None),
        core_url=(get("SESSIONM_CORE_URL") or (SANDBOX_CORE_URL if sandbox else None)),
        core_api_key=get("SESSIONM_CORE_API_KEY") or ("sandbox-key" if sandbox else None),
        core_api_secret=get("SESSIONM_CORE_API_SECRET") or ("sandbox-secret" if sandbox else None),
        braze_url=(get("BRAZE_REST_URL") or (SANDBOX_BRAZE_URL if sandbox else None)),
        braze_api_key=get("BRAZE_API_KEY") or ("sandbox-braze-key" if sandbox else None),
        clients=clients,
        signing_key=get("WALLET_PROXY_SIGNING_KEY"),
        cache_ttl=number("WALLET_PROXY_CACHE_TTL", 60.0, float, 0),
        stale_ttl=number("WALLET_PROXY_STALE_TTL", 300.0, float, 0),
        swr_window=number("WALLET_PROXY_SWR_WINDOW", 10.0, float, 0),
        cache_mb=number("WALLET_PROXY_CACHE_MB", 256.0, float, 1, 1_000_000),
        cultures=cultures,
        redis_url=get("WALLET_PROXY_REDIS_URL"),
        deadline=deadline,
        body_timeout=number("WALLET_PROXY_BODY_TIMEOUT", 10.0, float, 0.1, 300),
        write_timeout=number("WALLET_PROXY_WRITE_TIMEOUT", 10.0, float, 0.1, 300),
        upstream_timeout=number("WALLET_PROXY_UPSTREAM_TIMEOUT", 1.5, float, 0.01, 30),
        breaker_failures=number("WALLET_PROXY_BREAKER_FAILURES", 5, int, 1),
        breaker_cooldown=number("WALLET_PROXY_BREAKER_COOLDOWN", 10.0, float, 0),
        breaker_probe_interval=number("WALLET_PROXY_BREAKER_PROBE_INTERVAL", 1.0, float, 0),
        upstream_concurrency=number("WALLET_PROXY_UPSTREAM_CONCURRENCY", 64, int, 1, 10_000),
        client_rate=client_rate,
        public_metrics=get("WALLET_PROXY_PUBLIC_METRICS") in ("1", "true", "yes", "on"),
        sandbox=sandbox,
        sandbox_latency=number("WALLET_PROXY_SANDBOX_LATENCY", 0.0, float, 0, 60),
        sandbox_fault=get("WALLET_PROXY_SANDBOX_FAULT"),
        relay_budget=number("WALLET_PROXY_RELAY_BUDGET", 1.5, float, 0, 30),
        track_batch=number("BRAZE_TRACK_BATCH", 75, int, 1, 75),
        track_rate=number("BRAZE_TRACK_RATE", 1000.0, float, 0.001),
    )
    redis_url = settings.redis_url
    if redis_url:
        try:
            redis_client.check_url(redis_url)
        except ValueError as exc:
            problems.append(f"WALLET_PROXY_REDIS_URL {exc}")
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return settings


def _parse_clients(raw: str | None, problems: list[str]) -> tuple:
    """Parse `name:secret[:scope+scope]` entries, comma-separated; never echo a secret."""
    if not raw:
        return ()
    clients = []
    for index, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            problems.append(f"WALLET_PROXY_CLIENTS entry {index + 1} must be name:secret[:scope+scope]")
            continue
        scopes = SCOPES
        if len(parts) == 3 and parts[2]:
            scopes = frozenset(s.strip() for s in parts[2].split("+") if s.strip())
            unknown = scopes - SCOPES
            if unknown:
                problems.append(f"WALLET_PROXY_CLIENTS entry {parts[0]!r} has unknown scope(s) "
                                f"{', '.join(sorted(unknown))} (known: {', '.join(sorted(SCOPES))})")
                continue
        clients.append(Client(parts[0], parts[1], scopes))
    return tuple(clients)
