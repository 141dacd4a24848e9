"""The wallet service: cache -> single flight -> bounded SessionM call, inside a hard deadline.

Braze renders each message 2-3 times and gives up after 2 s, so:
- concurrent requests for one (user, culture) share one SessionM call (single flight);
- a SessionM call runs in its own worker and callers wait on it with their own deadline, so a hung
  or trickling SessionM never holds an answer past WALLET_PROXY_DEADLINE;
- at most WALLET_PROXY_UPSTREAM_CONCURRENCY calls are in flight; a request that could not get a slot
  soon (admission control from the measured queue and slot time) is refused at once with a 503;
- the breaker counts only SessionM's own failures: a timeout caused by our own queueing is not one;
- past its TTL a wallet is served while one refresh runs (stale-while-revalidate), and when SessionM
  fails it is served up to STALE_TTL old (stale-if-error).
"""
from __future__ import annotations

import _thread
import collections
import math
import logging
import threading
import time
from dataclasses import dataclass

from ..errors import BREAKER_FAILURES, ApiError, Internal, UpstreamTimeout, UpstreamUnavailable
from ..upstream.breaker import Breaker
from .stores import Entry, Store

log = logging.getLogger(__name__)

HIT, MISS, SWR, SIE = "hit", "miss", "stale-while-revalidate", "stale-if-error"
MIN_CALL = 0.1  # seconds a SessionM call needs at least to be worth starting
ANSWER_MARGIN = 0.025  # seconds kept to turn a timeout into an answer before the deadline passes
# Admission control: a new SessionM call expected to wait longer than this for a slot is refused at
# once (503 + Retry-After) instead of joining the queue. Long enough to keep every slot busy through
# the bursts of a send, short enough that an admitted call starts with most of its deadline left.
QUEUE_TARGET = 0.75
# What a SessionM call is taken to hold a slot for until the first calls say (a healthy call is
# ~150 ms; pessimism here would refuse the first burst of a send for nothing).
INITIAL_HOLD = 0.25
# A SessionM timeout counts against the breaker only when SessionM had a fair chance: at least this
# share of WALLET_PROXY_UPSTREAM_TIMEOUT (not a remnant left by our own queue) ...
FAIR_SHARE = 0.5
# ... and our own loop noticed the timeout on time. A timer that fires this much (share of the
# timeout) past its time means the process was too busy to read: the answer may have been waiting.
LATE_SHARE = 0.2
# Overload refusals are answered at most this many times the SessionM capacity (slots / slot time)
# per second, each waiting its turn (at most PACE_MAX seconds) before its 503 leaves.
PACE_FACTOR = 2.0
PACE_MAX = 1.0
# The event loop's standing lag (web/lag.py) above which new SessionM calls are refused: the CPU is
# the bottleneck, not SessionM, and every call started now only makes the calls in flight read
# their answers later. Measured against 0.15 and 0.25 (bench/RESULTS.md): higher targets refuse
# fewer renders of a send that is merely CPU-bound, but let 500-1,000 connections of overload answer
# past Braze's 2 s -- a blank message, where a 503 is a render Braze retries.
LAG_TARGET = 0.1
# Turns of the loop's recent lag taken off a request's deadline (see WalletService.seen_late).
TURNS_BEFORE = 3
# Turns a queued call waits for the loop: woken with its slot, started, its answer handed over.
TURNS_PER_CALL = 3


@dataclass
class Served:
    """What the route needs: the entry, how it was obtained, and seconds left fresh (<0: stale)."""

    entry: Entry
    status: str
    ttl_left: float

    @property
    def stale(self) -> bool:
        return self.status in (SWR, SIE)


class Flight:
    """One SessionM call that several requests wait for."""

    def __init__(self, monotonic=time.monotonic):
        self.done = threading.Event()
        self.started: float | None = None  # when its SessionM call was handed to its thread (monotonic)
        self.entry: Entry | None = None
        self.error: ApiError | None = None
        self.monotonic = monotonic

    def wait(self, deadline: float) -> Entry:
        """Wait until the call lands or `deadline` (monotonic) passes; raise its error or a timeout."""
        if not self.done.wait(max(0.0, deadline - self.monotonic())):
            raise UpstreamTimeout("SessionM did not answer before this request's deadline")
        if self.error is not None:
            raise self.error
        return self.entry


class SingleFlight:
    """Registry of flights in progress, one per key, in this process."""

    def __init__(self, monotonic=time.monotonic):
        self._lock = threading.Lock()
        self._flights: dict = {}
        self.monotonic = monotonic

    def join(self, key) -> tuple[Flight, bool]:
        """Return (flight, True) to the caller who must start the call, (flight, False) to waiters."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight(self.monotonic)
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

    The slots also measure how long a call holds one (a moving average of `release(held=...)`), so
    `expected_wait()` says how long a newcomer would queue: its place in line times the time a slot
    takes to free up (hold time / size). It starts from `hold` and learns from the first calls.
    """

    SMOOTHING = 0.05  # weight of each new hold time in the moving average (~20 calls of memory)

    def __init__(self, size: int, *, hold: float = 1.0, monotonic=time.monotonic):
        self._lock = threading.Lock()
        self.size = size
        self.hold = hold  # moving average of seconds a call holds a slot
        self.monotonic = monotonic
        self._free = size
        self._queue: collections.deque = collections.deque()  # waiting tickets, oldest first

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now."""
        return len(self._queue)

    def expected_wait(self) -> float:
        """Seconds a request arriving now would wait for a slot (0 when one is free)."""
        with self._lock:
            if self._free > 0 and not self._queue:
                return 0.0
            return (len(self._queue) + 1) * self.hold / self.size

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
            left = until - self.monotonic()
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

    def release(self, held: float | None = None) -> None:
        """Give a slot back (to the oldest waiter, or to the pool), with the seconds it was held."""
        with self._lock:
            if held is not None:
                self.hold += self.SMOOTHING * (held - self.hold)
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


class Pacer:
    """Spaces answers out to at most `rate()` per second; none waits more than `max_delay` seconds.

    Used for overload refusals. A refused client (a Braze connection) sends its next request as
    soon as it has the answer, so refusals answered at once come back as fast as the process can
    answer them: the CPU goes to refusing, the event loop's turns grow with the number of
    connections, and the calls that were admitted are read late -- past their deadlines. Spacing the
    refusals keeps the loop's turns short, so the admitted calls keep their place, and paces the
    clients to what the process can do (back pressure), while each 503 still leaves in time.
    """

    def __init__(self, rate, max_delay: float, monotonic=time.monotonic):
        self.rate = rate  # callable: answers per second now
        self.max_delay = max_delay
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._next = 0.0

    def delay(self) -> float:
        """Reserve the next turn; return the seconds to wait for it."""
        with self._lock:
            now = self.monotonic()
            at = min(max(now, self._next), now + self.max_delay)
            self._next = at + 1.0 / self.rate()
        return at - now


class WalletService:
    """Serves normalised wallets from the store, fetching from SessionM when needed.

    `clock` is the wall clock of cache ages (epoch seconds); `monotonic` the clock of deadlines,
    slot waits and call timing: both injectable, so tests move time instead of sleeping.
    """

    def __init__(self, client, store: Store, settings, *, breaker: Breaker | None = None, clock=time.time,
                 monotonic=time.monotonic, spawn=None, metrics=None, locker=None,
                 queue_target: float = QUEUE_TARGET, sleep=time.sleep, lag=None):
        self.client = client
        self.store = store
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.breaker = breaker or Breaker(settings.breaker_failures, settings.breaker_cooldown,
                                          probe_interval=settings.breaker_probe_interval)
        self.flights = SingleFlight(monotonic)
        self.slots = Slots(settings.upstream_concurrency, hold=min(INITIAL_HOLD, settings.upstream_timeout),
                           monotonic=monotonic)
        self.queue_target = queue_target
        self.pacer = Pacer(lambda: PACE_FACTOR * self.slots.size / max(self.slots.hold, 0.001), PACE_MAX,
                           monotonic)
        self.sleep = sleep
        self.spawn = spawn or _spawn_thread
        self.metrics = metrics
        # Optional cross-process lock (Redis): when another process holds it, wait for its result.
        self.locker = locker
        # Optional event-loop lag monitor (web/lag.py's LoopLag; under gevent): CPU admission.
        self.lag = lag

    def get(self, user_id: str, culture: str, deadline: float) -> Served:
        """Return the wallet of (user, culture) within `deadline` (monotonic), or raise an ApiError."""
        ttl = self.settings.cache_ttl
        entry = self.store.get(user_id, culture)
        if entry is not None:
            hit = self.hit(entry)
            if hit is not None:
                return hit
            ttl = entry_ttl(entry, self.settings)
            age = self.clock() - entry.fetched_at
            if age < ttl + self.settings.swr_window and self.breaker.state == "closed":
                self.refresh(user_id, culture)
                return Served(entry, SWR, ttl - age)
        try:
            fresh = self._fetch(user_id, culture, self.seen_late(deadline))  # hits never need it
            return Served(fresh, MISS, entry_ttl(fresh, self.settings) - (self.clock() - fresh.fetched_at))
        except BREAKER_FAILURES:
            if entry is not None:
                age = self.clock() - entry.fetched_at
                if age < ttl + self.settings.stale_ttl:
                    return Served(entry, SIE, ttl - age)
            raise

    def hit(self, entry: Entry) -> Served | None:
        """A cached entry served as a fresh hit, or None once past its TTL (the fast path asks too)."""
        ttl_left = entry_ttl(entry, self.settings) - (self.clock() - entry.fetched_at)
        return Served(entry, HIT, ttl_left) if ttl_left > 0 else None

    def refresh(self, user_id: str, culture: str) -> None:
        """Start a background refresh unless one is already running; never raises."""
        deadline = self.monotonic() + self.settings.upstream_timeout + 0.5
        flight, leader = self.flights.join((user_id, culture))
        if leader:
            # The stale answer is already decided: never make its request wait for a slot.
            self._lead(flight, user_id, culture, deadline, wait_for_slot=False)

    def breaker_open_error(self) -> UpstreamUnavailable:
        """The answer while SessionM calls are paused: 503, retry when the next probe may go."""
        return UpstreamUnavailable("SessionM is failing; calls are paused (circuit breaker open)",
                                   retry_after=self.breaker.retry_after())

    def overloaded_error(self, paced: bool = True) -> UpstreamUnavailable:
        """The answer when this process has more SessionM calls queued than it can start in time.

        Paced (see Pacer): it leaves after its turn, not at once.
        """
        if paced:
            wait = self.pacer.delay()
            if wait > 0:
                self.sleep(wait)
        return UpstreamUnavailable("too many SessionM calls waiting; no slot in time", retry_after=1)

    def refusal(self, user_id: str, culture: str, entry: Entry | None, deadline: float) -> ApiError | None:
        """The 503 a read of (user, culture) can only get right now, or None when it may go on.

        Either the breaker is open (not half open: a probe may be due) or the queue for a SessionM
        slot is longer than admission control allows -- and no call for this key is in flight to
        wait for, and no cached copy is young enough to be served stale. The route reaches the same
        answer through `get`; the fast path asks here to give it without Flask.
        """
        deadline = self.seen_late(deadline)
        if self.flights.running((user_id, culture)):
            return None
        if entry is not None:
            age = self.clock() - entry.fetched_at
            if age < entry_ttl(entry, self.settings) + self.settings.stale_ttl:
                return None
        if self.breaker.state == "open":
            return self.breaker_open_error()
        if not self.admits(deadline):
            return self.overloaded_error()
        return None

    def lagging(self) -> bool:
        """Whether the event loop has a standing lag above LAG_TARGET: this process is out of CPU."""
        return self.lag is not None and self.lag.standing() > LAG_TARGET

    def seen_late(self, deadline: float) -> float:
        """A request's deadline, moved earlier by three turns of the event loop's recent lag.

        The deadline counts from when our code first saw the request, but Braze's 2 s count from
        its sending: under load the request had already waited about a turn in its socket, and its
        answer waits for turns again to be written out. Three turns keep a margin: with two, the
        1,000-connection overload of bench/RESULTS.md still saw answers at 2.1-2.2 s at the client.
        """
        return deadline - TURNS_BEFORE * self.lag.mean() if self.lag is not None else deadline

    def admits(self, deadline: float) -> bool:
        """Admission control: may a new SessionM call queue for a slot, or is it refused at once?

        Refused while the event loop has a standing lag above LAG_TARGET (the process is out of
        CPU: see web/lag.py). Otherwise admitted when a slot is free, or when the expected wait
        (place in line x measured slot time / slots) is within QUEUE_TARGET and still leaves the
        call its expected time before `deadline`. Refusing at arrival is cheap and honest (503 +
        Retry-After at once); queueing past the point where the call can still be made in time only
        turns the same refusal into a slow one, and crowds out the calls that can.
        """
        lag = self.lag.standing() if self.lag is not None else 0.0
        if lag > LAG_TARGET:
            return False
        wait = self.slots.expected_wait()
        if wait == 0.0:
            return True
        return (wait <= self.queue_target and self.monotonic() + wait + self.call_time()
                + TURNS_PER_CALL * lag <= deadline - ANSWER_MARGIN)

    def call_time(self) -> float:
        """Seconds a SessionM call is expected to need: the measured slot time, at least MIN_CALL,
        at most WALLET_PROXY_UPSTREAM_TIMEOUT. A call started with less time left than this is
        likely to answer after its request has given up: a 504 that spent a slot and the CPU."""
        return max(MIN_CALL, min(self.slots.hold, self.settings.upstream_timeout))

    def forget(self, user_id: str) -> None:
        """Drop every cached culture of a user."""
        self.store.forget(user_id)

    def _fetch(self, user_id: str, culture: str, deadline: float) -> Entry:
        flight, leader = self.flights.join((user_id, culture))
        if leader:
            self._lead(flight, user_id, culture, deadline)
        elif self.metrics:
            self.metrics.coalesced()
        try:
            return flight.wait(deadline - ANSWER_MARGIN)
        except UpstreamTimeout as exc:
            if exc is not flight.error and not self.sessionm_late(flight):  # this waiter's deadline
                # Not SessionM's timeout: its call started too late (queued for a slot, or this
                # process behind on its loop) to answer by this request's deadline. Our overload,
                # so a 503 with Retry-After: Braze comes back later.
                raise UpstreamUnavailable("this process is overloaded; the answer was not ready in time",
                                          retry_after=1) from None
            raise

    def sessionm_late(self, flight: Flight) -> bool:
        """Whether a call still running at a waiter's deadline is SessionM's lateness (504) or ours.

        SessionM's when its call has run at least FAIR_SHARE of the time a call can get (the
        upstream timeout, or the request deadline when that is shorter) and this process is not
        behind on its loop (the answer is not waiting unread in its socket): the fair chance the
        breaker asks before counting a timeout. A call that never started (its leader still queued
        for a slot) is never SessionM's.
        """
        started = flight.started
        if started is None:
            return False
        most = min(self.settings.upstream_timeout, self.settings.deadline)
        return self.monotonic() - started >= FAIR_SHARE * most and not self.lagging()

    def _lead(self, flight: Flight, user_id: str, culture: str, deadline: float,
              wait_for_slot: bool = True) -> None:
        key = (user_id, culture)
        if not self.breaker.allow():
            self.flights.finish(key, flight, error=self.breaker_open_error())
            return
        admitted = not wait_for_slot or self.admits(deadline)
        if not admitted or not self._take_slot(deadline if wait_for_slot else 0.0):
            self.breaker.cancel()
            if self.breaker.state == "open":
                error = self.breaker_open_error()
            else:  # a refusal at arrival waits its turn; a waiter that timed out has waited enough
                error = self.overloaded_error(paced=wait_for_slot and not admitted)
            self.flights.finish(key, flight, error=error)
            return
        timeout = min(self.settings.upstream_timeout, deadline - self.monotonic())
        if timeout < MIN_CALL or (wait_for_slot and timeout < self.call_time()):
            # Granted, but woken too late (a busy loop) for the call to be worth making: a call
            # with less time than SessionM takes only times out, spending a slot and the CPU.
            self.slots.release()
            self.breaker.cancel()
            self.flights.finish(key, flight, error=self.overloaded_error(paced=False))
            return
        flight.started = self.monotonic()
        self.spawn(self._run, flight, user_id, culture, timeout)

    def _take_slot(self, deadline: float) -> bool:
        """Wait for a free SessionM slot until shortly before `deadline`, or until the breaker opens.

        With SessionM hung every slot is held until the calls time out; the breaker opening then
        wakes every waiter at once (Slots.wake_all) to answer a fast 503, rather than each one
        waking at its own deadline or handing a useless slot down a chain of waiters.
        """
        # Leave the call itself its time: a slot won just before the deadline is useless.
        return self.slots.take(deadline - self.call_time(), give_up=lambda: self.breaker.state == "open")

    def _run(self, flight: Flight, user_id: str, culture: str, timeout: float) -> None:
        key = (user_id, culture)
        entry = error = None
        called = []
        started = self.monotonic()

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
            self.slots.release(held=self.monotonic() - started if called else None)
            self.flights.finish(key, flight, entry, error)

    def _call(self, user_id: str, culture: str, timeout: float) -> Entry:
        """One SessionM call: store the result, feed the breaker with SessionM's own failures."""
        started = self.monotonic()
        outcome = "ok"
        try:
            wallet = self.client.get_user_offers(user_id, culture, timeout)
        except BREAKER_FAILURES as exc:
            outcome = exc.code
            if self.sessionm_failed(exc, timeout, self.monotonic() - started):
                if self.breaker.failure():
                    self.slots.wake_all()
            else:
                self.breaker.cancel()  # says nothing of SessionM's health either way
            raise
        except ApiError as exc:
            outcome = exc.code
            self.breaker.success()
            raise
        finally:
            if self.metrics:
                self.metrics.upstream("sessionm", outcome, self.monotonic() - started)
        self.breaker.success()
        entry = Entry(wallet, self.clock())
        self.store.put(user_id, culture, entry)
        return entry

    def sessionm_failed(self, error: ApiError, timeout: float, elapsed: float) -> bool:
        """Whether a failed call is SessionM's failure (counts against the breaker) or our own.

        SessionM's status (5xx, 429), refused connections and garbage are always its own. A timeout
        is only when SessionM had a fair chance: the call was given at least FAIR_SHARE of
        WALLET_PROXY_UPSTREAM_TIMEOUT (not the remnant of a deadline spent queueing here), and the
        timeout was noticed on time. Under local overload the loop reads sockets late: an answer
        already waiting in the socket then loses the race to a timer that fires `elapsed - timeout`
        late, and counting that would open the breaker on our own overload and shed everything.
        For the same reason no timeout counts while the event loop has a standing lag.
        """
        if not isinstance(error, UpstreamTimeout):
            return True
        if self.lagging():
            return False  # the loop is behind: the answer may be waiting unread in its socket
        fair = timeout >= FAIR_SHARE * self.settings.upstream_timeout
        on_time = elapsed - timeout <= LATE_SHARE * timeout
        return fair and on_time


def entry_ttl(entry: Entry, settings) -> float:
    """Seconds an entry stays fresh: its own TTL (set by prewarm) or WALLET_PROXY_CACHE_TTL."""
    return entry.ttl or settings.cache_ttl


def _spawn_thread(target, *args) -> None:
    """Run `target` in a new thread (a greenlet under gevent's monkey-patching), without waiting.

    Not `threading.Thread(...).start()`: that waits until the new thread has started, which under
    gevent is a whole turn of the event loop -- under load, hundreds of milliseconds of the
    leading request's deadline spent before its SessionM call even begins. Such a thread does
    not hold the process open at exit, as a daemon thread would not; `target` handles its own errors.
    """
    _thread.start_new_thread(target, args)


def cache_status(served) -> str:
    """RFC 9211 Cache-Status for how this wallet was obtained."""
    if served.status == HIT:
        return f"wallet-proxy; hit; ttl={int(served.ttl_left)}"
    if served.status == MISS:
        return "wallet-proxy; fwd=uri-miss; stored"
    return f"wallet-proxy; hit; ttl={math.floor(served.ttl_left)}; detail={served.status}"


def render_key(user_id: str, served: Served, raw_query: bytes) -> tuple:
    """The rendered-body cache key of a served wallet: one fetch, stale or not, one query string."""
    return user_id, served.entry.stamp, served.stale, raw_query


def wallet_headers(served: Served, etag: str) -> list[tuple[str, str]]:
    """The headers of a wallet answer (200 or 304): Cache-Status, Cache-Control and ETag (SPEC)."""
    return [("Cache-Status", cache_status(served)),
            ("Cache-Control", f"private, max-age={max(0, int(served.ttl_left))}"), ("ETag", f'"{etag}"')]
