"""Worker memory per cached wallet (5, 50 and 500 offers), and the worker's resident memory with the
wallet cache full at its default budget (issue #24 target 2, issue #22 item 3).

Run: `.venv/bin/python bench/memory.py` (a few minutes); prints the figures and writes its section of
bench/RESULTS.md (between the `memory` markers). docs/capacity.md and the manifests' memory limits
are sized from them.

A real worker: the Procfile's gunicorn line (`wsgi:app`, memory mode, WALLET_PROXY_CACHE_MB at its
default unless BENCH_CACHE_MB says otherwise), the SessionM stand-in (bench/sessionm_sizes.py)
answering N-offer wallets. Per size, a fresh worker first takes FILL misses -- enough to fill the
rendered-body cache (a bounded window of recent bodies) -- then MEASURED more; the worker's resident
set grows by what the new wallets hold: bytes per cached wallet = growth / MEASURED. Then one more
worker takes 50-offer misses until its wallet cache is full (it stops growing in bytes), and its
resident set is the figure the pod's memory limit is sized from.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import cpu_per_miss  # noqa: E402
from cpu_per_miss import ENV, stand_in  # noqa: E402
from run import AUTH, Server  # noqa: E402

PLAN = {5: (16_000, 10_000), 50: (2_500, 3_000), 500: (250, 300)}  # size: (fill, measured)
DEFAULT_MB = 256  # WALLET_PROXY_CACHE_MB's default (wallet_proxy/settings.py)
WALLET_SHARE = 0.75  # of it for wallets (wallet_proxy/services.py)
MARK_BEGIN, MARK_END = "<!-- section:memory -->", "<!-- /section:memory -->"


def service(upstream: Server, cache_mb: int | None = None) -> Server:
    env = {**ENV, "SESSIONM_CONNECT_URL": upstream.url}
    if cache_mb:
        env["WALLET_PROXY_CACHE_MB"] = str(cache_mb)
    return Server(["-c", "gunicorn.conf.py", "wsgi:app"], env, probe="/healthz")


def worker_rss(server: Server) -> int:
    import subprocess

    (pid,) = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def misses(server: Server, size: int, count: int, tag: str, threads: int = 8) -> None:
    """`count` distinct users of `size` offers, over `threads` kept-alive connections."""
    def worker(part: int) -> None:
        with requests.Session() as session:
            session.auth = AUTH
            for n in range(part, count, threads):
                for _ in range(50):  # a 503 (admission control on a busy machine) is asked again
                    response = session.get(f"{server.url}/v1/wallets/n{size}-{tag}-{n}", timeout=30)
                    if response.status_code != 503:
                        break
                    time.sleep(0.2)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))


def per_wallet(upstream: Server, size: int) -> dict:
    fill, measured = PLAN[size]
    server = service(upstream)
    try:
        misses(server, size, fill, "fill")
        before = worker_rss(server)
        misses(server, size, measured, "measured")
        after = worker_rss(server)
    finally:
        server.close()
    return {"size": size, "fill": fill, "measured": measured, "bytes_per_wallet": (after - before) / measured,
            "rss_mib": after / 2**20}


def full_budget(upstream: Server, cache_mb: int, size: int = 50, step: int = 2_000) -> dict:
    """RSS of a worker whose wallet cache is full: 50-offer misses until RSS stops growing."""
    server = service(upstream, cache_mb)
    samples = []
    try:
        started = worker_rss(server)
        budget = cache_mb * 2**20 * WALLET_SHARE
        n = 0
        while True:
            misses(server, size, step, f"full{n}")
            n += 1
            samples.append(worker_rss(server))
            wallets = n * step
            # well past the budget's worth of wallets, and grown by less than 1 % over the last step
            if wallets * 5_000 > 1.3 * budget and samples[-1] - samples[-2] < 0.01 * samples[-1]:
                break
            if n > 200:
                break
    finally:
        server.close()
    return {"cache_mb": cache_mb, "size": size, "misses": n * step, "rss_start_mib": started / 2**20,
            "rss_full_mib": max(samples) / 2**20, "rss_last_mib": samples[-1] / 2**20}


def write_section(text: str) -> None:
    cpu_per_miss.write_section(text, MARK_BEGIN, MARK_END)


def run(cache_mb: int, sizes=tuple(PLAN), full: bool = True) -> dict:
    upstream = stand_in()
    try:
        sizes = [per_wallet(upstream, size) for size in sizes]
        full = full_budget(upstream, cache_mb) if full else None
    finally:
        upstream.close()
    return {"sizes": sizes, "full": full}


def section(result: dict, seconds: float, load: tuple) -> str:
    lines = ["## Worker memory per cached wallet (`bench/memory.py`)", "",
             "A real worker (the Procfile's line, memory mode); per size a fresh worker takes *fill* misses "
             "(the rendered-body cache, a bounded window, is then full) and *measured* more: bytes per "
             "cached wallet = growth of the worker's resident set / *measured*. "
             f"Run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} CPUs, load "
             f"average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, {seconds:.0f} s.", "",
             "| offers | fill | measured | bytes per cached wallet | worker RSS after |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for r in result["sizes"]:
        lines.append(f"| {r['size']} | {r['fill']:,} | {r['measured']:,} | **{r['bytes_per_wallet']:,.0f}** | "
                     f"{r['rss_mib']:.0f} MiB |")
    f = result["full"]
    five = next(r for r in result["sizes"] if r["size"] == 5)["bytes_per_wallet"]
    if f is not None:
        lines += ["", f"Cache full at WALLET_PROXY_CACHE_MB={f['cache_mb']}: {f['misses']:,} misses of "
                      f"{f['size']}-offer wallets; the worker's RSS went {f['rss_start_mib']:.0f} → "
                      f"**{f['rss_full_mib']:.0f} MiB** at most ({f['rss_last_mib']:.0f} MiB at the end)."]
    lines += ["",
              f"{'MET' if five <= 2048 else 'MISSED'}: #24 T2. worker memory per cached 5-offer wallet "
              f"{five:,.0f} B (target ≤ 2,048 B; 8.3 KB before)"]
    return "\n".join(lines) + "\n"


def main() -> int:
    started, load = time.monotonic(), os.getloadavg()
    # BENCH_MEMORY_SIZES=5 and BENCH_MEMORY_FULL=0: a quick look, printed only (RESULTS.md untouched)
    sizes = tuple(int(x) for x in os.environ.get("BENCH_MEMORY_SIZES", "5,50,500").split(","))
    full = os.environ.get("BENCH_MEMORY_FULL", "1") != "0"
    result = run(int(os.environ.get("BENCH_CACHE_MB", DEFAULT_MB)), sizes, full)
    text = section(result, time.monotonic() - started, load)
    print(text)
    if full and sizes == tuple(PLAN):
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
