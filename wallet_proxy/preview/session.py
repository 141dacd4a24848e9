"""The preview page's sign-in state: server-side sessions.

A session cookie is signed, but a signature alone cannot be taken back: logging out only deleted the
cookie from that browser, and a copy kept working for 8 hours. So a session also exists on the
server (in Redis when configured, so every process and host agrees; else in this process), and
logging out deletes it there.

The login form's failed attempts are throttled by the one throttle of every door (web/admission.py:
per address and per client name, 10 a minute, then `429` + `Retry-After`).
No Flask here.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time

from cachetools import TTLCache

from ..errors import UpstreamUnavailable
from .isolate import IsolatedPlayground

log = logging.getLogger(__name__)

SESSION_MAX_AGE = 8 * 3600  # a working day; then sign in again
REDIS_PREFIX = "wallet-proxy:preview-session:"
MAX_TEMPLATE_CHARS = 20_000  # a template longer than this is a 400, before any render


class Sessions:
    """Signed-in sessions by id: started at sign-in, checked on every request, ended at logout."""

    def __init__(self, redis=None, *, clock=time.time, max_age: int = SESSION_MAX_AGE, maxsize: int = 10_000):
        self.redis = redis
        self.max_age = max_age
        self._memory: TTLCache = TTLCache(maxsize=maxsize, ttl=max_age, timer=clock)
        self._lock = threading.Lock()

    def start(self, name: str) -> str:
        """Record a new session of client `name`; return its id (unguessable, 192 bits)."""
        sid = secrets.token_urlsafe(24)
        if self.redis is not None:
            try:
                self.redis.set(REDIS_PREFIX + sid, name, ex=self.max_age)
            except Exception as exc:  # no session that other processes could not see
                log.warning("preview sessions: Redis unreachable (%s)", type(exc).__name__)
                raise UpstreamUnavailable("sign-in needs the shared session store (Redis), which is "
                                          "unreachable", retry_after=5) from None
        else:
            with self._lock:
                self._memory[sid] = name
        return sid

    def alive(self, sid: str, name: str) -> bool:
        """True while session `sid` of client `name` has not ended (fails closed if Redis fails)."""
        if not sid:
            return False
        if self.redis is not None:
            try:
                stored = self.redis.get(REDIS_PREFIX + sid)
            except Exception as exc:
                log.warning("preview sessions: Redis unreachable (%s)", type(exc).__name__)
                return False
            stored = stored.decode() if isinstance(stored, bytes) else stored
            return stored == name
        with self._lock:
            return self._memory.get(sid) == name

    def end(self, sid: str) -> None:
        """End session `sid` everywhere: a copy of its cookie stops working."""
        if self.redis is not None:
            try:
                self.redis.delete(REDIS_PREFIX + sid)
            except Exception as exc:
                log.warning("preview sessions: Redis unreachable at logout (%s)", type(exc).__name__)
                raise UpstreamUnavailable("logout needs the shared session store (Redis), which is "
                                          "unreachable: try again", retry_after=5) from None
        with self._lock:
            self._memory.pop(sid, None)


def secret_key(settings) -> bytes:
    """Derive the session/CSRF key from the configured secrets, so every worker agrees on it."""
    material = "\n".join(sorted(f"{c.name}:{c.secret}" for c in settings.clients))
    material += "\n" + (settings.signing_key or "")
    return hmac.new(b"wallet-proxy preview session v1", material.encode(), hashlib.sha256).digest()


class PreviewParts:
    """The preview's collaborators for one app, built with its Services (never module globals).

    The Liquid playground starts render processes, so it is made on first use.
    """

    def __init__(self, settings, redis=None, *, clock=time.time):
        self.key = secret_key(settings)
        self.sessions = Sessions(redis, clock=clock)
        self._clock = clock
        self._playground: IsolatedPlayground | None = None
        self._lock = threading.Lock()

    @property
    def playground(self) -> IsolatedPlayground:
        """The app's Liquid playground: each render runs in its own process under memory and time
        limits, so no template can slow the workers serving Braze."""
        with self._lock:
            if self._playground is None:
                self._playground = IsolatedPlayground(clock=self._clock, max_source=MAX_TEMPLATE_CHARS)
            return self._playground
