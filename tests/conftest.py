"""Shared fixtures: fake upstreams on loopback, settings, the app, and real services (Redis...)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fakes import FakeBraze, FakeClock, FakeUpstream, LiveServer, Reply
from wallet_proxy import create_app
from wallet_proxy.settings import parse

ROOT = Path(__file__).resolve().parent.parent
# The project's own copies: the suite must not depend on anything outside the repository.
FIXTURES = ROOT / "tests" / "fixtures"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=timezone.utc).timestamp()
OFFERS_PATH = "/offers/api/2.0/offers/get_user_offers"
# `make mutate` runs the tests under mutmut's tracing, many times over: fewer, repeatable examples and
# no speed health checks there; the normal suite keeps hypothesis's defaults.
settings.register_profile("mutate", max_examples=25, derandomize=True, deadline=None,
                          suppress_health_check=list(HealthCheck))
# Every run: no timing checks. The suite shares 2 CPUs with real servers and browsers, so a slow
# example or a slow draw says the machine was busy, not that the code is wrong (speed is bench/'s job).
settings.register_profile("default-untimed", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "default-untimed")
CLIENTS = "test:secret,braze:bz-secret:wallet,tagger:tg-secret:tags,ops:ops-secret:admin"


def fixture_json(name: str) -> dict:
    """A sample SessionM answer from tests/fixtures."""
    return json.loads((FIXTURES / name).read_text())


def need(tool: str, found: bool, why: str = "") -> None:
    """Fail under CI=true, skip otherwise, when a real service a test needs is missing."""
    if found:
        return
    message = f"{tool} is required for this test{': ' + why if why else ''}"
    if CI:
        pytest.fail(message + " (CI=true: install it in .ci/run)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def sessionm():
    """A fake SessionM Connect/Core on loopback answering the `ok` fixture by default."""
    fake = FakeUpstream()
    fake.on("POST", OFFERS_PATH, Reply(200, fixture_json("get_user_offers.ok.json")))
    yield fake
    fake.close()


@pytest.fixture
def braze():
    """A fake Braze REST API on loopback (Braze's rate-limit headers on every answer); tests script it."""
    fake = FakeBraze()
    yield fake
    fake.close()


@pytest.fixture
def quiet_fakes():
    """Silence the fakes' per-request access lines (over 10,000 rows they cost more than the work)."""
    logger = logging.getLogger("werkzeug")
    logger.disabled = True
    yield
    logger.disabled = False


def make_settings(connect_url=None, core_url=None, braze_url=None, **env):
    """Settings as the environment would give them; upstream groups only for the URLs given."""
    values = {"WALLET_PROXY_CLIENTS": CLIENTS}
    if connect_url:
        values.update(SESSIONM_CONNECT_URL=connect_url, SESSIONM_CONNECT_AUTH="Y29ubmVjdDpzZWNyZXQ=",
                      SESSIONM_RETAILER_ID="retailer-1")
    if core_url:
        values.update(SESSIONM_CORE_URL=core_url, SESSIONM_CORE_API_KEY="core-key",
                      SESSIONM_CORE_API_SECRET="core-secret")
    if braze_url:
        values.update(BRAZE_REST_URL=braze_url, BRAZE_API_KEY="braze-rest-key")
    values.update({k: str(v) for k, v in env.items()})
    return parse(values)


@pytest.fixture
def app_for(clock):
    """Build an app for a settings object, with the test clock injected."""

    def build(settings, **kwargs):
        kwargs.setdefault("clock", clock)
        return create_app(settings, **kwargs)

    return build


@pytest.fixture
def app(sessionm, app_for):
    return app_for(make_settings(sessionm.url, core_url=sessionm.url))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def live():
    """Serve apps on loopback for tests that must talk real HTTP to the service."""
    servers = []

    def serve(app):
        server = LiveServer(app)
        servers.append(server)
        return server.url

    yield serve
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on a free loopback port, for the whole session."""
    binary = shutil.which("redis-server")
    need("redis-server", binary is not None, "apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)
