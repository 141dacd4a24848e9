"""No answer leaves cyclic garbage: an answered error drops its traceback (errors.release).

A traceback holds the frames it passed through, and their locals hold the error again (the
request's log line, the single flight that handed the error to every waiter), so every error
answer used to leave 20-35 objects that only Python's cyclic collector frees. Under 1,000
connections of overload (hundreds of paced refusals a second) they reached the oldest generation,
whose collections then stalled the worker's event loop for 100-200 ms every ~2 s: SessionM's
answers waited unread in their sockets, calls read 165-175 ms instead of 150 and goodput fell to
0.85 × capacity (bench/RESULTS.md, "Overload (T4)"; 0.93 with this).

Each test calls the WSGI app directly (as gunicorn's worker does) with the collector off, then
counts what one collection finds. SessionM is the benchmarks' stand-in (bench/upstream.py) on
loopback in a process of its own, so what is counted is this process's: the service's.
"""
from __future__ import annotations

import gc
import io

import pytest

from tests.conftest import make_settings
from tests.fakes import FixedLag
from tests.test_bench_order import bench_run  # bench/run.py, loaded once
from tests.test_slots import until
from wallet_proxy.errors import UpstreamUnavailable, release

AUTH = "Basic dGVzdDpzZWNyZXQ="  # test:secret, of conftest.CLIENTS
ROUNDS = 40


def environ(path: str, query: str = "", method: str = "GET", auth: str | None = AUTH) -> dict:
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
           "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
           "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO()}
    if auth:
        env["HTTP_AUTHORIZATION"] = auth
    return env


def answer(app, env: dict) -> str:
    statuses = []
    b"".join(app(env, lambda status, headers, exc_info=None: statuses.append(status)))
    return statuses[0]


def garbage_per_answer(app, make_env, status: str) -> float:
    """Cyclic garbage objects one answer leaves, over ROUNDS answers (each must have `status`)."""
    assert answer(app, make_env(-1)).startswith(status)  # warm: imports, pools, memos
    gc.collect()
    gc.disable()
    try:
        for n in range(ROUNDS):
            got = answer(app, make_env(n))
            assert got.startswith(status), got
        return gc.collect() / ROUNDS
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def stand_in():
    server = bench_run.stand_in()
    yield server
    server.close()


@pytest.fixture
def wallet_app(stand_in, app_for):
    bench_run.configure(stand_in, 0.0)  # answers at once, no fault
    return app_for(make_settings(stand_in.url))


def test_the_check_sees_garbage_when_there_is_some():
    # the measure itself: an error kept with its own traceback is found by the collector
    def leave_a_cycle():
        try:
            raise UpstreamUnavailable("x")
        except UpstreamUnavailable as exc:
            kept = exc  # a local of the frame its traceback holds: a cycle
            return kept.code

    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            leave_a_cycle()
        assert gc.collect() >= 10
    finally:
        gc.enable()


class TestWalletDoor:
    def test_hits_and_misses_leave_none(self, wallet_app):
        assert garbage_per_answer(wallet_app, lambda n: environ("/v1/wallets/user-1"), "200") == 0  # hits
        assert garbage_per_answer(wallet_app, lambda n: environ(f"/v1/wallets/miss-{n}"), "200") == 0

    def test_an_overload_refusal_leaves_none(self, wallet_app):
        # the loop's standing lag over its target: every new SessionM call refused, 503 + Retry-After
        wallets = wallet_app.extensions["wallet_proxy"].wallets
        wallets.lag = FixedLag(1.0)
        wallets.sleep = lambda seconds: None  # the pacing's wait, not what is measured here
        assert garbage_per_answer(wallet_app, lambda n: environ(f"/v1/wallets/new-{n}"), "503") == 0

    def test_sessionm_failing_leaves_none(self, stand_in, wallet_app):
        bench_run.configure(stand_in, 0.0, "fault-500")
        wallet_app.extensions["wallet_proxy"].wallets.breaker.failure = lambda: False  # stays closed
        assert garbage_per_answer(wallet_app, lambda n: environ(f"/v1/wallets/down-{n}"), "503") == 0

    def test_an_error_answered_as_an_empty_wallet_leaves_none(self, stand_in, wallet_app):
        # on_error=empty: SessionM's failure becomes a 200 the template can test (wallet.ok false)
        bench_run.configure(stand_in, 0.0, "fault-500")
        wallet_app.extensions["wallet_proxy"].wallets.breaker.failure = lambda: False  # stays closed
        assert garbage_per_answer(
            wallet_app, lambda n: environ(f"/v1/wallets/soft-{n}", "on_error=empty"), "200") == 0

    def test_a_failed_background_refresh_leaves_none(self, stand_in, wallet_app, clock):
        # a stale wallet is answered at once (stale-while-revalidate) and refreshed in the background;
        # the refresh fails and has no waiter to answer: its error was kept with its traceback
        wallets = wallet_app.extensions["wallet_proxy"].wallets
        for n in range(-1, ROUNDS):
            assert answer(wallet_app, environ(f"/v1/wallets/swr-{n}")).startswith("200")
        clock.tick(wallets.settings.cache_ttl + 1)  # past its TTL, within the stale window
        bench_run.configure(stand_in, 0.0, "fault-500")
        wallets.breaker.failure = lambda: False  # stays closed: every read starts a refresh

        def stale_then_refreshed(n):
            if n > -1:  # the previous read's refresh has finished (failed) before the next is counted
                until(lambda: len(wallets.flights) == 0)
            return environ(f"/v1/wallets/swr-{n}")

        assert garbage_per_answer(wallet_app, stale_then_refreshed, "200") == 0
        until(lambda: len(wallets.flights) == 0)
        assert bench_run.upstream_calls(stand_in) == ROUNDS + 1  # every read started a refresh (it failed)

    @pytest.mark.parametrize("make_env, status", [
        (lambda n: environ("/v1/wallets/user-1", "view=nope"), "400"),  # a bad query field
        (lambda n: environ("/v1/wallets/" + "x" * 300), "400"),  # a bad id
        (lambda n: environ("/v1/wallets/user-1", auth=None), "401"),  # no credentials
    ], ids=["query", "id", "auth"])
    def test_refused_requests_leave_none(self, wallet_app, make_env, status):
        assert garbage_per_answer(wallet_app, make_env, status) == 0


class TestFlaskDoors:
    def test_an_error_answer_leaves_no_more_than_a_success(self, wallet_app):
        # werkzeug's router leaves a few objects per matched request (a recursive closure of its own);
        # an error answered by our handlers must add nothing to that
        ok = garbage_per_answer(wallet_app, lambda n: environ("/healthz"), "200")
        assert ok < 20
        unset = garbage_per_answer(  # an ApiError raised in a Flask route (Braze is not configured here)
            wallet_app, lambda n: environ("/v1/braze/trigger", method="POST"), "503")
        not_found = garbage_per_answer(wallet_app, lambda n: environ("/v1/nothing-here"), "404")  # werkzeug's
        assert unset <= ok and not_found <= ok


def test_release_drops_every_traceback_of_the_chain_and_survives_a_loop():
    def raised(exc):
        try:
            raise exc
        except Exception as caught:
            return caught

    inner = raised(ValueError("inner"))
    try:
        try:
            raise inner
        except ValueError as exc:
            raise UpstreamUnavailable("outer") from exc
    except UpstreamUnavailable as exc:
        outer = exc
    context = raised(KeyError("context"))
    outer.__context__ = context
    context.__context__ = outer  # a loop in the chain must not spin
    assert outer.__traceback__ is not None and inner.__traceback__ is not None
    release(outer)
    assert outer.__traceback__ is None and inner.__traceback__ is None and context.__traceback__ is None
    assert outer.__cause__ is inner  # the chain itself stays: the log may still name it
    release(None)  # nothing to drop
