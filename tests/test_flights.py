"""Slots and single flight, the two primitives that bound SessionM calls during a send (issue 16 items 1, 4, 7).

Ordering uses events and fake clocks, not sleeps: each test says who waits for whom.
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.fakes import FakeClock
from wallet_proxy.errors import UpstreamTimeout, UpstreamUnavailable
from wallet_proxy.wallet.service import SingleFlight, Slots
from wallet_proxy.wallet.stores import Entry


class TestSlotCount:
    def test_releasing_n_gives_back_n(self):
        clock = FakeClock()
        slots = Slots(4, monotonic=clock)
        for _ in range(3):  # several rounds: a release that set the count instead of adding would show
            assert all(slots.take(clock()) for _ in range(4))
            assert not slots.take(clock()), "a fifth call must not go"
            for _ in range(4):
                slots.release()
        assert slots.expected_wait() == 0.0

    def test_a_release_goes_to_the_pool_only_when_nobody_waits(self):
        clock = FakeClock()
        slots = Slots(2, monotonic=clock)
        assert slots.take(clock()) and slots.take(clock())
        slots.release()
        assert slots.take(clock())
        assert not slots.take(clock())

    def test_give_up_before_taking_consumes_nothing(self):
        # The breaker opened just before take(): no slot is handed out, and none is lost.
        clock = FakeClock()
        slots = Slots(2, monotonic=clock)
        assert not slots.take(clock() + 5, give_up=lambda: True)
        assert slots.take(clock()) and slots.take(clock())
        assert not slots.take(clock())

    def test_an_expired_wait_leaves_the_queue(self):
        clock = FakeClock()
        slots = Slots(1, monotonic=clock)
        assert slots.take(clock())
        assert not slots.take(clock() - 1)  # deadline already passed: no wait at all
        assert slots.waiting == 0
        slots.release()
        assert slots.take(clock())

    def test_expected_wait_grows_with_the_queue(self):
        slots = Slots(2, hold=0.5)
        assert slots.expected_wait() == 0.0
        assert slots.take(time.monotonic()) and slots.take(time.monotonic())
        assert slots.expected_wait() == pytest.approx(0.25)
        waiting = threading.Event()
        done = threading.Event()

        def waiter():
            waiting.set()
            slots.take(time.monotonic() + 5)
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        waiting.wait(2)
        for _ in range(200):
            if slots.waiting == 1:
                break
            time.sleep(0.005)
        assert slots.waiting == 1
        assert slots.expected_wait() == pytest.approx(0.5)
        slots.release()
        assert done.wait(2)
        assert slots.waiting == 0

    def test_hold_time_is_a_moving_average(self):
        slots = Slots(1, hold=1.0)
        assert slots.take(time.monotonic())
        slots.release(held=0.0)
        assert slots.hold == pytest.approx(1.0 - Slots.SMOOTHING)
        assert slots.take(time.monotonic())
        slots.release()  # no measurement: the average stays
        assert slots.hold == pytest.approx(1.0 - Slots.SMOOTHING)


class TestSingleFlight:
    def test_one_leader_many_waiters_and_a_new_flight_after(self):
        flights = SingleFlight()
        first, lead = flights.join("k")
        second, lead2 = flights.join("k")
        assert lead and not lead2 and first is second
        assert flights.running("k") and len(flights) == 1
        other, lead3 = flights.join("other")
        assert lead3 and other is not first and len(flights) == 2
        entry = Entry({"offers": []}, 1.0)
        flights.finish("k", first, entry=entry)
        assert not flights.running("k")
        assert first.wait(time.monotonic()) is entry
        again, lead4 = flights.join("k")
        assert lead4 and again is not first

    def test_waiters_get_the_leaders_error(self):
        flights = SingleFlight()
        flight, _ = flights.join("k")
        flights.finish("k", flight, error=UpstreamUnavailable("SessionM 503"))
        with pytest.raises(UpstreamUnavailable):
            flight.wait(time.monotonic() + 1)

    def test_a_waiter_gives_up_at_its_own_deadline_while_the_call_runs(self):
        flights = SingleFlight()
        flight, _ = flights.join("k")  # the leader's call is still running: nobody finishes it
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            flight.wait(started + 0.05)
        waited = time.monotonic() - started
        assert 0.04 <= waited < 1.0
        assert flights.running("k"), "the call goes on for later readers"

    def test_a_deadline_already_passed_does_not_wait(self):
        clock = FakeClock()
        flights = SingleFlight(monotonic=clock)
        flight, _ = flights.join("k")
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            flight.wait(clock() - 0.5)
        assert time.monotonic() - started < 0.5

    def test_a_late_finish_of_an_old_flight_does_not_remove_the_new_one(self):
        flights = SingleFlight()
        old, _ = flights.join("k")
        flights.finish("k", old, error=UpstreamTimeout("late"))
        new, lead = flights.join("k")
        assert lead
        flights.finish("k", old, entry=Entry({}, 0.0))  # a straggler publishing again
        assert flights.running("k")
        flights.finish("k", new, entry=Entry({}, 0.0))
        assert not flights.running("k")
