"""`wallet-proxy attributes sync`: every user of a CSV into Braze profiles, 75 per /users/track call,
only what changed, nothing lost across kill -9 + --resume; against a fake SessionM and a Braze stand-in
(or the sandbox's /users/track simulator) on loopback."""
from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from tests.conftest import OFFERS_PATH, fixture_json
from tests.fakes import FakeUpstream, LiveServer, Reply
from wallet_proxy import cli
from wallet_proxy.sandbox import SimState, make_sandbox_app
from wallet_proxy.sandbox.track import track_state
from wallet_proxy.sync.job import STATE_NAME

pytestmark = pytest.mark.usefixtures("quiet_fakes")


class Loyalty:
    """A fake SessionM Connect whose wallets are scripted per user (points), counting calls."""

    def __init__(self):
        self.points: dict = {}
        self.calls: Counter = Counter()
        self.server = FakeUpstream()
        self.server.on("POST", OFFERS_PATH, self.answer)
        self.url = self.server.url

    def answer(self, recorded):
        user_id = recorded.json["user_id"]
        self.calls[user_id] += 1
        body = fixture_json("get_user_offers.ok.json")
        body["payload"]["available_points"] = self.points.get(user_id, 100)
        return Reply(200, body)

    def close(self):
        self.server.close()


class Track:
    """A Braze /users/track stand-in counting each profile's writes; `hostile(objects)` may answer instead."""

    def __init__(self, delay: float = 0.0):
        self.writes: Counter = Counter()
        self.sizes: list = []
        self.values: dict = {}
        self.delay = delay
        self.hostile = None
        self.lock = threading.Lock()
        self.server = FakeUpstream()
        self.server.on("POST", "/users/track$", self.answer)
        self.url = self.server.url

    def answer(self, recorded):
        items = recorded.json["attributes"]
        if self.hostile:
            reply = self.hostile(items)
            if reply is not None:
                return reply
        if self.delay:
            time.sleep(self.delay)
        bad = {i for i, o in enumerate(items) if o["external_id"].startswith("refused")}
        with self.lock:
            self.sizes.append(len(items))
            for i, item in enumerate(items):
                if i not in bad:
                    self.writes[item["external_id"]] += 1
                    self.values.setdefault(item["external_id"], {}).update(item)
        errors = [{"type": "invalid", "input_array": "attributes", "index": i} for i in sorted(bad)]
        return Reply(201, {"message": "success", "attributes_processed": len(items) - len(bad),
                           **({"errors": errors} if errors else {})})

    def close(self):
        self.server.close()


@pytest.fixture
def loyalty():
    fake = Loyalty()
    yield fake
    fake.close()


@pytest.fixture
def track():
    fake = Track()
    yield fake
    fake.close()


def env_for(loyalty_url: str, braze_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    env.update(SESSIONM_CONNECT_URL=loyalty_url, SESSIONM_CONNECT_AUTH="Y29ubmVjdDpzZWNyZXQ=",
               SESSIONM_RETAILER_ID="retailer-1", BRAZE_REST_URL=braze_url, BRAZE_API_KEY="braze-key",
               WALLET_PROXY_CACHE_TTL="0", PYTHONUNBUFFERED="1", **extra)
    return env


def segment(tmp_path, users, name="seg.csv") -> str:
    path = tmp_path / name
    path.write_text("external_id,user_id\n" + "".join(f"e-{u},{u}\n" for u in users))
    return str(path)


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """Run the CLI in this process with the fakes' settings; returns (exit status, stdout)."""
    monkeypatch.chdir(tmp_path)

    def go(loyalty, braze_url, *args, **extra):
        for name in [n for n in os.environ if n.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))]:
            monkeypatch.delenv(name)
        for name, value in env_for(loyalty.url, braze_url, **extra).items():
            monkeypatch.setenv(name, value)
        code = cli.main(["attributes", "sync", *args, "--rate", "10000", "--backoff", "0.01"])
        return code, capsys.readouterr().out

    return go


class TestSync:
    def test_every_profile_once_in_calls_of_75_and_a_second_run_sends_only_changes(self, tmp_path, loyalty, run):
        sim = SimState()
        server = LiveServer(make_sandbox_app(sim))
        try:
            users = [f"u{i}" for i in range(200)]
            path = segment(tmp_path, users)
            code, out = run(loyalty, server.url, path)
            assert code == 0, out
            state = track_state(sim)
            assert set(state.profiles) == set(users) and state.data_points == 200 * 5
            assert state.calls == math.ceil(200 / 75), "75 profiles per /users/track call"
            assert os.path.exists(tmp_path / STATE_NAME)

            for user in users[:10]:
                loyalty.points[user] = 500
            code, out = run(loyalty, server.url, path)
            assert code == 0, out
            assert state.calls == math.ceil(200 / 75) + 1, "one call for the 10 changed profiles"
            assert state.data_points == 200 * 5 + 10 * 2, "points and synced_at only"
            assert state.profiles["u3"]["sessionm_available_points"] == 500

            code, out = run(loyalty, server.url, path)
            assert state.calls == math.ceil(200 / 75) + 1 and "200 synced" in out, "nothing changed: no call"
        finally:
            server.close()

    def test_partial_failures_land_exactly_in_the_rejects_and_are_retried_next_run(self, tmp_path, loyalty,
                                                                                   track, run):
        users = [f"u{i}" for i in range(40)] + ["refused-1", "refused-2"]
        path = segment(tmp_path, users)
        code, out = run(loyalty, track.url, path, "--user-column", "user_id")
        assert code == 1, "rejected rows make the exit status 1"
        rows = list(csv.reader(open(tmp_path / "seg.rejects.csv")))
        assert sorted(r[1] for r in rows[1:]) == ["refused-1", "refused-2"], (rows, out)
        assert all("braze_rejected" in r[4] for r in rows[1:])
        assert "40 synced" in out and "2 rejected" in out
        sent = sum(track.sizes)
        code, out = run(loyalty, track.url, path)
        assert sum(track.sizes) - sent == 2, "only the refused profiles are tried again"

    def test_a_400_for_one_object_rejects_only_that_row(self, tmp_path, loyalty, track, run):
        def strict(items):
            if any(o["external_id"] == "u7" for o in items):
                return Reply(400, {"message": "Invalid attribute value"})
            return None

        track.hostile = strict
        path = segment(tmp_path, [f"u{i}" for i in range(30)])
        code, out = run(loyalty, track.url, path)
        rows = list(csv.reader(open(tmp_path / "seg.rejects.csv")))
        assert [r[1] for r in rows[1:]] == ["u7"] and code == 1
        assert set(track.writes) == {f"u{i}" for i in range(30)} - {"u7"}
        assert set(track.writes.values()) == {1}

    def test_429s_with_rate_limit_headers_are_waited_out_and_nothing_is_lost(self, tmp_path, loyalty, track,
                                                                           run):
        window_end = []
        early = []

        def throttle(items):
            now = time.time()
            if not window_end:
                window_end.append(math.ceil(now) + 1)
            if now < window_end[0]:
                early.append(now)
                return Reply(429, {"message": "rate limited"}, {
                    "X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(window_end[0])})
            return None

        track.hostile = throttle
        users = [f"u{i}" for i in range(100)]
        code, out = run(loyalty, track.url, segment(tmp_path, users))
        assert code == 0, out
        # Two calls (75 + 25) may be in flight when the window closes; after a 429 every caller waits for
        # Braze's reset (a plain backoff of 0.01 s would call again several times before it).
        assert 1 <= len(early) <= 2, early
        assert set(track.writes) == set(users) and set(track.writes.values()) == {1}

    def test_external_ids_and_usage_errors(self, tmp_path, loyalty, track, run):
        path = segment(tmp_path, ["u1"])
        code, out = run(loyalty, track.url, path, "--id-type", "external")
        assert code == 2, "external ids need the Core settings"
        (tmp_path / "nocol.csv").write_text("email\nx\n")
        assert run(loyalty, track.url, str(tmp_path / "nocol.csv"))[0] == 2


def test_killed_mid_way_then_resumed_syncs_every_profile_with_only_in_flight_ones_twice(tmp_path, loyalty):
    track = Track(delay=0.05)
    try:
        users = [f"u{i}" for i in range(600)]
        path = segment(tmp_path, users)
        command = [sys.executable, "-m", "wallet_proxy.cli", "attributes", "sync", path, "--rate", "2000",
                   "--backoff", "0.01", "--user-column", "user_id"]
        proc = subprocess.Popen(command, cwd=tmp_path, env=env_for(loyalty.url, track.url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        # past 300 writes the first calls' answers are back and their rows journalled (Braze's 50 ms)
        while sum(track.writes.values()) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        first = sum(track.writes.values())
        assert 300 <= first < 600, "killed mid-way"
        assert os.path.exists(path + ".journal")
        track.delay = 0.0
        result = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env_for(loyalty.url, track.url),
                                capture_output=True, text=True, timeout=120)
    finally:
        track.close()
    assert result.returncode == 0, result.stderr
    assert set(track.writes) == set(users), "no profile lost"
    twice = [u for u, n in track.writes.items() if n > 1]
    assert max(track.writes.values()) <= 2
    # 150 workers: at most two calls of 75 can be in flight when the process dies
    assert len(twice) <= 150, f"only profiles in flight at the kill may be written again: {len(twice)}"
    assert re.search(r"\d+ done by the interrupted run", result.stdout)
    assert max(track.sizes) <= 75


def test_rejects_written_by_many_workers_at_once_are_all_kept(tmp_path):
    """A refused batch rejects its rows in several workers at the same instant: none may be lost."""
    from wallet_proxy.bulk.rows import Rejects

    for attempt in range(5):
        path = tmp_path / f"r{attempt}.csv"
        rejects = Rejects(str(path), append=False)
        start = threading.Barrier(16)

        def write(n):
            start.wait()
            for i in range(20):
                rejects.write(n * 100 + i, f"u{n}-{i}", (), None, "braze_rejected: x")

        threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rejects.close()
        assert len(list(csv.reader(open(path)))) == 1 + 16 * 20
