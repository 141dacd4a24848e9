"""Game day (#25): the breaker's refusals stop within 2 s of SessionM recovering, and while SessionM
is down it sees about one probe a second from a process -- on the real clock, over real HTTP, against
a fake SessionM that fails and then recovers.

Why it matters: a refused render is a message Braze holds back by its `:retry` backoff (minutes), and
a send's worth of refusals counts toward Braze's unhealthy-host rule (3,000 failures at > 90 % errors
in a minute stop the host for a minute):
https://braze.com/docs/help/help_articles/api/webhook_connected_content_errors
"""
from __future__ import annotations

import time
import uuid

from tests.conftest import OFFERS_PATH, fixture_json
from tests.fakes import Reply
from tests.test_wallet_service import get, serve  # noqa: F401 (fixture)

OK = fixture_json("get_user_offers.ok.json")


def test_refusals_stop_within_two_seconds_of_sessionm_recovering(sessionm, serve):  # noqa: F811
    # The SPEC's defaults: 5 failures open the breaker, cool-down 10 s; probes every 1 s (new default).
    base, services = serve()
    sessionm.on("POST", OFFERS_PATH, Reply(500, {}))
    outage = time.monotonic()
    answers = []
    while time.monotonic() - outage < 3.0:  # 3 s of a send of new users while SessionM answers 500
        answers.append(get(base, f"down-{uuid.uuid4().hex[:8]}").status_code)
        time.sleep(0.02)
    assert services.wallets.breaker.state in ("open", "half_open")
    assert set(answers) == {503}
    calls = len(sessionm.calls(OFFERS_PATH))
    # 5 to open it, then about one probe a second for the rest of the 3 s: never a call per render.
    assert len(answers) > 60 and 5 <= calls <= 5 + 4, (len(answers), calls)

    sessionm.on("POST", OFFERS_PATH, Reply(200, OK))
    recovered = time.monotonic()
    first_ok = None
    while time.monotonic() - recovered < 6.0:
        if get(base, f"back-{uuid.uuid4().hex[:8]}").status_code == 200:
            first_ok = time.monotonic() - recovered
            break
        time.sleep(0.02)
    assert first_ok is not None and first_ok <= 2.0, f"refused for {first_ok} s after SessionM recovered"
    later = [get(base, f"after-{uuid.uuid4().hex[:8]}").status_code for _ in range(10)]
    assert later == [200] * 10, "once a probe worked every new user is served"


def test_a_probe_hung_on_sessionm_does_not_hold_the_next_one_back():
    from tests.fakes import FakeClock
    from wallet_proxy.upstream.breaker import Breaker

    clock = FakeClock()
    breaker = Breaker(1, 10, clock=clock, probe_interval=1)
    breaker.failure()
    assert not breaker.allow()
    clock.tick(1)
    assert breaker.allow()  # this probe hangs (SessionM hung: it times out after 1.5 s)
    assert not breaker.allow() and breaker.state == "half_open"
    clock.tick(1)
    assert breaker.allow(), "one second after the hung probe started, the next one may go"
    breaker.success()
    assert breaker.state == "closed"


def test_in_a_long_outage_probes_thin_out_to_the_cooldown():
    from tests.fakes import FakeClock
    from wallet_proxy.upstream.breaker import Breaker

    clock = FakeClock()
    breaker = Breaker(1, 10, clock=clock, probe_interval=1)
    breaker.failure()
    probes = []
    for tenth in range(4000):  # 400 s of outage, a caller every 0.1 s, every probe failing
        clock.tick(0.1)
        if breaker.allow():
            probes.append(tenth / 10)
            breaker.failure()
    early = [p for p in probes if p < 20]
    late = [b - a for a, b in zip(probes, probes[1:]) if a > 250]
    assert 18 <= len(early) <= 20, "one probe a second while the outage is young"
    assert late and all(9.9 <= gap <= 10.2 for gap in late), "never more than the cool-down apart"
    assert breaker.retry_after() <= 10
