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
import enum
import math
import logging
import time
from dataclasses import dataclass

from ..errors import BREAKER_FAILURES, ApiError, Internal, UpstreamTimeout, UpstreamUnavailable, release
from ..upstream.breaker import Breaker
from .flight import Flight, SingleFlight
from .slots import Pacer, Slots
from .stores import Entry, Store

log = logging.getLogger(__name__)



class Outcome(str, enum.Enum):
    """How a wallet answer was obtained: the one value `Cache-Status`, the access line and the
    `wallet_proxy_cache_total{result}` label are read from (`value` is that label)."""

    HIT = "hit"
    MISS = "miss"
    SWR = "stale_while_revalidate"
    SIE = "stale_if_error"
    ERROR = "error"  # on_error=empty: an empty wallet and the error

    @property
    def label(self) -> str:
        return self.value

    def cache_status(self, ttl_left: float) -> str:
        """RFC 9211 Cache-Status of an answer with this outcome, `ttl_left` seconds fresh (<0: stale)."""
        if self is Outcome.HIT:
            return f"wallet-proxy; hit; ttl={int(ttl_left)}"
        if self is Outcome.MISS:
            return "wallet-proxy; fwd=uri-miss; stored"
        if self is Outcome.ERROR:
            return "wallet-proxy; fwd=uri-miss; detail=error"
        detail = "stale-while-revalidate" if self is Outcome.SWR else "stale-if-error"
        return f"wallet-proxy; hit; ttl={math.floor(ttl_left)}; detail={detail}"


HIT, MISS, SWR, SIE = Outcome.HIT, Outcome.MISS, Outcome.SWR, Outcome.SIE
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
    outcome: Outcome
    ttl_left: float
    fetched: dict | None = None  # a miss's wallet as fetched, already decoded

    def wallet(self) -> dict:
        """The normalised wallet: as fetched on a miss, else decoded from the entry."""
        return self.fetched if self.fetched is not None else self.entry.wallet

    @property
    def status(self) -> Outcome:  # the preview's name for it
        return self.outcome

    @property
    def stale(self) -> bool:
        return self.outcome is SWR or self.outcome is SIE


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
        # The client's transport bounds a call's whole time (upstream/fast.py): the leading request
        # may make the call itself. Otherwise (requests: a timeout per socket read) it runs in its
        # own thread, and callers wait on it with their own deadlines.
        self.inline = bool(getattr(getattr(client, "transport", None), "bounds_total_time", False))

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
            flight = self._fetch(user_id, culture, self.seen_late(deadline))  # hits never need it
            fresh = flight.entry
            return Served(fresh, MISS, entry_ttl(fresh, self.settings) - (self.clock() - fresh.fetched_at),
                          flight.wallet)
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

    def overloaded_error(self, *, paced: bool) -> UpstreamUnavailable:
        """The answer when this process has more SessionM calls queued than it can start in time.

        Paced (see Pacer): it leaves after its turn, not at once.
        """
        if paced:
            wait = self.pacer.delay()
            if wait > 0:
                self.sleep(wait)
        return UpstreamUnavailable("too many SessionM calls waiting; no slot in time", retry_after=1)

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

    def _fetch(self, user_id: str, culture: str, deadline: float) -> Flight:
        """The finished flight of (user, culture): joined, or led by this request."""
        flight, leader = self.flights.join((user_id, culture))
        if leader:
            self._lead(flight, user_id, culture, deadline)
        elif self.metrics:
            self.metrics.coalesced()
        try:
            flight.wait(deadline - ANSWER_MARGIN)
            return flight
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
        if wait_for_slot and self.inline:
            # The transport bounds the call's whole time itself: the leader makes it, on its own
            # greenlet, by its deadline (no thread to start and switch to and back).
            self._run(flight, user_id, culture, min(timeout, deadline - ANSWER_MARGIN - flight.started))
        else:
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
        fetched = {}

        def call() -> Entry:
            called.append(True)
            made, fetched["wallet"] = self._call(user_id, culture, timeout)
            return made

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
            self.flights.finish(key, flight, entry, error, fetched.get("wallet"))
            # A waiter raises it anew; kept with this call's traceback it would hold this frame,
            # whose `error` holds it: a cycle, e.g. for every background refresh that failed.
            release(error)

    def _call(self, user_id: str, culture: str, timeout: float) -> tuple[Entry, dict]:
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
        return entry, wallet

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


def cache_status(served: Served) -> str:
    """RFC 9211 Cache-Status for how this wallet was obtained."""
    return served.outcome.cache_status(served.ttl_left)
