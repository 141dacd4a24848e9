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
