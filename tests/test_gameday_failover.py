"""Game day (#25): two seconds after a Sentinel failover, every instance is back on the shared cache
and single flight: 20 concurrent first reads of one user through two instances make one SessionM
call. Real master, replica and Sentinel; the service as two Procfile processes.

Braze renders each message 2-3 times (HTML, text, AMP) at once, so a send's renders of one user
arrive together: https://www.braze.com/docs/user_guide/personalization_and_dynamic_content/connected_content/
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import OFFERS_PATH
from tests.fakes import Reply
from tests.test_redis_topologies import (OK, burst_on_both, calls_for, new_user, sentinel,  # noqa: F401
                                         services)

pytestmark = pytest.mark.redis


def test_single_flight_across_instances_two_seconds_after_a_failover(sentinel, sessionm,  # noqa: F811
                                                                    services, quiet_fakes):  # noqa: F811
    processes = services(sentinel.url)
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.05))
    stop = threading.Event()
    statuses = []

    def reader(n: int) -> None:  # a send going on through the failover: every process trips on it
        while not stop.is_set():
            n += 1
            statuses.append(processes[n % 2].get(new_user("during")).status_code)

    with ThreadPoolExecutor(4) as pool:
        for n in range(4):
            pool.submit(reader, n)
        time.sleep(0.5)
        sentinel.master.kill()
        sentinel.wait_failover()
        failed_over = time.monotonic()
        time.sleep(0.5)
        stop.set()
    assert statuses and all(s == 200 for s in statuses)
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.5))
    time.sleep(max(0.0, failed_over + 2.0 - time.monotonic()))
    user = new_user("after")
    assert burst_on_both(processes, user, per_process=10) == [200] * 20
    assert calls_for(sessionm, user) == 1, \
        "2 s after the failover, one SessionM call for 20 reads through both instances:\n" + \
        "\n".join(p.log() for p in processes)
