"""The Procfile's web line for real: gunicorn + gevent serves, coalesces, and shuts down gracefully."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import CLIENTS, OFFERS_PATH, ROOT, fixture_json, free_port
from tests.fakes import Reply

AUTH = ("braze", "bz-secret")
OK = fixture_json("get_user_offers.ok.json")


def procfile_web() -> list[str]:
    """The `web:` command of the Procfile, run with this venv's gunicorn."""
    line = next(l for l in (ROOT / "Procfile").read_text().splitlines() if l.startswith("web:"))
    argv = line.split(":", 1)[1].split()
    assert argv[0] == "gunicorn"
    return [str(Path(sys.executable).with_name("gunicorn"))] + argv[1:]


class Gunicorn:
    """The Procfile's web process on a free port, pointed at a fake SessionM through the environment."""

    def __init__(self, connect_url: str, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_",
                                                                             "WALLET_PROXY_"))}
        environ.update(PORT=str(self.port), SESSIONM_CONNECT_URL=connect_url,
                       SESSIONM_CONNECT_AUTH="Y29ubmVjdDpzZWNyZXQ=", SESSIONM_RETAILER_ID="retailer-1",
                       WALLET_PROXY_CLIENTS=CLIENTS, **env)
        self.proc = subprocess.Popen(procfile_web(), cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self.proc.stdout.read())
            try:
                if requests.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not start in 20 s")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.stdout.read()


@pytest.fixture
def gunicorn_for(sessionm):
    started = []

    def start(**env):
        server = Gunicorn(sessionm.url, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def get(base, user):
    # Connection: close, or an idle keep-alive connection holds SIGTERM for the graceful timeout.
    return requests.get(f"{base}/v1/wallets/{user}", auth=AUTH, headers={"Connection": "close"},
                        timeout=10)


def test_serves_wallets_with_gevent_workers(sessionm, gunicorn_for):
    server = gunicorn_for()
    answer = get(server.url, "user-1")
    assert answer.status_code == 200 and answer.json()["ok"] is True
    assert answer.json()["available_points"] == OK["payload"]["available_points"]
    log = server.stop()
    assert "Using worker: wallet_proxy.web.worker.WalletProxyWorker" in log
    assert "MonkeyPatchWarning" not in log


def test_concurrent_requests_are_coalesced_into_one_sessionm_call(sessionm, gunicorn_for):
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.4))
    server = gunicorn_for()
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: get(server.url, "same-user"), range(30)))
    assert [a.status_code for a in answers] == [200] * 30
    assert len(sessionm.calls(OFFERS_PATH)) == 1


def test_a_hung_sessionm_answers_within_the_deadline_under_gevent(sessionm, gunicorn_for):
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=5))
    server = gunicorn_for(WALLET_PROXY_DEADLINE="0.5")
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda n: get(server.url, f"hung-{n}"), range(10)))
    assert time.monotonic() - started < 1.5
    assert {a.status_code for a in answers} <= {503, 504}


@pytest.mark.redis
def test_two_worker_processes_share_redis_and_make_one_sessionm_call(sessionm, gunicorn_for, redis_url):
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.4))
    server = gunicorn_for(WALLET_PROXY_REDIS_URL=redis_url, WEB_CONCURRENCY="2")
    user = f"multi-{uuid.uuid4().hex[:8]}"
    # new connection per request, so the kernel spreads them over both workers
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: get(server.url, user), range(30)))
    assert [a.status_code for a in answers] == [200] * 30
    assert len(sessionm.calls(OFFERS_PATH)) == 1
    log = server.stop()
    assert len(set(re.findall(r"Booting worker with pid: (\d+)", log))) == 2


def test_sigterm_lets_in_flight_requests_finish_then_exits(sessionm, gunicorn_for):
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.8))
    server = gunicorn_for()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(get, server.url, "slow-user")
        time.sleep(0.3)  # the request is now waiting on SessionM
        server.proc.send_signal(signal.SIGTERM)
        answer = in_flight.result()
    assert answer.status_code == 200 and answer.json()["ok"] is True
    assert server.proc.wait(10) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/healthz", timeout=1)
    assert "Shutting down" in server.stop()


def test_sigterm_during_a_triggered_send_on_braze_retries_answers_the_send(sessionm, braze, gunicorn_for):
    """#23 item 1: a rollout must never cut a send. Braze answers slowly and fails the first attempt,
    so the send outlives the old 10 s drain (SIGTERM 1 s in): the client got no answer and nobody knew
    whether Braze sent. Now the drain covers the longest request (wallet_proxy/web/drain.py)."""
    braze.on("POST", "/campaigns/trigger/send", [
        Reply(503, {"message": "Braze is busy", "errors": []}, delay=6),
        Reply(201, {"dispatch_id": "d-after-retry", "message": "success"}, delay=6)])
    server = gunicorn_for(BRAZE_REST_URL=braze.url, BRAZE_API_KEY="braze-rest-key")
    body = {"campaign_id": "camp-1", "external_user_id": "cust-1", "offer_title": "A"}
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(requests.post, server.url + "/v1/braze/trigger", json=body, auth=("test", "secret"),
                                headers={"Connection": "close", "Idempotency-Key": uuid.uuid4().hex}, timeout=60)
        time.sleep(1)  # the first Braze attempt is under way
        server.proc.send_signal(signal.SIGTERM)
        answer = in_flight.result()
    assert answer.status_code == 201, answer.text
    assert answer.json()["dispatch_id"] == "d-after-retry"
    assert len(braze.calls("/campaigns/trigger/send")) == 2
    assert server.proc.wait(10) == 0


def run_procfile(env: dict, timeout: float = 20) -> tuple[int | None, str, str]:
    """Start the Procfile's web line with exactly `env` (upstream settings cleared); return
    (exit code or None while still serving, its output, the base URL)."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    environ.update(PORT=str(port), **env)
    proc = subprocess.Popen(procfile_web(), cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(url + "/healthz", timeout=0.5).status_code == 200:
                    return None, "", url
            except requests.RequestException:
                time.sleep(0.1)
        return proc.poll(), proc.stdout.read() if proc.poll() is not None else "", url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_the_production_entry_refuses_to_start_without_upstream_settings():
    """A deploy that lost its environment must fail, not serve made-up wallets (SPEC: Configuration)."""
    code, output, _ = run_procfile({})
    assert code not in (None, 0), "gunicorn started in sandbox mode with no settings"
    assert "refusing to start" in output
    for name in ("SESSIONM_CONNECT_URL", "SESSIONM_CONNECT_AUTH", "SESSIONM_RETAILER_ID",
                 "WALLET_PROXY_SANDBOX=1"):
        assert name in output
    assert "Booting worker" not in output  # refused in the master, before any worker


def test_the_production_entry_runs_the_sandbox_only_when_asked():
    code, _, _ = run_procfile({"WALLET_PROXY_SANDBOX": "1"})
    assert code is None, "WALLET_PROXY_SANDBOX=1 should start the simulators"


def test_sandbox_together_with_upstream_settings_is_refused():
    code, output, _ = run_procfile({"WALLET_PROXY_SANDBOX": "1", "BRAZE_REST_URL": "https://rest.example",
                                    "BRAZE_API_KEY": "k"})
    assert code not in (None, 0)
    assert "WALLET_PROXY_SANDBOX=1 is refused together with upstream settings" in output
    assert "BRAZE_REST_URL" in output and "BRAZE_API_KEY" in output


@pytest.mark.redis
def test_several_workers_leave_no_metrics_folder_behind(redis_url, tmp_path):
    """#11 item 12: each start with WEB_CONCURRENCY>1 left a wallet-proxy-metrics-* folder in the temp dir."""
    env = {"WALLET_PROXY_SANDBOX": "1", "WALLET_PROXY_REDIS_URL": redis_url, "WEB_CONCURRENCY": "2",
           "TMPDIR": str(tmp_path)}
    saved = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        port = free_port()
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_", "PROMETHEUS_"))}
        environ.update(PORT=str(port), **env)
        proc = subprocess.Popen(procfile_web(), cwd=ROOT, env=environ, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        made = list(tmp_path.glob("wallet-proxy-metrics-*"))
        assert len(made) == 1 and any(made[0].iterdir())  # the workers wrote their samples there
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert list(tmp_path.glob("wallet-proxy-metrics-*")) == []
    finally:
        if saved is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved
