"""Slots: bounded, first come first served, and a breaker opening wakes every waiter at once.

Waiters are lined up by waiting for `slots.waiting` to say they queued, never by sleeping.
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.fakes import FakeClock
from wallet_proxy.wallet.service import Slots


def until(predicate, timeout: float = 5.0) -> None:
    """Wait for another thread to get somewhere (a predicate), not for time to pass."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "the other thread never got there"
        time.sleep(0.001)


def test_bounded_and_a_freed_slot_goes_to_the_oldest_waiter():
    slots = Slots(1)
    assert slots.take(time.monotonic() + 1)
    order = []

    def waiter(name):
        if slots.take(time.monotonic() + 5):
            order.append(name)
            slots.release()

    threads = []
    for n, name in enumerate(("first", "second")):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        until(lambda: slots.waiting == n + 1)  # "first" queued before "second" starts
    # a newcomer does not jump the queue while others wait
    assert not slots.take(time.monotonic() + 0.01)
    slots.release()
    for t in threads:
        t.join()
    assert order == ["first", "second"]
    assert slots.take(time.monotonic())  # all given back


def test_waiters_time_out_without_leaking_a_slot():
    slots = Slots(1)
    assert slots.take(time.monotonic() + 1)
    started = time.monotonic()
    assert not slots.take(time.monotonic() + 0.1)
    assert 0.09 <= time.monotonic() - started < 0.5
    slots.release()
    assert slots.take(time.monotonic())


def test_wake_all_lets_every_waiter_give_up_at_once():
    slots = Slots(1)
    assert slots.take(time.monotonic() + 1)
    stop = threading.Event()
    results = []

    def waiter():
        started = time.monotonic()
        results.append((slots.take(time.monotonic() + 5, give_up=stop.is_set), time.monotonic() - started))

    threads = [threading.Thread(target=waiter) for _ in range(20)]
    for t in threads:
        t.start()
    until(lambda: slots.waiting == 20)
    stop.set()
    slots.wake_all()
    for t in threads:
        t.join(2)
    assert len(results) == 20
    assert all(not got and waited < 1 for got, waited in results)


def test_a_granted_slot_is_passed_on_when_its_waiter_gives_up():
    slots = Slots(1)
    assert slots.take(time.monotonic() + 1)
    stop = threading.Event()
    got = []
    t = threading.Thread(target=lambda: got.append(slots.take(time.monotonic() + 2, give_up=stop.is_set)))
    t.start()
    until(lambda: slots.waiting == 1)
    stop.set()
    slots.release()  # granted to the waiter, who gives up: the slot must come back
    t.join(2)
    assert got == [False]
    assert slots.take(time.monotonic())


def test_a_waiter_sleeps_until_its_deadline_rather_than_spinning():
    # During a send hundreds of requests queue for a slot: each must block on its ticket, not poll
    # the clock in a loop (which would burn the CPU the admitted calls need).
    reads = []

    def clock():
        reads.append(1)
        return time.monotonic()

    slots = Slots(1, monotonic=clock)
    assert slots.take(clock() + 1)
    assert not slots.take(clock() + 0.05)
    assert len(reads) < 10, f"the clock was read {len(reads)} times in 50 ms: a busy wait"


def test_a_waiter_woken_without_giving_up_keeps_its_place_and_gets_the_next_slot():
    # wake_all is "re-check whether to give up"; a waiter whose answer is no waits on, however
    # little time it has left (a fake clock that never moves: only the release can end the wait).
    clock = FakeClock(1000.0)
    slots = Slots(1, monotonic=clock)
    assert slots.take(clock())
    checked = threading.Semaphore(0)

    def stay():
        checked.release()
        return False

    got = []
    t = threading.Thread(target=lambda: got.append(slots.take(clock() + 0.5, give_up=stay)), daemon=True)
    t.start()
    assert checked.acquire(timeout=5)  # checked once on arrival
    until(lambda: slots.waiting == 1)
    slots.wake_all()
    until(lambda: checked.acquire(blocking=False) or slots.waiting == 0)  # re-checked (or left)
    assert slots.waiting == 1, "a woken waiter that does not give up stays in line"
    slots.release()
    t.join(5)
    assert got == [True]


def test_the_hold_time_is_one_second_until_told_otherwise():
    slots = Slots(2)
    assert slots.take(time.monotonic()) and slots.take(time.monotonic())
    assert slots.expected_wait() == pytest.approx(1.0 / 2), "first in line: one second over two slots"
