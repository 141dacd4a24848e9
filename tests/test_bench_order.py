"""bench/run.py's in_turn: the order servers are measured in gives none of them a better place.

On this machine the place is worth several % of CPU per answer (bench/RESULTS.md, "The order servers
are measured in"), so a comparison of servers is only fair when each takes every place equally often.
"""
from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import ROOT

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
