"""Redis-mode cache hits vs memory-mode cache hits, one worker each, in one run.

With WALLET_PROXY_REDIS_URL a process keeps the fresh wallets it has seen (the near cache, kept
honest across processes by purge notices: wallet_proxy/wallet/redis_store.py), so a hit should cost
what it costs in memory mode. Both services run side by side on the Procfile's gunicorn line (one
gevent worker each) over the same SessionM stand-in and a private redis-server; wrk visits them in
turn, `rounds` times, so a load spike from another process lands on both, and the ratio is of sums.

Run alone: `.venv/bin/python bench/redis_hits.py` (replaces its section of bench/RESULTS.md);
`bench/run.py` runs it with the other scenarios.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TITLE = "## Redis mode: cache hits vs memory mode"
TARGET = 0.9


def _redis_server() -> tuple[subprocess.Popen, str, str]:
    from run import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is required: sudo apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()[2]
    return proc, f"redis://127.0.0.1:{port}/0", version


def bench_redis_hits(upstream, rounds: int = 3, seconds: int = 4, connections: int = 50,
                     users: int = 100) -> dict:
    """Hits of `users` prewarmed wallets in memory mode and in Redis mode, `rounds` times in turn, the
    order swapped each round (run.in_turn)."""
    from run import configure, service, summed, sweep_cpu, warm_hits

    configure(upstream, 0.0)
    redis_proc, redis_url, redis_version = _redis_server()
    services = {}
    try:
        services = {"memory": service(upstream.url),
                    "redis": service(upstream.url, WALLET_PROXY_REDIS_URL=redis_url)}
        for name, svc in services.items():
            hit = warm_hits(svc.url, users)
            assert "hit" in hit.headers["Cache-Status"], (name, hit.headers)
        # neither mode always goes first
        measured = sweep_cpu(services, rounds, "hits.lua", connections, seconds, env={"BENCH_WARM": str(users)})
        redis_info = subprocess.run(["redis-cli", "-u", redis_url, "info", "commandstats"],
                                    capture_output=True, text=True).stdout
    finally:
        for svc in services.values():
            svc.close()
        os.killpg(redis_proc.pid, signal.SIGTERM)
        redis_proc.wait(10)
    runs = {name: [result for result, _ in rs] for name, rs in measured.items()}
    sums = {name: summed(rs) for name, rs in measured.items()}
    answers = {name: s["answers"] for name, s in sums.items()}
    rps = {name: s["rps"] for name, s in sums.items()}
    hget = re.search(r"cmdstat_hget:calls=(\d+)", redis_info)
    return {
        "rounds": rounds, "seconds": seconds, "connections": connections, "users": users,
        "redis_version": redis_version, "rps": rps, "answers": answers,
        "non2xx": {name: sum(r["non2xx"] for r in rs) for name, rs in runs.items()},
        "p99_us": {name: max(r["p99_us"] for r in rs) for name, rs in runs.items()},
        "cpu_us_per_answer": {name: s["cpu_us"] if s["answers"] else None for name, s in sums.items()},
        "redis_hget_calls": int(hget.group(1)) if hget else 0,
        "ratio": rps["redis"] / rps["memory"],
        "command": runs["redis"][0]["command"],
    }


def section(result: dict) -> str:
    """The Markdown section of bench/RESULTS.md for one result."""
    r = result
    met = "yes" if r["ratio"] >= TARGET else "**no**"
    cpu = r["cpu_us_per_answer"]
    lines = [
        TITLE, "",
        f"One gevent worker per mode on the Procfile's gunicorn line, {r['users']} prewarmed wallets, "
        f"{r['connections']} connections, wrk visiting the two services in turn {r['rounds']} × "
        f"{r['seconds']} s (`{r['command']}`), redis-server {r['redis_version']} on loopback. "
        "Redis mode serves a hit from the process's near cache, kept honest across processes by purge "
        "notices (README \"Redis\"), so a hit costs no Redis round trip.", "",
        "| mode | req/s | worker CPU per answer | p99 | non-2xx |", "| --- | --- | --- | --- | --- |",
    ]
    for name in ("memory", "redis"):
        per = f"{cpu[name]:.0f} µs" if cpu[name] is not None else "n/a"
        lines.append(f"| {name} | {r['rps'][name]:.0f} | {per} | {r['p99_us'][name] / 1000:.1f} ms | "
                     f"{r['non2xx'][name]} |")
    lines += ["", f"Redis-mode hits / memory-mode hits = **{r['ratio']:.2f}** (target ≥ {TARGET}: {met}); "
              f"HGETs Redis served during the whole scenario, prewarm included: {r['redis_hget_calls']:,} "
              f"for {r['answers']['redis']:,} Redis-mode answers.", ""]
    return "\n".join(lines)


def splice(text: str, new_section: str) -> str:
    """`text` (RESULTS.md) with its Redis-hits section replaced by `new_section`, or it appended."""
    start = text.find(TITLE)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + new_section
    # The section ends at the next heading, or at a comment such as run.py's hand-written notes mark.
    ends = [e for e in (text.find("\n## ", start + len(TITLE)), text.find("\n<!--", start)) if e >= 0]
    end = min(ends) if ends else -1
    return text[:start] + new_section + ("\n" + text[end + 1:] if end >= 0 else "")


def main() -> int:
    from run import BENCH as RUN_BENCH, Server

    if shutil.which("wrk") is None:
        print("wrk is required: sudo apt-get install -y wrk", file=sys.stderr)
        return 2
    # gunicorn reads ./gunicorn.conf.py, which refuses to start with no upstream settings unless
    # the sandbox is asked for: the SessionM stand-in has none.
    upstream = Server(["-k", "gevent", "-w", "1", "--worker-connections", "10000", "--chdir",
                       str(RUN_BENCH), "--no-control-socket", "upstream:app"], {"WALLET_PROXY_SANDBOX": "1"},
                      probe="/_bench/calls")
    try:
        result = bench_redis_hits(upstream)
    finally:
        upstream.close()
    results = BENCH / "RESULTS.md"
    text = section(result)
    results.write_text(splice(results.read_text() if results.exists() else "# Benchmark results\n", text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
