"""The event loop's lag (wallet_proxy/web/lag.py) and what the wallet service does with it.

Issue #14: under 1,000 connections of distinct users one gevent worker ran out of CPU; its slot
queue and call timings only saw that as calls that took longer, so it kept admitting SessionM
calls whose answers were then read past their requests' deadlines (504s, goodput down, answers
past Braze's 2 s). The lag monitor measures the queue of runnable greenlets itself; admission
refuses new calls while it stands above LAG_TARGET, deadlines count the time a request waited for
its turn, and timeouts while it stands are ours, not SessionM's (breaker, 503 not 504).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest

from tests.fakes import FakeClock, FixedLag
from tests.test_admission import service
from wallet_proxy.errors import UpstreamTimeout, UpstreamUnavailable
from wallet_proxy.wallet.service import ANSWER_MARGIN, LAG_TARGET, TURNS_BEFORE
from wallet_proxy.wallet.stores import Entry
from wallet_proxy.web.lag import INTERVAL, WINDOW, LoopLag, running_under_gevent


@pytest.fixture
def mono():
    return FakeClock(1000.0)


class TestLoopLag:
    def test_no_samples_no_lag(self, mono):
        assert LoopLag(monotonic=mono).standing() == 0.0 == LoopLag(monotonic=mono).mean()

    def test_standing_is_the_smallest_lag_of_the_window(self, mono):
        lag = LoopLag(interval=0.02, window=0.2, monotonic=mono)
        for late in (0.3, 0.15, 0.4):  # three wake-ups, all late: the loop never caught up
            mono.tick(0.05)
            lag.record(mono(), late)
        assert lag.standing() == 0.15
        assert lag.mean() == pytest.approx((0.3 + 0.15 + 0.4) / 3)

    def test_a_single_late_wake_up_is_a_burst_not_a_standing_queue(self, mono):
        lag = LoopLag(interval=0.02, window=0.2, monotonic=mono)
        for late in (0.0, 0.5, 0.001):  # one garbage collection in between
            mono.tick(0.02)
            lag.record(mono(), late)
        assert lag.standing() == 0.0
        assert lag.mean() > LAG_TARGET, "the mean still says requests waited lately"

    def test_samples_older_than_the_window_are_forgotten(self, mono):
        lag = LoopLag(interval=0.02, window=0.2, monotonic=mono)
        lag.record(mono(), 0.0)
        mono.tick(0.15)
        lag.record(mono(), 0.3)
        assert lag.standing() == 0.0, "the quick wake-up is still in the window"
        mono.tick(0.1)  # the quick one is now 0.25 s old
        lag.record(mono(), 0.35)
        assert lag.standing() == 0.3

    def test_a_monitor_overdue_for_a_whole_window_is_a_stuck_loop(self, mono):
        lag = LoopLag(interval=0.02, window=0.2, monotonic=mono)
        lag.record(mono(), 0.0)
        mono.tick(0.02 + 0.19)
        assert lag.standing() == 0.0, "overdue by less than a window: the last sample stands"
        mono.tick(0.31)
        assert lag.standing() == pytest.approx(0.5), "no wake-up for 0.5 s past its time"

    def test_defaults(self):
        assert (INTERVAL, WINDOW) == (0.02, 0.2)

    def test_the_monitor_thread_measures_the_wait_for_a_turn(self):
        # Real threads, real clock: an idle process has (almost) no lag.
        lag = LoopLag(interval=0.01).start()
        assert lag.start() is lag, "started once"
        import time

        end = time.monotonic() + 5
        while not lag._samples and time.monotonic() < end:
            time.sleep(0.01)
        assert lag._samples, "the monitor took no sample in 5 s"
        assert lag.standing() < LAG_TARGET


GEVENT_PROBE = textwrap.dedent('''
    from gevent import monkey
    monkey.patch_all()
    import json, time
    import gevent
    from wallet_proxy.web.lag import LoopLag, running_under_gevent

    lag = LoopLag().start()
    gevent.sleep(0.3)
    idle = lag.standing()

    def busy(n):  # greenlets that each hold the CPU 30 ms per turn, as requests do under overload
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            spin = time.perf_counter() + 0.03
            while time.perf_counter() < spin:
                pass
            gevent.sleep(0)

    workers = [gevent.spawn(busy, n) for n in range(12)]
    gevent.sleep(0.8)
    loaded = lag.standing()
    gevent.joinall(workers)
    gevent.sleep(0.5)
    print(json.dumps({"gevent": running_under_gevent(), "idle": idle, "loaded": loaded,
                      "after": lag.standing()}))
''')


def test_under_gevent_it_sees_the_queue_of_runnable_greenlets():
    """A real gevent loop: 12 greenlets taking 30 ms of CPU per turn make every turn wait ~0.33 s."""
    out = subprocess.run([sys.executable, "-c", GEVENT_PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["gevent"] is True
    assert seen["idle"] < 0.02
    assert seen["loaded"] > 0.2, seen
    assert seen["after"] < 0.02, "the lag is gone once the work is"


def test_without_gevent_there_is_no_monitor():
    assert running_under_gevent() is False  # the test process is not monkey-patched
    from tests.conftest import make_settings
    from wallet_proxy.services import build

    assert build(make_settings("http://sessionm.invalid")).wallets.lag is None


class TestAdmission:
    def test_a_standing_lag_above_the_target_refuses_new_calls(self, mono):
        wallets, client, _ = service(mono)
        wallets.lag = FixedLag(LAG_TARGET + 0.001)
        assert wallets.slots.expected_wait() == 0.0, "a slot is free: SessionM is not the bottleneck"
        with pytest.raises(UpstreamUnavailable) as refused:
            wallets.get("u", "en-US", mono() + 1.8)
        assert refused.value.retry_after == 1 and client.calls == []

    def test_at_the_target_calls_are_admitted(self, mono):
        wallets, client, _ = service(mono)
        wallets.lag = FixedLag(LAG_TARGET)
        wallets.get("u", "en-US", mono() + 1.8)
        assert len(client.calls) == 1

    def test_a_call_in_flight_is_still_joined_and_a_fresh_hit_still_served(self, mono):
        wallets, client, _ = service(mono)
        wallets.get("u", "en-US", mono() + 1.8)
        wallets.lag = FixedLag(1.0)
        assert wallets.get("u", "en-US", mono() + 1.8).status == "hit"
        flight, _ = wallets.flights.join(("v", "en-US"))
        landed = Entry({"offers": []}, wallets.clock())
        threading.Timer(0.05, wallets.flights.finish, (("v", "en-US"), flight, landed)).start()
        # (the lag takes three turns of 1 s off a deadline: this read has time to wait)
        assert wallets.get("v", "en-US", mono() + 10).entry is landed, "it may wait for that call"
        with pytest.raises(UpstreamUnavailable):
            wallets.get("w", "en-US", mono() + 1.8)
        assert len(client.calls) == 1

    def test_a_queued_call_must_fit_three_turns_of_the_loop_before_its_deadline(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)  # the one slot is busy: a newcomer queues
        wallets.slots.hold = 0.2
        wallets.lag = FixedLag(0.05, mean=0.0)
        wait, call = wallets.slots.expected_wait(), wallets.call_time()
        assert (wait, call) == (0.2, 0.2)
        enough = wait + call + 3 * 0.05 + ANSWER_MARGIN
        assert wallets.admits(mono() + enough + 1e-9)
        assert not wallets.admits(mono() + enough - 0.01)

    def test_the_deadline_counts_the_wait_for_a_turn_before_the_request_was_seen(self, mono):
        wallets, _, _ = service(mono)
        assert wallets.seen_late(10.0) == 10.0
        wallets.lag = FixedLag(0.0, mean=0.2)
        assert TURNS_BEFORE == 3
        assert wallets.seen_late(10.0) == pytest.approx(9.4), "before it, answering after it, a margin"

    def test_a_request_left_no_time_by_its_wait_is_refused_not_called(self, mono):
        wallets, client, _ = service(mono)
        wallets.lag = FixedLag(0.0, mean=0.3)  # waiting turns of 0.3 s, but no standing queue
        with pytest.raises(UpstreamUnavailable):
            wallets.get("u", "en-US", mono() + 0.9 + 0.2)  # 1.1 s - 3 x 0.3 s leaves 0.2 s
        assert client.calls == []
        wallets.get("v", "en-US", mono() + 0.9 + 0.3)  # 0.3 s left: enough for a call (0.25 s)
        assert client.calls == [("v", pytest.approx(0.3))]


class TestTheBreakerUnderLag:
    def test_timeouts_while_the_loop_lags_are_not_sessionms(self, mono):
        wallets, _, _ = service(mono)
        timeout = UpstreamTimeout("SessionM did not answer within 1.50s")
        wallets.lag = FixedLag(LAG_TARGET * 2)  # the answer may be waiting unread in its socket
        assert not wallets.sessionm_failed(timeout, 1.5, 1.5)
        wallets.lag = FixedLag(0.0)  # the same full, on-time timeout with the loop keeping up
        assert wallets.sessionm_failed(timeout, 1.5, 1.5)

    def test_the_breaker_stays_closed_through_timeouts_under_lag(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=2)
        client.elapsed, client.error = 1.5, UpstreamTimeout("SessionM did not answer within 1.50s")
        for n in range(3):
            wallets.lag = None  # admitted while the loop kept up ...
            flight, leader = wallets.flights.join((f"u{n}", "en-US"))
            wallets.lag = FixedLag(LAG_TARGET * 2)  # ... and behind by the time the call timed out
            with pytest.raises(UpstreamTimeout):
                wallets._run(flight, f"u{n}", "en-US", 1.5)
                raise flight.error
        assert len(client.calls) == 3 and wallets.breaker.state == "closed"

    def test_sessionms_own_errors_count_whatever_the_lag(self, mono):
        wallets, _, _ = service(mono)
        wallets.lag = FixedLag(5.0)
        assert wallets.sessionm_failed(UpstreamUnavailable("SessionM answered HTTP 503"), 1.5, 0.01)


class TestEdges:
    """Pinned by the mutation run (docs/mutation.md): the limits and defaults of the lag rules."""

    def test_the_service_takes_its_lag_monitor_from_its_maker(self, mono):
        from tests.conftest import make_settings
        from wallet_proxy.wallet.service import WalletService
        from wallet_proxy.wallet.stores import MemoryStore

        settings = make_settings("http://sessionm.invalid")
        lag = FixedLag(LAG_TARGET + 1)
        wallets = WalletService(object(), MemoryStore(1 << 20, 60), settings, monotonic=mono, lag=lag)
        assert wallets.lag is lag and wallets.lagging()

    def test_a_lag_at_the_target_is_not_lagging_and_a_timeout_then_counts(self, mono):
        wallets, _, _ = service(mono)
        timeout = UpstreamTimeout("SessionM did not answer within 1.50s")
        wallets.lag = FixedLag(LAG_TARGET)
        assert not wallets.lagging() and wallets.sessionm_failed(timeout, 1.5, 1.5)
        wallets.lag = FixedLag(LAG_TARGET + 0.001)
        assert wallets.lagging() and not wallets.sessionm_failed(timeout, 1.5, 1.5)

    def test_a_new_flight_has_not_started(self):
        from wallet_proxy.wallet.service import Flight

        assert Flight().started is None

    def test_a_waiter_behind_a_leader_still_queued_for_a_slot_gets_a_503(self, mono):
        import threading

        from tests.test_slots import until

        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.slots.take(mono() + 10)  # the only slot is busy
        leader = threading.Thread(target=lambda: pytest.raises(UpstreamUnavailable, wallets.get, "u", "en-US",
                                                               mono() + 1.8), daemon=True)
        leader.start()
        until(lambda: wallets.slots.waiting == 1)  # the leader waits in line; its flight has no call
        with pytest.raises(UpstreamUnavailable) as refused:
            wallets.get("u", "en-US", mono() + ANSWER_MARGIN)  # joins, and its deadline is already here
        assert "overloaded" in refused.value.message and client.calls == []
        wallets.slots.wake_all()
        mono.tick(10)
        wallets.slots.wake_all()
        leader.join(5)
        assert not leader.is_alive()

    def test_a_call_with_exactly_the_expected_time_left_is_made(self):
        mono = FakeClock(0.0)
        wallets, client, _ = service(mono)
        wallets.slots.hold = 0.25
        wallets.get("just", "en-US", 0.25)
        assert client.calls == [("just", 0.25)]
