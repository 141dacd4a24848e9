"""Game day (#25): a worker killed on one instance, then the other instance rolled, through the shipped
nginx configuration: wallet reads are answered again within seconds, not after a 10 s blackout.

A worker killed mid-request fails the requests it held, and nginx counts those against the whole
instance (max_fails): with fail_timeout=10s it skipped the instance for 10 s although its other
workers (and the respawned one) answered, and a rollout of the other instance inside those 10 s left
no live instance: every render answered 502 (bench/gameday.md). Braze renders blank after 2 s
(https://www.braze.com/docs/user_guide/personalization_and_dynamic_content/connected_content/
making_an_api_call/).
"""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
import requests

from tests.conftest import OFFERS_PATH
from tests.fakes import Reply
from tests.test_nginx import OK, front, wallet  # noqa: F401 (fixture)

pytestmark = pytest.mark.redis


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def test_a_killed_worker_then_a_rollout_leaves_an_instance_to_answer(sessionm, front):  # noqa: F811
    proxy, (first, second) = front
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=3))  # reads held in flight on both instances
    held = []
    readers = [threading.Thread(target=lambda n=n: held.append(
        wallet(proxy.url, f"held-{uuid.uuid4().hex[:8]}-{n}").status_code)) for n in range(10)]
    for reader in readers:
        reader.start()
    time.sleep(1.0)
    for worker in children(first.proc.pid):  # the first instance's worker dies with its requests
        os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    for reader in readers:
        reader.join(15)
    assert held.count(502) >= 3, f"nginx saw the killed worker's requests fail: {held}"
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK))
    second.stop()  # the rollout of the other instance begins: its port refuses connections
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the killed worker's replacement answers directly
        try:
            if requests.get(first.url + "/healthz", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.1)
    time.sleep(max(0.0, killed + 4.0 - time.monotonic()))
    reads = [wallet(proxy.url, f"after-{uuid.uuid4().hex[:8]}").status_code for _ in range(4)]
    assert reads == [200] * 4, "4 s after the worker died, its instance answers again through nginx"
