"""Overload: admission control from the measured queue and slot time, paced refusals, and a breaker
that counts SessionM's failures only -- never a timeout caused by our own queueing.

Everything runs on fake clocks with the SessionM call made inline (spawn runs it at once), so
nothing here waits for time to pass. Reads that queue for a slot run in threads, lined up by
`slots.waiting` and events, never by sleeping.
"""
from __future__ import annotations

import threading
import traceback

import pytest

from tests.conftest import make_settings
from tests.fakes import FakeClock
from tests.test_slots import until
from wallet_proxy.errors import UpstreamTimeout, UpstreamUnavailable
from wallet_proxy.wallet.service import (ANSWER_MARGIN, MIN_CALL, PACE_FACTOR, QUEUE_TARGET, Pacer, Slots,
                                         WalletService)
from wallet_proxy.wallet.stores import Entry, MemoryStore


class FakeConnect:
    """A SessionM client whose call takes `elapsed` seconds of the fake clock, then answers or raises."""

    def __init__(self, monotonic: FakeClock):
        self.monotonic = monotonic
        self.elapsed = 0.15
        self.error = None
        self.calls = []

    def get_user_offers(self, user_id, culture, timeout):
        self.calls.append((user_id, timeout))
        self.monotonic.tick(self.elapsed)
        if self.error is not None:
            raise self.error
        return {"user_id": user_id, "offers": []}


def inline(target, *args):
    target(*args)


@pytest.fixture
def mono():
    return FakeClock(1000.0)


def service(mono, *, metrics=None, locker=None, **env) -> tuple[WalletService, FakeConnect, list]:
    """A service on the fake clock `mono` (wall clock: `wallets.clock`), its SessionM, its sleeps."""
    settings = make_settings("http://sessionm.invalid", **env)
    client, slept = FakeConnect(mono), []
    wallets = WalletService(client, MemoryStore(1 << 20, settings.cache_ttl), settings, clock=FakeClock(),
                            monotonic=mono, spawn=inline, sleep=slept.append, metrics=metrics,
                            locker=locker)
    wallets.breaker.clock = mono
    return wallets, client, slept


class TestSlotsMeasureTheirQueue:
    def test_expected_wait_is_place_in_line_times_slot_time_over_slots(self, mono):
        slots = Slots(2, hold=0.3, monotonic=mono)
        assert slots.expected_wait() == 0.0
        assert slots.take(mono() + 1) and slots.take(mono() + 1)
        assert slots.expected_wait() == pytest.approx(0.3 / 2)  # first in line: one slot to free up

    def test_hold_time_is_a_moving_average_of_what_calls_took(self, mono):
        slots = Slots(1, hold=1.5, monotonic=mono)
        for _ in range(200):
            assert slots.take(mono() + 1)
            slots.release(held=0.15)
        assert slots.hold == pytest.approx(0.15, abs=0.01)
        assert slots.take(mono() + 1)
        slots.release()  # a slot given back without a call (another process made it): no sample
        assert slots.hold == pytest.approx(0.15, abs=0.01)


class TestAdmission:
    def test_a_miss_is_refused_at_once_when_the_queue_is_longer_than_its_target(self, mono):
        wallets, client, slept = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)  # the only slot is busy, and calls hold it 1 s
        wallets.slots.hold = 1.0
        with pytest.raises(UpstreamUnavailable) as refused:
            wallets.get("new-user", "en-US", mono() + 1.8)
        assert "no slot" in refused.value.message and refused.value.retry_after_header() == "1"
        assert client.calls == [] and wallets.slots.waiting == 0, "refused at arrival, never queued"
        assert wallets.breaker.state == "closed", "our own overload is not SessionM failing"

    def test_admits_while_the_expected_wait_is_within_target_and_leaves_the_call_time(self, mono):
        wallets, _, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=4)
        assert wallets.admits(mono() + 1.8), "a free slot: always"
        for _ in range(4):
            assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 0.15
        assert wallets.admits(mono() + 1.8), "first in line waits 0.04 s"
        assert not wallets.admits(mono() + 0.04 + MIN_CALL), "the wait would leave no time for the call"
        wallets.slots.hold = 4 * QUEUE_TARGET * 1.01
        assert not wallets.admits(mono() + 100), "over the queue target, however long the deadline"

    def test_the_limits_themselves_are_admitted(self, mono):
        wallets, _, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold, wallets.queue_target = 0.5, 0.5  # first in line waits 0.5 s, the call 0.5 s
        assert wallets.admits(mono() + 100), "a wait of exactly the queue target is within it"
        just = mono() + 0.5 + 0.5 + ANSWER_MARGIN
        assert just - ANSWER_MARGIN == mono() + 1.0  # (the float arithmetic is exact here)
        assert wallets.admits(just), "a call that ends exactly at the margin before the deadline goes"
        assert not wallets.admits(mono() + 1.0 + ANSWER_MARGIN / 2), "one ending inside the margin does not"

    def test_a_read_waiting_for_a_call_in_flight_is_never_refused(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 1.0  # a newcomer would be refused...
        with pytest.raises(UpstreamUnavailable):
            wallets.get("u", "fr", mono() + 1.8)
        flight, _ = wallets.flights.join(("u", "en-US"))  # ... but this one can wait for the call made
        landed = Entry({"offers": []}, wallets.clock())
        threading.Timer(0.05, wallets.flights.finish, (("u", "en-US"), flight, landed)).start()
        served = wallets.get("u", "en-US", mono() + 1.8)
        assert served.status == "miss" and served.entry is landed and client.calls == []

    def test_a_stale_copy_young_enough_to_serve_is_never_refused(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 1.0
        now, limit = wallets.clock(), 60 + 300  # WALLET_PROXY_CACHE_TTL + WALLET_PROXY_STALE_TTL
        wallets.store.put("u", "en-US", Entry({}, now - limit + 1))
        assert wallets.get("u", "en-US", mono() + 1.8).status == "stale_if_error"
        wallets.store.put("u", "en-US", Entry({}, now - limit))
        with pytest.raises(UpstreamUnavailable):  # STALE_TTL past its TTL, a copy is too old to serve
            wallets.get("u", "en-US", mono() + 1.8)
        assert client.calls == []

    def test_an_open_breaker_refuses_at_once(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=1, WALLET_PROXY_BREAKER_COOLDOWN=10,
                                     WALLET_PROXY_BREAKER_PROBE_INTERVAL=10)
        client.error = UpstreamUnavailable("SessionM answered HTTP 503")
        with pytest.raises(UpstreamUnavailable):
            wallets.get("failing", "en-US", mono() + 1.8)
        with pytest.raises(UpstreamUnavailable) as refusal:  # slots are free: only the breaker
            wallets.get("u", "en-US", mono() + 1.8)
        assert "circuit breaker" in refusal.value.message and refusal.value.retry_after_header() == "10"
        assert len(client.calls) == 1

    def test_an_overload_refusal_is_paced(self, mono):
        wallets, client, slept = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.get("u", "en-US", mono() + 1.8).status == "miss"
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 1.0
        for user in ("v", "w"):
            with pytest.raises(UpstreamUnavailable) as refusal:
                wallets.get(user, "en-US", mono() + 1.8)
            assert refusal.value.status == 503 and "no slot" in refusal.value.message
        assert slept[0] == pytest.approx(0.5), "refusals are paced"
        assert len(client.calls) == 1


class TestPacer:
    def test_spaces_answers_at_its_rate_and_never_past_its_maximum(self, mono):
        pacer = Pacer(lambda: 10.0, max_delay=0.35, monotonic=mono)
        assert [round(pacer.delay(), 3) for _ in range(6)] == [0.0, 0.1, 0.2, 0.3, 0.35, 0.35]
        mono.tick(5)
        assert pacer.delay() == 0.0, "a quiet spell owes no delay to the next one"

    def test_overload_refusals_wait_their_turn(self, mono):
        wallets, _, slept = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 1.0  # over the queue target: every newcomer is refused
        for user in ("a", "b", "c"):
            with pytest.raises(UpstreamUnavailable):
                wallets.get(user, "en-US", mono() + 1.8)
        spacing = 1 / (PACE_FACTOR * 1 / 1.0)  # PACE_FACTOR x capacity (1 slot / 1 s) per second
        assert slept == pytest.approx([spacing, 2 * spacing]), "the first leaves at once, then one per turn"

    def test_the_pace_follows_the_capacity_slots_over_slot_time(self, mono):
        wallets, _, slept = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=4)
        for _ in range(4):
            assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 4.0  # 4 slots freeing every 4 s: capacity 1 call/s, refusals 2/s
        for user in ("a", "b", "c"):
            with pytest.raises(UpstreamUnavailable):
                wallets.get(user, "en-US", mono() + 1.8)
        assert slept == pytest.approx([0.5, 1.0])

    def test_the_first_answer_goes_at_once_whatever_the_clocks_origin(self):
        pacer = Pacer(lambda: 10.0, max_delay=0.35, monotonic=FakeClock(0.0))
        assert [round(pacer.delay(), 3) for _ in range(2)] == [0.0, 0.1]


class TestBreakerCountsSessionMsFailuresOnly:
    def failures(self, wallets, client, deadline_in=1.8, users=5):
        for n in range(users):
            with pytest.raises((UpstreamTimeout, UpstreamUnavailable)):
                wallets.get(f"user-{n}-{len(client.calls)}", "en-US", client.monotonic() + deadline_in)
        return wallets.breaker.state

    def test_timeouts_with_the_full_timeout_noticed_on_time_open_it(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=5)
        client.elapsed, client.error = 1.5, UpstreamTimeout("SessionM did not answer within 1.50s")
        assert self.failures(wallets, client) == "open"
        assert [timeout for _, timeout in client.calls] == [1.5] * 5

    def test_a_timeout_noticed_late_within_its_share_still_counts(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=5)
        # 0.25 s late on a 1.5 s timeout: within LATE_SHARE (0.3 s), an ordinary timer's lag
        client.elapsed, client.error = 1.5 + 0.25, UpstreamTimeout("SessionM did not answer within 1.50s")
        assert self.failures(wallets, client) == "open"

    def test_the_limits_of_a_fair_chance_count(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=1, WALLET_PROXY_UPSTREAM_TIMEOUT=5)
        client.error = UpstreamTimeout("SessionM did not answer")
        client.elapsed = 6.0  # noticed 1 s late on 5 s: exactly LATE_SHARE, still on time
        assert self.failures(wallets, client, deadline_in=10, users=1) == "open"
        assert [timeout for _, timeout in client.calls] == [5.0]

    def test_exactly_half_the_timeout_is_a_fair_chance(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=1)  # upstream timeout 1.5 s
        client.elapsed, client.error = 0.75, UpstreamTimeout("SessionM did not answer within 0.75s")
        assert self.failures(wallets, client, deadline_in=0.75, users=1) == "open"
        assert [timeout for _, timeout in client.calls] == [0.75]

    def test_timeouts_of_calls_left_a_remnant_of_their_deadline_do_not(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=5)
        client.elapsed, client.error = 0.3, UpstreamTimeout("SessionM did not answer within 0.30s")
        # each request spent 1.5 s of its 1.8 s queueing here before its call could start
        assert self.failures(wallets, client, deadline_in=0.3 + 0.025, users=10) == "closed"
        assert len(client.calls) == 10

    def test_timeouts_noticed_late_by_a_busy_process_do_not(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=5)
        # the timer fired 0.9 s late: the loop was busy, SessionM's answer may have been waiting
        client.elapsed, client.error = 1.5 + 0.9, UpstreamTimeout("SessionM did not answer within 1.50s")
        assert self.failures(wallets, client, users=10) == "closed"

    def test_sessionm_errors_count_whatever_the_timeout(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=5)
        client.elapsed, client.error = 0.01, UpstreamUnavailable("SessionM answered HTTP 503")
        assert self.failures(wallets, client, deadline_in=0.3) == "open"

    def test_a_probe_that_timed_out_on_our_account_can_be_retried(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=1, WALLET_PROXY_BREAKER_COOLDOWN=10,
                                     WALLET_PROXY_BREAKER_PROBE_INTERVAL=10)
        client.elapsed, client.error = 0.01, UpstreamUnavailable("SessionM answered HTTP 503")
        assert self.failures(wallets, client, users=1) == "open"
        mono.tick(10)
        client.elapsed, client.error = 2.5, UpstreamTimeout("SessionM did not answer within 1.50s")
        assert self.failures(wallets, client, users=1) == "half_open", "late timeout: neither proof"
        client.elapsed, client.error = 0.15, None
        wallets.get("after", "en-US", mono() + 1.8)
        assert wallets.breaker.state == "closed"


class TestNoDoomedCalls:
    def test_a_slot_granted_too_late_for_the_call_is_given_back_and_no_call_made(self, mono):
        wallets, client, slept = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 1.0
        with pytest.raises(UpstreamUnavailable):  # refused at arrival: the next refusal's turn is taken
            wallets.get("refused", "en-US", mono() + 1.8)
        wallets.slots.release()
        # the slot is free, but the loop ran this request so late that only 0.05 s of it is left
        with pytest.raises(UpstreamUnavailable) as refused:
            wallets.get("late", "en-US", mono() + MIN_CALL / 2 + 0.025)
        assert "no slot" in refused.value.message and client.calls == []
        assert slept == [], "a request the loop ran late has waited enough: no refusal turn on top"
        served = wallets.get("late", "en-US", mono() + 1.8)  # the same wallet, read in time
        assert served.status == "miss" and client.calls == [("late", 1.5)]
        assert wallets.slots.take(mono()), "the slot was given back"

    def test_a_call_with_exactly_the_minimum_time_left_is_made(self):
        mono = FakeClock(0.0)  # 0.1 - 0.0 is exactly MIN_CALL in floats
        wallets, client, _ = service(mono)
        wallets.slots.hold = 0.01  # calls have been quick: MIN_CALL is still the least a call gets
        wallets.get("just", "en-US", mono() + MIN_CALL)
        assert client.calls == [("just", MIN_CALL)]

    def test_a_call_needs_the_time_calls_have_been_taking_not_just_the_minimum(self, mono):
        wallets, client, slept = service(mono)
        wallets.slots.hold = 0.4  # what calls have held a slot for lately
        assert wallets.call_time() == 0.4
        with pytest.raises(UpstreamUnavailable) as refused:
            wallets.get("short", "en-US", mono() + 0.39)
        assert "no slot" in refused.value.message and client.calls == [] and slept == []
        wallets.get("enough", "en-US", mono() + 0.41)
        assert client.calls == [("enough", pytest.approx(0.41))]

    def test_the_expected_call_time_is_bounded_by_the_minimum_and_the_upstream_timeout(self, mono):
        wallets, _, _ = service(mono, WALLET_PROXY_UPSTREAM_TIMEOUT=0.5)
        wallets.slots.hold = 0.01
        assert wallets.call_time() == MIN_CALL
        wallets.slots.hold = 3.0  # calls hung until their timeout: a call needs no more than that
        assert wallets.call_time() == 0.5


class GatedConnect(FakeConnect):
    """A SessionM whose calls hang until the test opens `gate` (then answer as FakeConnect)."""

    def __init__(self, monotonic: FakeClock):
        super().__init__(monotonic)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def get_user_offers(self, user_id, culture, timeout):
        self.entered.set()
        assert self.gate.wait(5), "the test never let the call finish"
        return super().get_user_offers(user_id, culture, timeout)


class CallLog:
    """Metrics that record what the service reports; `on_upstream` runs inside the report."""

    def __init__(self):
        self.upstream_calls, self.coalesced_waits = [], 0
        self.on_upstream = lambda: None

    def upstream(self, name, outcome, seconds):
        self.on_upstream()
        self.upstream_calls.append((name, outcome, seconds))

    def coalesced(self):
        self.coalesced_waits += 1


def in_thread(fn, *args):
    """Run fn(*args) in a thread; returns (thread, outcome list: [("ok", value)] or [("error", exc)])."""
    outcome = []

    def run():
        try:
            outcome.append(("ok", fn(*args)))
        except Exception as exc:  # the test reads it
            outcome.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


class TestSlotWaiters:
    def test_a_queued_read_gets_the_slot_its_holder_gives_back(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)  # a call holds the only slot; the next read may queue
        thread, outcome = in_thread(wallets.get, "queued", "en-US", mono() + 1.8)
        until(lambda: wallets.slots.waiting == 1)
        wallets.slots.release()
        thread.join(5)
        assert outcome and outcome[0][0] == "ok" and outcome[0][1].status == "miss"
        assert client.calls == [("queued", 1.5)]

    def test_the_breaker_opening_sends_slot_waiters_its_503_while_the_failed_call_holds_its_slot(self, mono):
        # SessionM fails the call holding the only slot, and that failure opens the breaker: the read
        # queued behind it answers the breaker's 503 (retry when the probe may go) at once -- before
        # the failed call has even given its slot back, not at its own deadline.
        log = CallLog()
        settings = dict(WALLET_PROXY_UPSTREAM_CONCURRENCY=1, WALLET_PROXY_BREAKER_FAILURES=1,
                        WALLET_PROXY_BREAKER_COOLDOWN=10,
                        WALLET_PROXY_BREAKER_PROBE_INTERVAL=10)
        wallets, _, _ = service(mono, metrics=log, **settings)
        wallets.client = client = GatedConnect(mono)
        first, first_outcome = in_thread(wallets.get, "failing", "en-US", mono() + 1.8)
        assert client.entered.wait(5)
        waiter, outcome = in_thread(wallets.get, "queued", "en-US", mono() + 1.8)
        until(lambda: wallets.slots.waiting == 1)
        answered_first = []

        def failed_call_reports():  # in the failed call's thread, after the breaker opened
            until(lambda: outcome)  # the waiter has its answer...
            answered_first.append(True)  # ... and this call has not given its slot back yet

        log.on_upstream = failed_call_reports
        client.error = UpstreamUnavailable("SessionM answered HTTP 503")
        client.gate.set()
        waiter.join(5)
        first.join(5)
        assert answered_first == [True], "the waiter answered while the failed call still held its slot"
        kind, error = outcome[0]
        assert kind == "error" and isinstance(error, UpstreamUnavailable)
        assert "circuit breaker" in error.message and error.retry_after_header() == "10"
        assert first_outcome[0][0] == "error" and [c[0] for c in client.calls] == ["failing"]
        assert wallets.slots.waiting == 0

    def test_a_waiter_out_of_time_for_its_call_is_answered_at_once_and_not_paced(self, mono):
        wallets, client, slept = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)
        thread, outcome = in_thread(wallets.get, "queued", "en-US", mono() + 1.0)
        until(lambda: wallets.slots.waiting == 1)
        # Past the last moment a slot is worth having (deadline - MIN_CALL), before the deadline:
        mono.tick(1.0 - MIN_CALL / 2)
        wallets.slots.hold = 1.0  # meanwhile newcomers are refused, and take their turns to answer
        with pytest.raises(UpstreamUnavailable):
            wallets.get("newcomer", "en-US", mono() + 1.8)
        wallets.slots.wake_all()  # (what the waiter's own timer does on a real clock)
        thread.join(5)
        assert not thread.is_alive(), "a waiter past deadline - MIN_CALL stops waiting"
        kind, error = outcome[0]
        assert kind == "error" and "no slot" in error.message
        assert slept == [], "it waited its time already: no refusal turn on top"
        assert client.calls == [] and wallets.slots.waiting == 0


class TestARefusalIsNotRemembered:
    """A 503 ends its flight: the next read of the same wallet tries again, it does not get the old 503."""

    def test_after_the_breaker_lets_calls_through_again(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=1, WALLET_PROXY_BREAKER_COOLDOWN=10,
                                     WALLET_PROXY_BREAKER_PROBE_INTERVAL=10)
        client.error = UpstreamUnavailable("SessionM answered HTTP 503")
        for _ in range(2):  # SessionM's 503, then the open breaker's
            with pytest.raises(UpstreamUnavailable):
                wallets.get("u", "en-US", mono() + 1.8)
        assert len(client.calls) == 1
        mono.tick(10)
        client.error = None
        assert wallets.get("u", "en-US", mono() + 1.8).status == "miss"
        assert wallets.breaker.state == "closed"

    def test_after_an_overload_refusal(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 1.0
        with pytest.raises(UpstreamUnavailable):
            wallets.get("u", "en-US", mono() + 1.8)
        wallets.slots.release()
        assert wallets.get("u", "en-US", mono() + 1.8).status == "miss"
        assert client.calls == [("u", 1.5)]


class TestErrorsHoldNoFrames:
    def test_a_failed_call_hands_its_error_on_without_the_calls_frames(self, mono):
        # errors.release in _run: kept with its traceback, the flight's error held _run's frame, whose
        # `error` held it (a cycle for the collector; tests/test_garbage.py counts them)
        wallets, client, _ = service(mono)
        client.error = UpstreamUnavailable("SessionM refused the connection", retry_after=1)
        with pytest.raises(UpstreamUnavailable) as raised:
            wallets.get("u1", "en-US", mono() + 1.8)
        # plain names, also under make mutate (mutmut renames `_run` to `xǁWalletServiceǁ_run__mutmut_orig`)
        frames = [frame.f_code.co_name.rsplit("ǁ", 1)[-1].split("__mutmut")[0]
                  for frame, _ in traceback.walk_tb(raised.value.__traceback__)]
        assert "_fetch" in frames  # raised anew where the waiter met it ...
        assert "_run" not in frames and "_call" not in frames  # ... not with the call's own frames


class BoundedTransport:
    """A transport that bounds a call's whole time itself (as upstream/fast.py's does)."""

    bounds_total_time = True


class TestTheLeadersOwnCall:
    def test_with_a_transport_that_bounds_the_call_the_leader_makes_it_itself_by_its_deadline(self, mono):
        # no thread to start and switch to (under gevent a whole turn of the loop): the leading
        # request's greenlet calls SessionM, with the call's time cut to the request's deadline
        settings = make_settings("http://sessionm.invalid")
        client, spawned = FakeConnect(mono), []
        client.transport = BoundedTransport()

        def spawn(target, *args):
            spawned.append(target)
            target(*args)

        wallets = WalletService(client, MemoryStore(1 << 20, settings.cache_ttl), settings, clock=FakeClock(),
                                monotonic=mono, spawn=spawn, sleep=lambda seconds: None)
        wallets.breaker.clock = mono
        served = wallets.get("u1", "en-US", mono() + 1.0)  # a deadline shorter than the upstream timeout
        assert spawned == []
        assert client.calls == [("u1", pytest.approx(1.0 - ANSWER_MARGIN))]
        assert served.outcome.name == "MISS" and served.wallet()["user_id"] == "u1"
        assert wallets.store.get("u1", "en-US") == served.entry  # cached under the culture asked for
        assert settings.upstream_timeout > 1.0  # what makes the deadline, not the timeout, the bound

    def test_without_one_the_call_runs_on_its_own_thread_with_the_upstream_timeout(self, mono):
        wallets, client, _ = service(mono)
        spawned = []
        wallets.spawn = lambda target, *args: (spawned.append(target), target(*args))
        wallets.get("u1", "en-US", mono() + 1.8)
        assert len(spawned) == 1 and client.calls == [("u1", pytest.approx(wallets.settings.upstream_timeout))]


class TestAMissRendersWhatItFetched:
    def test_the_wallet_the_call_returned_is_served_without_a_decode_of_its_entry(self, mono):
        # the entry holds it deflated; decoding it again would only cost CPU (~17 µs a 5-offer wallet)
        wallets, client, _ = service(mono)
        returned = []
        answer = client.get_user_offers
        client.get_user_offers = lambda *args: returned.append(answer(*args)) or returned[-1]
        served = wallets.get("u1", "en-US", mono() + 1.8)
        assert served.fetched is returned[0] and served.wallet() is returned[0]
        assert served.entry.wallet == returned[0] and served.entry.wallet is not returned[0]
