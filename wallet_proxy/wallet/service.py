"""The wallet service: cache -> single flight -> bounded SessionM call, inside a hard deadline.

Braze renders each message 2-3 times and gives up after 2 s, so:
- concurrent requests for one (user, culture) share one SessionM call (single flight);
- a SessionM call runs in its own worker and callers wait on it with their own deadline, so a hung
  or trickling SessionM never holds an answer past WALLET_PROXY_DEADLINE;
- at most WALLET_PROXY_UPSTREAM_CONCURRENCY calls are in flight; no slot in time is a fast 503;
- past its TTL a wallet is served while one refresh runs (stale-while-revalidate), and when SessionM
  fails it is served up to STALE_TTL old (stale-if-error).
"""
from __future__ import annotations

import collections
import math
import logging
import threading
import time
from dataclasses import dataclass

from ..errors import BREAKER_FAILURES, ApiError, Internal, UpstreamTimeout, UpstreamUnavailable
from ..upstream.breaker import Breaker
from .stores import Entry

log = logging.getLogger(__name__)

HIT, MISS, SWR, SIE = "hit", "miss", "stale-while-revalidate", "stale-if-error"
MIN_CALL = 0.1  # seconds a SessionM call needs at least to be worth starting
ANSWER_MARGIN = 0.025  # seconds kept to turn a timeout into an answer before the deadline passes


@dataclass
class Served:
    """What the route needs: the entry, how it was obtained, and seconds left fresh (<0: stale)."""

    entry: Entry
    status: str
    ttl_left: float
    coalesced: bool = False

    @property
    def stale(self) -> bool:
        return self.status in (SWR, SIE)


class Flight:
    """One SessionM call that several requests wait for."""

    def __init__(self):
        self.done = threading.Event()
        self.entry: Entry | None = None
        self.error: ApiError | None = None

    def wait(self, deadline: float) -> Entry:
        """Wait until the call lands or `deadline` (monotonic) passes; raise its error or a timeout."""
        if not self.done.wait(max(0.0, deadline - time.monotonic())):
            raise UpstreamTimeout("SessionM did not answer before this request's deadline")
        if self.error is not None:
            raise self.error
        return self.entry


class SingleFlight:
    """Registry of flights in progress, one per key, in this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flights: dict = {}

    def join(self, key) -> tuple[Flight, bool]:
        """Return (flight, True) to the caller who must start the call, (flight, False) to waiters."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def finish(self, key, flight: Flight, entry: Entry | None = None, error: ApiError | None = None):
        """Publish the outcome and let the next request for this key start a new call."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.entry, flight.error = entry, error
        flight.done.set()

    def running(self, key) -> bool:
        """Whether a call for `key` is in flight in this process."""
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)


class _Ticket:
    """A place in the queue for a SessionM slot."""

    __slots__ = ("event", "granted")

    def __init__(self):
        self.event = threading.Event()
        self.granted = False


class Slots:
    """At most `size` SessionM calls in flight, handed out first come, first served.

    A freed slot goes straight to the oldest waiter, never to a request that just arrived: during a
    send the slots are oversubscribed, and with barging an unlucky waiter could lose every race
    until its deadline (and its renders with it). `wake_all` makes every waiter re-check whether to
    give up (the breaker just opened) at once, without handing a lock from waiter to waiter.
    """

    def __init__(self, size: int):
        self._lock = threading.Lock()
        self._free = size
        self._queue: collections.deque = collections.deque()  # waiting tickets, oldest first

    def take(self, until: float, give_up=lambda: False) -> bool:
        """Take a slot, waiting until `until` (monotonic) at most; False when none, or `give_up()`."""
        with self._lock:
            if give_up():
                return False
            if self._free > 0 and not self._queue:
                self._free -= 1
                return True
            ticket = _Ticket()
            self._queue.append(ticket)
        while True:
            left = until - time.monotonic()
            if left > 0:
                ticket.event.wait(left)
            with self._lock:
                if ticket.granted:
                    if not give_up():
                        return True
                    self._hand_on()  # a slot we will not use goes to the next in line
                    return False
                if left <= 0 or give_up():
                    self._queue.remove(ticket)
                    return False
                ticket.event.clear()  # woken to re-check, not granted: wait on

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, or to the pool."""
        with self._lock:
            self._hand_on()

    def wake_all(self) -> None:
        """Wake every waiter so each re-checks whether to give up (the breaker just opened)."""
        with self._lock:
            for ticket in self._queue:
                ticket.event.set()

    def _hand_on(self) -> None:
        if self._queue:
            ticket = self._queue.popleft()
            ticket.granted = True
            ticket.event.set()
        else:
            self._free += 1


class WalletService:
    """Serves normalised wallets from the store, fetching from SessionM when needed."""

    def __init__(self, client, store, settings, *, breaker: Breaker | None = None, clock=time.time,
                 spawn=None, metrics=None, locker=None):
        self.client = client
        self.store = store
        self.settings = settings
        self.clock = clock
        self.breaker = breaker or Breaker(settings.breaker_failures, settings.breaker_cooldown)
        self.flights = SingleFlight()
        self.slots = Slots(settings.upstream_concurrency)
        self.spawn = spawn or _spawn_thread
        self.metrics = metrics
        # Optional cross-process lock (Redis): when another process holds it, wait for its result.
        self.locker = locker

    def get(self, user_id: str, culture: str, deadline: float) -> Served:
        """Return the wallet of (user, culture) within `deadline` (monotonic), or raise an ApiError."""
        ttl = self.settings.cache_ttl
        entry = self.store.get(user_id, culture)
        if entry is not None:
            ttl = entry.ttl or ttl
            age = self.clock() - entry.fetched_at
            if age < ttl:
                return Served(entry, HIT, ttl - age)
            if age < ttl + self.settings.swr_window and self.breaker.state == "closed":
                self.refresh(user_id, culture)
                return Served(entry, SWR, ttl - age)
        try:
            fresh, coalesced = self._fetch(user_id, culture, deadline)
            fresh_ttl = fresh.ttl or self.settings.cache_ttl
            return Served(fresh, MISS, fresh_ttl - (self.clock() - fresh.fetched_at), coalesced)
        except BREAKER_FAILURES:
            if entry is not None:
                age = self.clock() - entry.fetched_at
                if age < ttl + self.settings.stale_ttl:
                    return Served(entry, SIE, ttl - age)
            raise

    def refresh(self, user_id: str, culture: str) -> None:
        """Start a background refresh unless one is already running; never raises."""
        deadline = time.monotonic() + self.settings.upstream_timeout + 0.5
        flight, leader = self.flights.join((user_id, culture))
        if leader:
            # The stale answer is already decided: never make its request wait for a slot.
            self._lead(flight, user_id, culture, deadline, wait_for_slot=False)

    def breaker_open_error(self) -> UpstreamUnavailable:
        """The answer while SessionM calls are paused: 503, retry when the next probe may go."""
        return UpstreamUnavailable("SessionM is failing; calls are paused (circuit breaker open)",
                                   retry_after=self.breaker.retry_after())

    def fails_fast(self, user_id: str, culture: str, entry: Entry | None) -> bool:
        """True when a read of (user, culture) can only be the breaker-open 503 right now.

        The breaker is open (not half open: a probe may be due), no call for it is in flight to
        wait for, and no cached copy is young enough to be served stale.
        """
        if self.breaker.state != "open" or self.flights.running((user_id, culture)):
            return False
        if entry is None:
            return True
        ttl = entry.ttl or self.settings.cache_ttl
        return self.clock() - entry.fetched_at >= ttl + self.settings.stale_ttl

    def forget(self, user_id: str) -> None:
        """Drop every cached culture of a user."""
        self.store.forget(user_id)

    def _fetch(self, user_id: str, culture: str, deadline: float) -> tuple[Entry, bool]:
        flight, leader = self.flights.join((user_id, culture))
        if leader:
            self._lead(flight, user_id, culture, deadline)
        elif self.metrics:
            self.metrics.coalesced()
        return flight.wait(deadline - ANSWER_MARGIN), not leader

    def _lead(self, flight: Flight, user_id: str, culture: str, deadline: float,
              wait_for_slot: bool = True) -> None:
        key = (user_id, culture)
        if not self.breaker.allow():
            self.flights.finish(key, flight, error=self.breaker_open_error())
            return
        if not self._take_slot(deadline if wait_for_slot else 0.0):
            self.breaker.cancel()
            if self.breaker.state == "open":
                error = self.breaker_open_error()
            else:
                error = UpstreamUnavailable("too many SessionM calls in flight; no slot in time", retry_after=1)
            self.flights.finish(key, flight, error=error)
            return
        timeout = max(0.05, min(self.settings.upstream_timeout, deadline - time.monotonic()))
        self.spawn(self._run, flight, user_id, culture, timeout)

    def _take_slot(self, deadline: float) -> bool:
        """Wait for a free SessionM slot until shortly before `deadline`, or until the breaker opens.

        With SessionM hung every slot is held until the calls time out; the breaker opening then
        wakes every waiter at once (Slots.wake_all) to answer a fast 503, rather than each one
        waking at its own deadline or handing a useless slot down a chain of waiters.
        """
        # Leave the call itself some time: a slot won just before the deadline is useless.
        return self.slots.take(deadline - MIN_CALL, give_up=lambda: self.breaker.state == "open")

    def _run(self, flight: Flight, user_id: str, culture: str, timeout: float) -> None:
        key = (user_id, culture)
        entry = error = None
        called = []

        def call() -> Entry:
            called.append(True)
            return self._call(user_id, culture, timeout)

        try:
            entry = self.locker.fetch_once(user_id, culture, timeout, call) if self.locker else call()
        except ApiError as exc:
            error = exc
        except Exception:  # a bug must not strand the waiters
            log.exception("unexpected error fetching a wallet")
            error = Internal()
        finally:
            if not called:
                # Another process made the call: a probe this breaker let through was not used.
                if entry is not None:
                    self.breaker.success()
                else:
                    self.breaker.cancel()
            self.slots.release()
            self.flights.finish(key, flight, entry, error)

    def _call(self, user_id: str, culture: str, timeout: float) -> Entry:
        """One SessionM call: store the result, feed the breaker."""
        started = time.monotonic()
        outcome = "ok"
        try:
            wallet = self.client.get_user_offers(user_id, culture, timeout)
        except BREAKER_FAILURES as exc:
            outcome = exc.code
            if self.breaker.failure():
                self.slots.wake_all()
            raise
        except ApiError as exc:
            outcome = exc.code
            self.breaker.success()
            raise
        finally:
            if self.metrics:
                self.metrics.upstream("sessionm", outcome, time.monotonic() - started)
        self.breaker.success()
        entry = Entry(wallet, self.clock())
        self.store.put(user_id, culture, entry)
        return entry


def _spawn_thread(target, *args) -> None:
    """Run `target` in a daemon thread (a greenlet under gevent's monkey-patching)."""
    threading.Thread(target=target, args=args, daemon=True, name="sessionm-fetch").start()


def cache_status(served) -> str:
    """RFC 9211 Cache-Status for how this wallet was obtained."""
    if served.status == HIT:
        return f"wallet-proxy; hit; ttl={int(served.ttl_left)}"
    if served.status == MISS:
        return "wallet-proxy; fwd=uri-miss; stored"
    return f"wallet-proxy; hit; ttl={math.floor(served.ttl_left)}; detail={served.status}"
