"""Issue #12's check: the layout step kept the service as fast. Cache hits and distinct-user misses of
the tree before the step and of this tree, served side by side and visited in turn by wrk in one run.

    .venv/bin/python bench/layout.py BEFORE_TREE      # e.g. a worktree of the commit before the step

BENCH_AB_ROUNDS (3) rounds of BENCH_AB_SECONDS (4) per tree and scenario, the order alternated.
Also issue #20's check (hits and misses no slower than before the step: BEFORE_TREE = a2d9903).

Prints a Markdown table (req/s and server CPU per answer, summed over the rounds, and after/before).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from run import SETTINGS, Server, configure, stand_in, summed, sweep_cpu, warm_hits

ROUNDS = int(os.environ.get("BENCH_AB_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_AB_SECONDS", "4"))


def serve(tree: Path, upstream_url: str) -> Server:
    """The Procfile's gunicorn line, run from `tree` (its own wallet_proxy package)."""
    env = {**SETTINGS, "SESSIONM_CONNECT_URL": upstream_url, "PYTHONPATH": str(tree)}
    return Server(["-c", "gunicorn.conf.py", "wsgi:app"], env, probe="/healthz", cwd=tree)


def main() -> int:
    trees = {"before": Path(sys.argv[1]).resolve(), "after": Path(__file__).resolve().parent.parent}
    upstream = stand_in()
    servers = {}
    sums = {}
    try:
        servers = {name: serve(tree, upstream.url) for name, tree in trees.items()}
        for kind, latency, connections in (("hits", 0.0, 50), ("misses", 0.0, 64)):
            configure(upstream, latency)
            for server in servers.values():
                warm_hits(server.url)
            measured = sweep_cpu(servers, ROUNDS, f"{kind}.lua", connections, SECONDS,  # neither always first
                                 env=lambda name, r: {"BENCH_WARM": "100", "BENCH_PREFIX": f"{name}-{r}"})
            sums.update({(name, kind): summed(runs) for name, runs in measured.items()})  # misses: new users
    finally:
        for server in servers.values():
            server.close()
        upstream.close()
    print("| scenario | before: req/s | after: req/s | after / before | before: CPU µs/answer | "
          "after: CPU µs/answer | after / before |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in ("hits", "misses"):
        b, a = sums[("before", kind)], sums[("after", kind)]
        rps_b, rps_a = b["rps"], a["rps"]
        cpu_b, cpu_a = b["cpu_us"], a["cpu_us"]
        print(f"| {kind} | {rps_b:,.0f} | {rps_a:,.0f} | **{rps_a / rps_b:.2f}** | {cpu_b:,.0f} | {cpu_a:,.0f} | "
              f"**{cpu_a / cpu_b:.2f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
