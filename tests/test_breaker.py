"""The circuit breaker: opens after N consecutive failures, one probe after the cool-down."""
from __future__ import annotations

import threading

from tests.fakes import FakeClock
from wallet_proxy.upstream.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


def opened(clock, failures=3, cooldown=10.0) -> Breaker:
    breaker = Breaker(failures, cooldown, clock=clock)
    for _ in range(failures):
        assert breaker.allow()
        breaker.failure()
    return breaker


class TestBreaker:
    def test_stays_closed_below_the_threshold_and_a_success_resets_the_count(self):
        breaker = Breaker(3, 10, clock=FakeClock())
        breaker.failure()
        breaker.failure()
        breaker.success()
        breaker.failure()
        breaker.failure()
        assert breaker.state == CLOSED and breaker.allow()

    def test_opens_after_n_consecutive_failures_and_refuses_calls(self):
        clock = FakeClock()
        breaker = opened(clock)
        assert breaker.state == OPEN
        assert not breaker.allow()
        clock.tick(4)
        assert breaker.retry_after() == 6

    def test_lets_exactly_one_probe_through_after_the_cooldown(self):
        clock = FakeClock()
        breaker = opened(clock)
        clock.tick(10)
        assert breaker.state == HALF_OPEN
        assert breaker.allow()
        assert not breaker.allow(), "a second caller must not probe while the first is out"
        breaker.success()
        assert breaker.state == CLOSED and breaker.allow()

    def test_a_failed_probe_reopens_for_a_full_cooldown(self):
        clock = FakeClock()
        breaker = opened(clock)
        clock.tick(10)
        assert breaker.allow()
        breaker.failure()
        assert breaker.state == OPEN and not breaker.allow()
        clock.tick(9.9)
        assert not breaker.allow()
        clock.tick(0.1)
        assert breaker.allow()

    def test_a_cancelled_probe_can_be_retried(self):
        clock = FakeClock()
        breaker = opened(clock)
        clock.tick(10)
        assert breaker.allow()
        breaker.cancel()
        assert breaker.allow()

    def test_concurrent_callers_after_cooldown_get_one_probe(self):
        clock = FakeClock()
        breaker = opened(clock)
        clock.tick(10)
        results, barrier = [], threading.Barrier(16)

        def caller():
            barrier.wait()
            results.append(breaker.allow())

        threads = [threading.Thread(target=caller) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results.count(True) == 1


class TestSignals:
    """What the wallet service reads from the breaker (issue 16 item 6)."""

    def test_a_fresh_breaker_is_closed(self):
        breaker = Breaker(failures=3, cooldown=10, clock=FakeClock())
        assert breaker.state == CLOSED and breaker.allow() and breaker.retry_after() == 1.0

    def test_only_the_failure_that_opens_says_so(self):
        clock = FakeClock()
        breaker = Breaker(failures=3, cooldown=10, clock=clock)
        assert [breaker.failure() for _ in range(3)] == [False, False, True]
        assert breaker.failure() is False, "already open: not 'just opened' again"
        clock.tick(10)
        assert breaker.allow()
        assert breaker.failure() is False, "a failed probe re-opens quietly"
        breaker.success()
        assert [breaker.failure() for _ in range(3)] == [False, False, True], "closed again: counts anew"

    def test_threshold_of_one_opens_on_the_first_failure(self):
        breaker = Breaker(failures=1, cooldown=5, clock=FakeClock())
        assert breaker.failure() is True and breaker.state == OPEN

    def test_retry_after_counts_down_and_never_below_one(self):
        clock = FakeClock()
        breaker = Breaker(failures=1, cooldown=10, clock=clock)
        breaker.failure()
        assert breaker.retry_after() == 10
        clock.tick(4)
        assert breaker.retry_after() == 6
        clock.tick(5.5)
        assert breaker.retry_after() == 1.0
        clock.tick(100)
        assert breaker.retry_after() == 1.0

    def test_half_open_exactly_at_the_cooldown(self):
        clock = FakeClock()
        breaker = Breaker(failures=1, cooldown=10, clock=clock)
        breaker.failure()
        clock.tick(9.999)
        assert breaker.state == OPEN and not breaker.allow()
        clock.tick(0.001)
        assert breaker.state == HALF_OPEN

    def test_success_while_open_closes_and_clears_the_probe(self):
        clock = FakeClock()
        breaker = Breaker(failures=2, cooldown=10, clock=clock)
        breaker.failure(), breaker.failure()
        clock.tick(10)
        assert breaker.allow()
        breaker.success()
        assert breaker.state == CLOSED
        assert breaker.failure() is False, "the count restarted at zero"

    def test_a_cancelled_probe_leaves_the_breaker_open(self):
        clock = FakeClock()
        breaker = Breaker(failures=1, cooldown=10, clock=clock)
        breaker.failure()
        clock.tick(10)
        assert breaker.allow()
        breaker.cancel()
        assert breaker.state == HALF_OPEN
