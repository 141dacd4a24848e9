"""The wallet service's own bookkeeping: when a cached wallet is fresh, stale-while-revalidate or
stale-if-error; the background refresh; what one SessionM call reports (breaker, slot time,
metrics); another process's call through the cross-process lock; the answer's headers.

Fake clocks throughout (`wallets.clock` the wall clock of cache ages, `mono` the monotonic one) and
the SessionM call made inline, so nothing waits for time to pass.
"""
from __future__ import annotations

import threading

import pytest

from tests.fakes import FakeClock, FixedLag
from tests.test_admission import service
from tests.test_slots import until
from wallet_proxy.errors import Internal, UpstreamTimeout, UpstreamUnavailable, UserNotFound
from wallet_proxy.wallet.service import (ANSWER_MARGIN, HIT, INITIAL_HOLD, LAG_TARGET, MISS, SIE, SWR, Served,
                                         Slots, _spawn_thread)
from wallet_proxy.wallet.handler import wallet_headers
from wallet_proxy.wallet.stores import Entry
from wallet_proxy.web.metrics import Metrics

# make_settings' defaults: WALLET_PROXY_CACHE_TTL 60 s, SWR_WINDOW 10 s, STALE_TTL 300 s
TTL, SWR_WINDOW, STALE_TTL = 60, 10, 300


@pytest.fixture
def mono():
    return FakeClock(1000.0)


def cached(wallets, user="u"):
    """Fetch `user`'s wallet once so it is in the cache, fetched now (wall clock)."""
    assert wallets.get(user, "en-US", wallets.monotonic() + 1.8).status == MISS


class SharedCall:
    """The cross-process lock when another process makes the call: its entry, or its failure.

    Waiting for the other process takes `waited` seconds of the monotonic clock; `call` (this
    process's own SessionM call) is never made.
    """

    def __init__(self, monotonic: FakeClock, fetched_ago: float = 0.5, waited: float = 0.4):
        self.monotonic, self.fetched_ago, self.waited = monotonic, fetched_ago, waited
        self.clock = None  # the wall clock, set once the service exists
        self.error = None

    def fetch_once(self, user_id, culture, timeout, call):
        self.monotonic.tick(self.waited)
        if self.error is not None:
            raise self.error
        return Entry({"user_id": user_id, "offers": []}, self.clock() - self.fetched_ago)


class RecordedEvent:
    """A flight's `done` that is never set and records each wait's timeout instead of waiting."""

    def __init__(self):
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return False

    def set(self):
        pass


class TestFreshStaleOrFetched:
    def test_a_wallet_is_a_hit_until_its_ttl_is_over(self, mono):
        wallets, client, _ = service(mono)
        cached(wallets)
        wallets.clock.tick(TTL - 0.5)
        served = wallets.get("u", "en-US", mono() + 1.8)
        assert served.status == HIT and served.ttl_left == 0.5
        wallets.clock.tick(0.5)  # exactly its TTL: no longer fresh
        assert wallets.get("u", "en-US", mono() + 1.8).status == SWR
        assert len(client.calls) == 2, "the first fetch and the refresh"

    def test_stale_while_revalidate_ends_with_its_window(self, mono):
        wallets, client, _ = service(mono)
        cached(wallets)
        wallets.clock.tick(TTL + SWR_WINDOW - 1)
        assert wallets.get("u", "en-US", mono() + 1.8).status == SWR
        cached(wallets, "v")
        wallets.clock.tick(TTL + SWR_WINDOW)  # exactly the window's end: the read waits for SessionM
        served = wallets.get("v", "en-US", mono() + 1.8)
        assert served.status == MISS and served.ttl_left == TTL

    def test_stale_if_error_up_to_stale_ttl_past_the_ttl(self, mono):
        wallets, client, _ = service(mono)
        cached(wallets)
        cached(wallets, "v")
        client.error = UpstreamUnavailable("SessionM answered HTTP 503")
        wallets.clock.tick(TTL + STALE_TTL - 1)
        served = wallets.get("u", "en-US", mono() + 1.8)
        assert served.status == SIE and served.ttl_left == -(STALE_TTL - 1)
        wallets.clock.tick(1)  # exactly STALE_TTL past its TTL: too old to serve
        with pytest.raises(UpstreamUnavailable):
            wallets.get("v", "en-US", mono() + 1.8)

    def test_a_miss_is_fresh_for_its_whole_ttl_less_its_age(self, mono):
        # Another process made the call (through the cross-process lock) 2 s ago.
        shared = SharedCall(mono, fetched_ago=2.0)
        wallets, client, _ = service(mono, locker=shared)
        shared.clock = wallets.clock
        served = wallets.get("u", "en-US", mono() + 1.8)
        assert served.status == MISS and served.ttl_left == TTL - 2.0
        assert client.calls == []


class TestRefresh:
    def test_a_stale_read_refreshes_the_wallet_with_the_whole_upstream_timeout(self, mono):
        wallets, client, _ = service(mono)
        cached(wallets)
        wallets.clock.tick(TTL + 1)
        client.elapsed = 0.2
        assert wallets.get("u", "en-US", mono() + 1.8).status == SWR
        assert client.calls == [("u", 1.5), ("u", 1.5)]
        assert not wallets.flights.running(("u", "en-US")), "the refresh is over"
        assert wallets.get("u", "en-US", mono() + 1.8).status == HIT, "and stored"

    def test_each_stale_wallet_gets_its_own_refresh(self, mono):
        wallets, client, _ = service(mono)
        cached(wallets, "u")
        cached(wallets, "v")
        wallets.clock.tick(TTL + 1)
        assert [wallets.get(user, "en-US", mono() + 1.8).status for user in ("u", "v")] == [SWR, SWR]
        assert [user for user, _ in client.calls] == ["u", "v", "u", "v"]

    def test_a_stale_answer_never_waits_for_a_slot_nor_a_refusal_turn(self):
        mono = FakeClock(0.0)  # (a clock from 0: a "deadline" of 0.0 or 1.0 is then not long past)
        wallets, client, slept = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        cached(wallets)
        wallets.clock.tick(TTL + 1)
        assert wallets.slots.take(mono() + 10)  # a send holds every slot...
        wallets.slots.hold = 1.0  # ... and refuses newcomers, each answered in its turn
        with pytest.raises(UpstreamUnavailable):
            wallets.get("newcomer", "en-US", mono() + 1.8)
        outcome = []
        reader = threading.Thread(target=lambda: outcome.append(wallets.get("u", "en-US", mono() + 1.8)),
                                  daemon=True)
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "the stale read waited for a slot (the fake clock never moves)"
        assert outcome[0].status == SWR
        assert slept == [], "nor did it wait for a refusal's turn"
        assert [user for user, _ in client.calls] == ["u"] and wallets.slots.waiting == 0
        assert not wallets.flights.running(("u", "en-US")), "the refresh that found no slot is over"


class TestOneCall:
    def test_reports_each_call_to_the_metrics_by_outcome_with_its_time(self, mono):
        metrics = Metrics()
        wallets, client, _ = service(mono, metrics=metrics)
        client.elapsed = 0.25
        wallets.get("ok", "en-US", mono() + 1.8)
        client.error = UserNotFound()
        with pytest.raises(UserNotFound):
            wallets.get("unknown", "en-US", mono() + 1.8)
        client.error = UpstreamUnavailable("SessionM answered HTTP 503")
        with pytest.raises(UpstreamUnavailable):
            wallets.get("failing", "en-US", mono() + 1.8)

        def sample(name, outcome):
            return metrics.registry.get_sample_value(name, {"upstream": "sessionm", "outcome": outcome})

        for outcome in ("ok", "user_not_found", "upstream_unavailable"):
            assert sample("wallet_proxy_upstream_calls_total", outcome) == 1, outcome
            assert sample("wallet_proxy_upstream_duration_seconds_sum", outcome) == 0.25, outcome

    def test_counts_a_read_that_joined_a_call_in_flight(self, mono):
        metrics = Metrics()
        wallets, _, _ = service(mono, metrics=metrics)
        flight, _ = wallets.flights.join(("u", "en-US"))  # another request's call is running
        reader = threading.Thread(target=wallets.get, args=("u", "en-US", mono() + 1.8), daemon=True)
        reader.start()
        until(lambda: metrics.registry.get_sample_value("wallet_proxy_coalesced_total") == 1)
        wallets.flights.finish(("u", "en-US"), flight, entry=Entry({"offers": []}, wallets.clock()))
        reader.join(5)
        assert not reader.is_alive()

    def test_a_waiter_answers_its_timeout_before_its_deadline_while_the_call_goes_on(self, mono):
        wallets, _, _ = service(mono)
        flight, _ = wallets.flights.join(("u", "en-US"))  # a call in flight that will not land in time
        flight.started = mono() - 0.75  # SessionM has had half of what a call can get (1.5 s)
        flight.done = RecordedEvent()
        with pytest.raises(UpstreamTimeout):
            wallets.get("u", "en-US", mono() + 1.0)
        assert flight.done.waits == [pytest.approx(1.0 - ANSWER_MARGIN)], "it keeps the margin to answer"
        assert wallets.flights.running(("u", "en-US")), "the call goes on for the next reads"

    @pytest.mark.parametrize("started", [None, -0.74], ids=["still queued for a slot", "started late"])
    def test_a_call_that_had_no_fair_chance_by_the_deadline_is_our_overload_a_503(self, mono, started):
        wallets, _, _ = service(mono)
        flight, _ = wallets.flights.join(("u", "en-US"))
        flight.started = None if started is None else mono() + started
        flight.done = RecordedEvent()
        with pytest.raises(UpstreamUnavailable) as refused:
            wallets.get("u", "en-US", mono() + 1.0)
        assert refused.value.status == 503 and refused.value.retry_after == 1
        assert "overloaded" in refused.value.message

    def test_the_fair_chance_is_half_the_request_deadline_when_that_is_shorter(self, mono):
        wallets, _, _ = service(mono, WALLET_PROXY_DEADLINE=0.4, WALLET_PROXY_UPSTREAM_TIMEOUT=10)
        flight, _ = wallets.flights.join(("u", "en-US"))
        flight.started = mono() - 0.2  # half of the 0.4 s a call can get here
        flight.done = RecordedEvent()
        with pytest.raises(UpstreamTimeout):
            wallets.get("u", "en-US", mono() + 0.1)

    def test_a_timeout_while_the_loop_lags_is_our_overload_a_503(self, mono):
        wallets, _, _ = service(mono)
        wallets.lag = FixedLag(LAG_TARGET + 0.01)
        flight, _ = wallets.flights.join(("u", "en-US"))
        flight.started = mono() - 1.0
        flight.done = RecordedEvent()
        with pytest.raises(UpstreamUnavailable):
            wallets.get("u", "en-US", mono() + 1.0)

    def test_the_calls_own_timeout_stays_a_504_whatever_the_waiters_deadline(self, mono):
        wallets, client, _ = service(mono)
        client.error = UpstreamTimeout("SessionM did not answer within 1.50s")
        with pytest.raises(UpstreamTimeout) as late:
            wallets.get("u", "en-US", mono() + 1.8)
        assert late.value is client.error

    def test_asks_sessionm_for_that_user(self, mono):
        wallets, client, _ = service(mono)
        served = wallets.get("user-42", "fr", mono() + 1.8)
        assert client.calls == [("user-42", 1.5)] and served.entry.wallet["user_id"] == "user-42"

    def test_teaches_the_slots_how_long_a_call_holds_one(self, mono):
        wallets, client, _ = service(mono)
        assert wallets.slots.hold == INITIAL_HOLD
        client.elapsed = 0.15
        wallets.get("u", "en-US", mono() + 1.8)
        assert wallets.slots.hold == pytest.approx(INITIAL_HOLD + Slots.SMOOTHING * (0.15 - INITIAL_HOLD))

    def test_a_bug_is_an_internal_error_for_every_reader_and_frees_everything(self, mono):
        wallets, client, _ = service(mono, WALLET_PROXY_UPSTREAM_CONCURRENCY=1)
        client.error = KeyError("a bug in the client")
        with pytest.raises(Internal):
            wallets.get("u", "en-US", mono() + 1.8)
        client.error = None
        assert wallets.get("u", "en-US", mono() + 1.8).status == MISS, "slot and flight given back"


class TestAnotherProcessesCall:
    def open_breaker(self, mono):
        shared = SharedCall(mono)
        wallets, client, _ = service(mono, locker=shared, WALLET_PROXY_BREAKER_FAILURES=1,
                                     WALLET_PROXY_BREAKER_COOLDOWN=10,
                                     WALLET_PROXY_BREAKER_PROBE_INTERVAL=10)
        shared.clock = wallets.clock
        wallets.breaker.failure()  # SessionM failed: the breaker is open
        mono.tick(10)
        assert wallets.breaker.state == "half_open"
        return wallets, shared, client

    def test_its_entry_closes_the_breaker_this_process_probed_with(self, mono):
        wallets, shared, client = self.open_breaker(mono)
        assert wallets.get("u", "en-US", mono() + 1.8).status == MISS  # this process's probe
        assert wallets.breaker.state == "closed", "SessionM answered the other process"
        assert client.calls == []

    def test_its_failure_gives_the_probe_back(self, mono):
        wallets, shared, client = self.open_breaker(mono)
        shared.error = UpstreamTimeout("another process's SessionM call did not land in time")
        with pytest.raises(UpstreamTimeout):
            wallets.get("u", "en-US", mono() + 1.8)
        assert wallets.breaker.state == "half_open", "nothing learnt of SessionM's health"
        assert wallets.breaker.allow(), "the next read may probe"

    def test_waiting_for_it_is_not_a_slot_time(self, mono):
        wallets, shared, _ = self.open_breaker(mono)
        wallets.get("u", "en-US", mono() + 1.8)
        assert wallets.slots.hold == INITIAL_HOLD, "no SessionM call was timed"
        assert wallets.slots.take(mono()), "the slot was given back"


class TestAnswerHeaders:
    def test_fresh_and_stale_wallets(self):
        entry = Entry({"offers": []}, 0.0)
        assert wallet_headers(Served(entry, HIT, 42.7), "abc") == [
            ("Cache-Status", "wallet-proxy; hit; ttl=42"), ("Cache-Control", "private, max-age=42"),
            ("ETag", '"abc"')]
        stale = wallet_headers(Served(entry, SWR, -5.0), "abc")
        assert stale[1] == ("Cache-Control", "private, max-age=0"), "a stale wallet: no caching"


def test_a_sessionm_call_runs_in_its_own_thread_and_the_caller_goes_on_at_once():
    # The caller does not wait for the thread to start (threading.Thread.start would: a whole turn
    # of gevent's loop under load), and a hanging call never holds up the process's exit: the
    # thread is not one of threading's, which the interpreter joins at exit.
    release, seen = threading.Event(), threading.Event()
    where = []

    def target(a, b):
        where.append((threading.get_ident(), a, b))
        seen.set()
        release.wait(5)

    _spawn_thread(target, 1, 2)
    assert seen.wait(5)
    assert where == [(where[0][0], 1, 2)] and where[0][0] != threading.get_ident()
    assert all(t.ident != where[0][0] for t in threading.enumerate()), "not a threading.Thread"
    release.set()
