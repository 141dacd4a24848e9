"""Sandbox mode: built-in simulators answer when nothing is configured."""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import requests

from tests.conftest import free_port
from wallet_proxy.sandbox import SimState, make_sandbox_app
from wallet_proxy.sandbox.connect import make_wallet
from wallet_proxy.settings import parse

DEMO = {"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()}


@pytest.fixture
def sandbox(app_for):
    return app_for(parse({})).test_client()


def test_index_says_sandbox(sandbox):
    body = sandbox.get("/").get_json()
    assert body["mode"] == "sandbox" and "demo:demo" in body["sandbox"]


def test_wallets_are_deterministic_and_realistic(sandbox):
    first = sandbox.get("/v1/wallets/anyone", headers=DEMO).get_json()
    sandbox.delete("/v1/wallets/anyone", headers=DEMO)
    again = sandbox.get("/v1/wallets/anyone", headers=DEMO).get_json()
    assert first["offers"] == again["offers"] and first["offer_count"] >= 1
    for offer in first["offers"]:
        assert offer["title"] and offer["logo_url"].startswith("https://") and offer["expires_in_days"] >= 0
        assert offer["group_name"] and offer["category_names"]


def test_simulator_includes_expired_offers_that_are_dropped():
    now = datetime(2026, 11, 28, 10, tzinfo=timezone.utc)
    raw = make_wallet("anyone", "en-US", now)
    expired = [o for o in raw["user_offers"] if o["expiration_date"] < "2026-11-28T10:00:00Z"]
    assert expired, "the simulator must include expired offers"


def test_french_culture(sandbox):
    body = sandbox.get("/v1/wallets/anyone?culture=fr", headers=DEMO).get_json()
    english = sandbox.get("/v1/wallets/anyone", headers=DEMO).get_json()
    assert [o["title"] for o in body["offers"]] != [o["title"] for o in english["offers"]]


@pytest.mark.parametrize("user_id, status, code", [
    ("unknown-1", 404, "user_not_found"), ("fault-500-a", 503, "upstream_unavailable"),
    ("fault-429-a", 503, "upstream_unavailable"), ("fault-garbage-a", 502, "upstream_error"),
    ("fault-auth-a", 502, "upstream_error"),
])
def test_faults_by_user_id(sandbox, user_id, status, code):
    response = sandbox.get(f"/v1/wallets/{user_id}", headers=DEMO)
    assert response.status_code == status and response.get_json()["error"]["code"] == code


def test_timeout_fault_answers_504_within_the_deadline(app_for):
    client = app_for(parse({"WALLET_PROXY_DEADLINE": "0.5"})).test_client()
    started = time.monotonic()
    response = client.get("/v1/wallets/fault-timeout-1", headers=DEMO)
    assert response.status_code == 504 and time.monotonic() - started < 1.0


def test_global_fault_and_latency_switches(app_for):
    client = app_for(parse({"WALLET_PROXY_SANDBOX_FAULT": "fault-500"})).test_client()
    assert client.get("/v1/wallets/anyone", headers=DEMO).status_code == 503
    slow = app_for(parse({"WALLET_PROXY_SANDBOX_LATENCY": "0.3"})).test_client()
    started = time.monotonic()
    assert slow.get("/v1/wallets/anyone", headers=DEMO).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_simulator_serves_real_http(live):
    state = SimState()
    url = live(make_sandbox_app(state))
    reply = requests.post(url + "/offers/api/2.0/offers/get_user_offers", timeout=5,
                          json={"retailer_id": "r", "user_id": "u1", "culture": "en-US"},
                          headers={"Authorization": "Basic eDp5"})
    assert reply.json()["status"] == "OK" and reply.json()["payload"]["user_id"] == "u1"
    assert state.calls["get_user_offers"] == 1


def test_make_run_command_serves_the_sandbox(tmp_path):
    """What `make run` runs: `wallet-proxy serve` on a fresh environment answers demo:demo."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    proc = subprocess.Popen([sys.executable, "-m", "wallet_proxy.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/v1/wallets/anyone", auth=("demo", "demo"), timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "wallet-proxy serve did not start"
                time.sleep(0.1)
        assert reply.status_code == 200 and reply.json()["ok"] is True
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "SANDBOX MODE" in output and "demo" in output


def test_start_up_says_sandbox_and_demo_login_in_the_log(capsys):
    """What the Procfile's gunicorn path logs too, not only `wallet-proxy serve`."""
    from wallet_proxy import create_app

    capsys.readouterr()
    create_app(parse({}))
    err = capsys.readouterr().err
    assert "SANDBOX MODE" in err and "demo:demo" in err


def test_start_up_says_when_no_client_can_call(capsys):
    from wallet_proxy import create_app

    capsys.readouterr()
    create_app(parse({"SESSIONM_CONNECT_URL": "https://c.example", "SESSIONM_CONNECT_AUTH": "x",
                      "SESSIONM_RETAILER_ID": "r"}))
    err = capsys.readouterr().err
    assert "WALLET_PROXY_CLIENTS is empty" in err
    assert "connect (wallet) on" in err and "core (tags) off" in err


def serve_output(env_extra: dict, port: int, tmp_path, wait_for_answer: bool) -> tuple[int | None, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    env.update(env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "wallet_proxy.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 20
        while wait_for_answer and time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        if wait_for_answer:
            proc.terminate()
        return proc.wait(20), proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_prints_demo_demo_only_when_it_is_accepted(tmp_path):
    """#11 item 12: with clients set the sandbox no longer accepts demo:demo: the banner must not offer it."""
    clients = {"WALLET_PROXY_CLIENTS": "alice:alice-secret-0123456"}
    _, output = serve_output(clients, free_port(), tmp_path, True)
    assert "wallet-proxy (sandbox) on http://127.0.0.1:" in output
    assert "demo:demo" not in output


def test_serve_says_the_port_is_taken_and_prints_no_banner(tmp_path):
    """#11 item 12: the banner printed before the port was known to be free."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, output = serve_output({}, taken.getsockname()[1], tmp_path, False)
    assert code == 2
    assert "cannot listen on 127.0.0.1" in output and "--port" in output
    assert "try: curl" not in output and "wallet-proxy (sandbox) on" not in output
