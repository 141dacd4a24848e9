"""Overload: admission control from the measured queue and slot time, paced refusals, and a breaker
that counts SessionM's failures only -- never a timeout caused by our own queueing.

Everything runs on fake clocks with the SessionM call made inline (spawn runs it at once), so
nothing here waits for time to pass.
"""
from __future__ import annotations

import pytest

from tests.conftest import make_settings
from tests.fakes import FakeClock
from wallet_proxy.errors import UpstreamTimeout, UpstreamUnavailable
from wallet_proxy.wallet.service import MIN_CALL, PACE_FACTOR, QUEUE_TARGET, Pacer, Slots, WalletService
from wallet_proxy.wallet.stores import MemoryStore


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


def service(mono, **env) -> tuple[WalletService, FakeConnect, list]:
    settings = make_settings("http://sessionm.invalid", **env)
    client, slept = FakeConnect(mono), []
    wallets = WalletService(client, MemoryStore(100, settings.cache_ttl), settings, clock=FakeClock(),
                            monotonic=mono, spawn=inline, sleep=slept.append)
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

    def test_the_refusal_is_the_same_for_the_fast_path(self, mono):
        wallets, _, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        assert wallets.refusal("u", "en-US", None, mono() + 1.8) is None
        assert wallets.slots.take(mono() + 10)
        wallets.slots.hold = 1.0
        refusal = wallets.refusal("u", "en-US", None, mono() + 1.8)
        assert refusal is not None and refusal.status == 503 and "no slot" in refusal.message


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
        wallets, client, _ = service(mono, WALLET_PROXY_BREAKER_FAILURES=1, WALLET_PROXY_BREAKER_COOLDOWN=10)
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
        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        # the slot is free, but the loop ran this request so late that only 0.05 s of it is left
        with pytest.raises(UpstreamUnavailable) as refused:
            wallets.get("late", "en-US", mono() + MIN_CALL / 2 + 0.025)
        assert "no slot" in refused.value.message and client.calls == []
        assert wallets.slots.take(mono()), "the slot was given back"
