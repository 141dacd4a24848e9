"""Where a cache hit's CPU goes, measured in the worker, and what issue #24's target 3 leaves for it.

Run: `.venv/bin/python bench/hit_budget.py` (about 3 minutes); prints a table and writes its section of
bench/RESULTS.md (between the `hit-budget` markers).

Five servers on the same gunicorn line (`gunicorn -c gunicorn.conf.py ...`, one gevent worker), each
answering wrk's cache hits (bench/lua/hits.lua, 100 prewarmed users, 50 connections), visited in turn
ROUNDS times, the order rotated one place a round (run.in_turn: each server in every place):
- `raw`: bench/raw.py answering the bytes of a real hit (target 3's ceiling);
- `full`, `no access line`, `bare` (no access line, no metrics) and `constant` (the service process
  answering one stored answer without running our code): bench/hit_variants.py, built from the
  product's parts.
Each figure is the worker's own CPU time (user + system, /proc) divided by its answers. The differences
between neighbours are what each part of a hit costs in the worker; target 3 (hits >= 0.75 x raw) gives
a hit raw / 0.75 of CPU.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cpu_per_miss import write_section  # noqa: E402
from run import BENCH, SETTINGS, Server, configure, machine, stand_in, summed, sweep_cpu, warm_hits  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_HIT_ROUNDS", "5"))  # a multiple of the 5 servers: every place
SECONDS = int(os.environ.get("BENCH_HIT_SECONDS", "4"))
CONNECTIONS = 50
TARGET = 0.75
MARK_BEGIN, MARK_END = "<!-- section:hit-budget -->", "<!-- /section:hit-budget -->"
VARIANTS = {"full": "hit_variants:full", "no access line": "hit_variants:no_access_line",
            "bare": "hit_variants:bare", "constant": "hit_variants:constant"}
ENV = {**SETTINGS, "PYTHONPATH": str(BENCH)}


def run() -> dict:
    upstream = stand_in()
    servers: dict = {}
    body_path = tempfile.mktemp(prefix="wp-bench-body-")
    try:
        configure(upstream, 0.0)
        for name, target in VARIANTS.items():
            servers[name] = Server(["-c", "gunicorn.conf.py", target],
                                   {**ENV, "SESSIONM_CONNECT_URL": upstream.url}, probe="/healthz")
            warmed = warm_hits(servers[name].url)
            if name == "full":
                hit = warmed
        assert "hit" in hit.headers["Cache-Status"], hit.headers
        Path(body_path).write_bytes(hit.content)
        servers = {"raw": Server(["-c", "gunicorn.conf.py", "bench.raw:app"],
                                 {"BENCH_RAW_BODY": body_path, "WALLET_PROXY_SANDBOX": "1"}), **servers}
        sums = {name: summed(runs) for name, runs in
                sweep_cpu(servers, ROUNDS, "hits.lua", CONNECTIONS, SECONDS, env={"BENCH_WARM": "100"}).items()}
    finally:
        for server in servers.values():
            server.close()
        upstream.close()
        if os.path.exists(body_path):
            os.unlink(body_path)
    for name, sums_of in sums.items():
        if sums_of["non2xx"]:
            raise RuntimeError(f"{name}: {sums_of['non2xx']} answers were not 2xx")
    return {name: {"cpu_us": s["cpu_us"], "rps": s["rps"]} for name, s in sums.items()}


def section(result: dict, seconds: float, load: tuple) -> str:
    raw = result["raw"]["cpu_us"]
    budget = raw / TARGET
    names = list(result)
    rows = []
    for i, name in enumerate(names):
        cpu = result[name]["cpu_us"]
        below = names[i + 1] if 0 < i < len(names) - 1 else None
        part = ("the ceiling" if name == "raw" else
                f"{cpu - result[below]['cpu_us']:+,.0f} µs over `{below}`" if below else
                f"{cpu - raw:+,.0f} µs over `raw`")
        rows.append(f"| {name} | {result[name]['rps']:,.0f} | {cpu:,.0f} | {raw / cpu:.2f} | {part} |")
    full = result["full"]["cpu_us"]
    m = machine()
    met = raw / full >= TARGET
    return "\n".join([
        "## Where a cache hit's CPU goes (`bench/hit_budget.py`)",
        "",
        f"Cache hits (wrk -c{CONNECTIONS}, 100 prewarmed users) on five servers on the same gunicorn line, "
        f"visited in turn {ROUNDS} times ({SECONDS} s each, the order rotated one place a round); the worker's CPU per answer. "
        "`full` is the service as wsgi.py builds it; `no access line` the same with the access logger above "
        "INFO; `bare` without the access line and without metrics; `constant` the service process "
        "answering one stored answer without running our code; `raw` bench/raw.py with the same bytes. "
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {m['nproc']} CPUs ({m['cpu']}), "
        f"load average {load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end, {seconds:.0f} s.",
        "",
        "| server | req/s | CPU µs / answer | raw ÷ it | what the step costs |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
        f"Target 3 (hits ≥ {TARGET} × raw) leaves a hit **{budget:,.0f} µs** of worker CPU; the full hit takes "
        f"**{full:,.0f} µs** ({'met' if met else 'missed'}: {raw / full:.2f}). Without the access line and "
        f"metrics a hit would read {raw / result['bare']['cpu_us']:.2f}, and the service process answering "
        f"a stored answer {raw / result['constant']['cpu_us']:.2f}.",
    ])


def main() -> int:
    load = os.getloadavg()
    started = time.monotonic()
    result = run()
    text = section(result, time.monotonic() - started, load)
    write_section(text, MARK_BEGIN, MARK_END)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
