"""upstream.pacing: the one token bucket, the one Retry-After parser, the one backoff (no sleeps)."""
from __future__ import annotations

import threading
from email.utils import format_datetime
from datetime import datetime, timezone

import pytest

from tests.fakes import FakeClock
from wallet_proxy.upstream.pacing import TokenBucket, backoff, parse_retry_after


class TestTokenBucket:
    def test_a_burst_then_the_rate(self):
        clock = FakeClock(0)
        bucket = TokenBucket(rate=2, capacity=3, clock=clock)
        assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
        assert bucket.take() == pytest.approx(0.5)  # refused: the wait for one token at 2/s
        assert bucket.take() == pytest.approx(0.5)  # a refusal takes nothing
        clock.tick(0.5)
        assert bucket.take() == 0.0
        clock.tick(100)
        assert bucket.tokens == pytest.approx(3)  # never above capacity

    def test_taking_several_tokens_at_once(self):
        clock = FakeClock(0)
        bucket = TokenBucket(rate=1, capacity=5, clock=clock)
        assert bucket.take(4) == 0.0
        assert bucket.take(2) == pytest.approx(1.0)
        assert bucket.tokens == pytest.approx(1)

    def test_refund_gives_back_but_not_above_capacity(self):
        clock = FakeClock(0)
        bucket = TokenBucket(rate=1, capacity=2, clock=clock)
        bucket.take()
        bucket.refund()
        bucket.refund()
        assert bucket.tokens == pytest.approx(2)

    def test_reserve_queues_callers_one_slot_apart(self):
        clock = FakeClock(0)
        bucket = TokenBucket(rate=4, capacity=1, clock=clock)
        assert [bucket.reserve() for _ in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.75])

    def test_hold_gives_nothing_for_that_long(self):
        clock = FakeClock(0)
        bucket = TokenBucket(rate=10, capacity=10, clock=clock)
        bucket.hold(3)
        assert bucket.take() == pytest.approx(3.0)
        clock.tick(2.9)
        assert bucket.take() > 0
        clock.tick(0.1)
        assert bucket.take() == 0.0

    def test_for_window_never_exceeds_the_limit_in_any_window(self):
        clock = FakeClock(0)
        bucket = TokenBucket.for_window(100, 60.0, burst=10, clock=clock)
        times = []
        while clock() < 600:
            wait = bucket.take()
            if wait:
                clock.tick(wait)
            else:
                times.append(clock())
        for i, start in enumerate(times):  # sliding 60 s windows starting at each call
            assert sum(1 for t in times[i:] if t < start + 60) <= 100
        assert len(times) >= 900  # and it does not throttle far below the limit

    def test_a_clock_going_backwards_adds_no_tokens(self):
        clock = FakeClock(100)
        bucket = TokenBucket(rate=1, capacity=1, clock=clock)
        bucket.take()
        clock.now = 50
        assert bucket.take() > 0
        clock.now = 100.5
        assert bucket.take() > 0  # only half a second passed since the last real refill

    def test_threads_never_take_more_than_there_is(self):
        bucket = TokenBucket(rate=1e-9, capacity=500)  # effectively no refill during the test
        taken = []
        lock = threading.Lock()

        def worker():
            mine = sum(1 for _ in range(200) if bucket.take() == 0.0)
            with lock:
                taken.append(mine)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(taken) == 500

    @pytest.mark.parametrize("rate, capacity", [(0, 1), (1, 0), (-1, 1)])
    def test_nonsense_settings_are_refused(self, rate, capacity):
        with pytest.raises(ValueError):
            TokenBucket(rate, capacity)


class TestRetryAfter:
    NOW = 1_800_000_000.0

    @pytest.mark.parametrize("raw, seconds", [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5),
                                              (b"3", 3.0), (30, 30.0)])
    def test_delta_seconds(self, raw, seconds):
        assert parse_retry_after(raw, now=lambda: self.NOW) == seconds

    def test_an_http_date_is_seconds_from_now(self):
        when = datetime.fromtimestamp(self.NOW + 90, tz=timezone.utc)
        assert parse_retry_after(format_datetime(when, usegmt=True), now=lambda: self.NOW) == 90.0

    def test_obsolete_date_forms_and_a_date_in_the_past(self):
        when = datetime.fromtimestamp(self.NOW + 60, tz=timezone.utc)
        asctime = when.strftime("%a %b %d %H:%M:%S %Y")  # no zone: HTTP dates are GMT
        assert parse_retry_after(asctime, now=lambda: self.NOW) == 60.0
        past = format_datetime(datetime.fromtimestamp(self.NOW - 600, tz=timezone.utc), usegmt=True)
        assert parse_retry_after(past, now=lambda: self.NOW) == 0.0

    @pytest.mark.parametrize("raw", [None, "", "   ", "soon", "-5", "inf", "nan", "1e999", "12abc",
                                     "Mon, 99 Foo 2026 99:99:99 GMT", "x" * 10_000, "Fri, 31 Dec 99999 "
                                     "23:59:59 GMT", "\x00\xff"])
    def test_garbage_says_nothing(self, raw):
        assert parse_retry_after(raw, now=lambda: self.NOW) is None


class TestBackoff:
    def test_grows_exponentially_up_to_the_cap_with_a_floor(self):
        high = [backoff(n, base=1.0, cap=60, rng=lambda: 1.0) for n in range(1, 9)]
        low = [backoff(n, base=1.0, cap=60, rng=lambda: 0.0) for n in range(1, 9)]
        assert high == [1, 2, 4, 8, 16, 32, 60, 60]
        assert low == [0.5, 1, 2, 4, 8, 16, 30, 30]

    def test_jitter_spreads_within_the_band(self):
        delays = {backoff(3, base=1.0, cap=60) for _ in range(50)}
        assert len(delays) > 40 and all(2.0 <= d <= 4.0 for d in delays)

    def test_attempt_zero_or_huge_stays_sane(self):
        assert backoff(0, base=1.0, cap=8, rng=lambda: 1.0) == 1.0
        assert backoff(10_000, base=1.0, cap=8, rng=lambda: 1.0) == 8.0
