"""bench/run.py's in_turn and sweep_cpu: the order servers are measured in gives none of them a better place.

On this machine the place is worth several % of CPU per answer (bench/RESULTS.md, "Issue #24, second
pass"), so a comparison of servers is only fair when each takes every place equally often.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest

from tests.conftest import ROOT, need

sys.path.insert(0, str(ROOT / "bench"))
spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
bench_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_run)


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_each_server_takes_every_place_once_and_never_runs_twice_in_a_row(count):
    servers = [f"s{n}" for n in range(count)]
    sweeps = [bench_run.in_turn(servers, sweep) for sweep in range(count)]
    assert all(sorted(order) == servers for order in sweeps)  # every server in every sweep
    for place in range(count):
        assert sorted(order[place] for order in sweeps) == servers  # every server in every place
    visits = [server for order in sweeps * 2 for server in order]
    twice = sum(a == b for a, b in zip(visits, visits[1:]))  # measured right after itself
    # two servers cannot both swap places and never repeat: once per sweep, the same for both
    assert twice == (0 if count > 2 else 2 * count - 1)


def test_sweep_cpu_measures_every_server_every_round_and_sums_ratios_of_sums(tmp_path):
    """Two real servers on the Procfile's gunicorn line (bench/raw.py), real wrk: sweep_cpu gives each
    one run a round with the CPU its worker spent, and summed() divides sums (not a mean of ratios)."""
    need("wrk", shutil.which("wrk") is not None, "bench/run.py measures with wrk")
    body = tmp_path / "body.json"
    body.write_bytes(b'{"ok": true}')
    env = {"BENCH_RAW_BODY": str(body), "WALLET_PROXY_SANDBOX": "1"}
    servers = {}
    try:
        servers = {name: bench_run.Server(["-c", "gunicorn.conf.py", "bench.raw:app"], env) for name in ("a", "b")}
        scripts = []
        runs = bench_run.sweep_cpu(servers, 2, lambda name, r: scripts.append((name, r)) or "hello.lua", 4, 1,
                                   env=lambda name, r: {"BENCH_WARM": "1"})
    finally:
        for server in servers.values():
            server.close()
    assert scripts == [("a", 0), ("b", 0), ("b", 1), ("a", 1)]  # rotated: b goes first in round 2
    for name in ("a", "b"):
        assert len(runs[name]) == 2
        for result, cpu in runs[name]:
            assert result["requests"] > 0 and result["non2xx"] == 0
            assert cpu > 0  # the worker's own CPU, read from /proc
        total = bench_run.summed(runs[name])
        answers = sum(result["requests"] for result, _ in runs[name])
        seconds = sum(result["duration_us"] for result, _ in runs[name]) / 1e6
        assert total["answers"] == answers
        assert total["rps"] == pytest.approx(answers / seconds)
        assert total["cpu_us"] == pytest.approx(sum(cpu for _, cpu in runs[name]) / answers * 1e6)
