"""#22 item 3 through a real gunicorn worker: thousands of distinct `culture=` values on one signed user
id cost a bounded number of SessionM calls (with WALLET_PROXY_CULTURES) and bounded worker memory
(WALLET_PROXY_CACHE_MB, a few cultures per user)."""
from __future__ import annotations

import itertools
import string
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from tests.conftest import OFFERS_PATH
from tests.test_gunicorn import AUTH, gunicorn_for  # noqa: F401 (the fixture)

CULTURES = 2000


def cultures(count: int):
    """`count` distinct well-formed language tags, each spelled in a different case/separator."""
    letters = string.ascii_lowercase
    for n, (a, b, c, d) in enumerate(itertools.islice(itertools.product(letters, repeat=4), count)):
        spelling = f"{a}{b}-{c}{d}" if n % 3 == 0 else f"{a.upper()}{b}_{c}{d.upper()}" if n % 3 == 1 \
            else f"{a}{b}-{c.upper()}{d.upper()}"
        yield spelling


def worker_rss(server) -> int:
    """Resident bytes of the gunicorn worker (the master's one child)."""
    (pid,) = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def drained(server):
    """Read the worker's log as it comes: thousands of access lines would fill the pipe and stall it."""
    threading.Thread(target=lambda: server.proc.stdout.read(), daemon=True).start()
    return server


def read_all(server, values) -> list[int]:
    statuses = []
    with requests.Session() as session:
        session.auth = AUTH
        for culture in values:
            statuses.append(session.get(f"{server.url}/v1/wallets/user-1", params={"culture": culture},
                                        timeout=10).status_code)
    return statuses


def test_an_allow_list_answers_every_other_culture_as_the_default(sessionm, gunicorn_for):  # noqa: F811
    server = drained(gunicorn_for(WALLET_PROXY_CULTURES="fr,de-DE"))
    statuses = read_all(server, [*cultures(CULTURES), "FR", "fr", "de_de", "DE-de"])
    assert set(statuses) == {200}
    sent = sorted({call.json["culture"] for call in sessionm.calls(OFFERS_PATH)})
    assert sent == ["de-DE", "en-US", "fr"]
    assert len(sessionm.calls(OFFERS_PATH)) == 3, "one SessionM call per allowed culture, not per spelling"
    body = requests.get(f"{server.url}/v1/wallets/user-1?culture=pt-BR", auth=AUTH, timeout=10).json()
    assert body["culture"] == "en-US"


def test_distinct_cultures_cannot_grow_the_worker_past_its_cache_budget(sessionm, gunicorn_for):  # noqa: F811
    server = drained(gunicorn_for(WALLET_PROXY_CACHE_MB="2"))
    read_all(server, cultures(200))  # the worker's own start-up allocations, before measuring
    before = worker_rss(server)
    statuses = read_all(server, itertools.islice(cultures(200 + CULTURES), 200, None))
    grown = worker_rss(server) - before
    assert set(statuses) == {200}
    assert len(sessionm.calls(OFFERS_PATH)) == 200 + CULTURES  # each a culture of its own: no allow-list
    # Unbounded (a count of 100,000 wallets, every culture kept), 2,000 wallets grew it by ~15 MB.
    assert grown < 8 * 2**20, f"the worker grew by {grown / 2**20:.1f} MiB"
