"""CPU per distinct-user wallet miss against the floor of the stack (issue #24 target 1).

Run: `.venv/bin/python bench/cpu_per_miss.py` (a few minutes); prints the figures and the target
met/missed, and writes its section of bench/RESULTS.md (between the `cpu-per-miss` markers).

Every server runs on the same gunicorn line (`gunicorn -c gunicorn.conf.py ...`, one gevent worker):
- `service`: the Procfile's `wsgi:app`, memory mode, production defaults (JSON access log, metrics);
- `service (requests)`: the same app constructed with a requests session for SessionM Connect
  (bench/service_requests.py) instead of upstream/fast.py: the transport choice, measured;
- `floor`: bench/floor.py with geventhttpclient: checks one Basic token, POSTs get_user_offers,
  drops expired and redeemed offers, flattens, encodes with orjson; nothing else;
- `floor (urllib3)`: the same with urllib3.
The SessionM stand-in (bench/sessionm_sizes.py, gunicorn gevent, its own process) answers at once.
wrk sends distinct users only (every request a miss) over CONNECTIONS connections; the figure is the
worker's own CPU time (user + system, from /proc) divided by its answers. Servers are visited in
turn (the order rotated one place a sweep: run.in_turn), ROUNDS times per size, so load from other
processes lands on all of them; the best round of each is kept (CPU per answer rises, never falls, with interference).
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import BENCH, SETTINGS, Server, in_turn, machine, wrk_cpu  # noqa: E402

SIZES = (5, 50, 500)
CONNECTIONS = 16
SECONDS = int(os.environ.get("BENCH_MISS_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_MISS_ROUNDS", "2"))
TARGET = 1.5  # CPU per 5-offer miss, at most this many times the floor's
MARK_BEGIN, MARK_END = "<!-- section:cpu-per-miss -->", "<!-- /section:cpu-per-miss -->"
SERVERS = {"service": "wsgi:app", "service (requests)": "service_requests:app",
           "floor": "floor:gevent_app", "floor (urllib3)": "floor:urllib3_app"}
ENV = {**SETTINGS, "PYTHONPATH": str(BENCH)}


def stand_in() -> Server:
    return Server(["-c", str(BENCH / "upstream_gunicorn.py"), "--chdir", str(BENCH), "sessionm_sizes:app"],
                  probe="/")


def start(target: str, upstream: Server) -> Server:
    return Server(["-c", "gunicorn.conf.py", target], {**ENV, "SESSIONM_CONNECT_URL": upstream.url}, probe="/")


def measure(server: Server, size: int, seconds: int) -> dict:
    result, cpu = wrk_cpu(server, "sized.lua", CONNECTIONS, seconds,
                          env={"BENCH_SIZE": str(size), "BENCH_PREFIX": f"c{time.time_ns()}"})
    # per wallet served: a refusal (503 under admission control on a busy machine) costs CPU too,
    # which is counted, but is no miss served
    answers = result["requests"] - result["non2xx"]
    return {"cpu_us": cpu / max(1, answers) * 1e6, "rps": result["rps"], "answers": answers,
            "non2xx": result["non2xx"] + result["connect_errors"] + result["read_errors"] + result["timeouts"]}


def run() -> dict:
    upstream = stand_in()
    servers = {}
    try:
        servers = {name: start(target, upstream) for name, target in SERVERS.items()}
        for server in servers.values():  # warm-up: imports, pools, code paths run once
            measure(server, 5, 1)
        rounds: dict = {name: {size: [] for size in SIZES} for name in servers}
        sweep = 0
        for _ in range(ROUNDS):
            for size in SIZES:
                for name, server in in_turn(list(servers.items()), sweep):
                    rounds[name][size].append(measure(server, size, SECONDS))
                sweep += 1
    finally:
        for server in servers.values():
            server.close()
        upstream.close()
    best = {name: {size: min(runs, key=lambda r: r["cpu_us"]) for size, runs in sizes.items()}
            for name, sizes in rounds.items()}
    return {"best": best, "rounds": rounds}


def table(result: dict) -> str:
    best = result["best"]
    names = list(SERVERS)
    lines = ["| offers | " + " | ".join(f"{n}: CPU µs / miss" for n in names) + " | service / floor "
             "| service (requests) / floor | floor (urllib3) / floor |",
             "| ---: |" + " ---: |" * (len(names) + 3)]
    for size in SIZES:
        floor = best["floor"][size]["cpu_us"]
        cells = [f"{best[n][size]['cpu_us']:,.0f}" for n in names]
        lines.append(f"| {size} | " + " | ".join(cells) + f" | **{best['service'][size]['cpu_us'] / floor:.2f}** "
                     f"| {best['service (requests)'][size]['cpu_us'] / floor:.2f} "
                     f"| {best['floor (urllib3)'][size]['cpu_us'] / floor:.2f} |")
    return "\n".join(lines)


def verdict(result: dict) -> tuple[bool, str]:
    best = result["best"]
    ratio = best["service"][5]["cpu_us"] / best["floor"][5]["cpu_us"]
    return ratio <= TARGET, (f"#24 T1. CPU per 5-offer miss / the floor: {best['service'][5]['cpu_us']:,.0f} / "
                             f"{best['floor'][5]['cpu_us']:,.0f} µs = {ratio:.2f} (target ≤ {TARGET})")


def write_section(text: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> None:
    """Put `text` between a section's markers in bench/RESULTS.md (appended the first time)."""
    path = ROOT / "bench" / "RESULTS.md"
    current = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    if begin in current and end in current:
        current = re.sub(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", lambda _: block,
                         current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block
    path.write_text(current)


def section(result: dict, seconds: float, load: tuple) -> str:
    m = machine()
    errors = sum(r["non2xx"] for sizes in result["rounds"].values() for runs in sizes.values() for r in runs)
    met, line = verdict(result)
    return ("## CPU per distinct-user miss vs the floor (`bench/cpu_per_miss.py`)\n\n"
            "Every request a new user (a miss); the SessionM stand-in answers at once from its own process. "
            "Each server on the same gunicorn gevent line, one worker; the worker's CPU (user + system) per "
            f"answer; wrk -c{CONNECTIONS}, {SECONDS} s per run, servers visited in turn, best of {ROUNDS} rounds. "
            "*floor*: bench/floor.py (one Basic token, get_user_offers, expired/redeemed dropped, flattened, "
            "orjson; no cache, log or metrics). *service (requests)*: the service constructed with requests "
            "for the Connect call instead of upstream/fast.py. "
            f"Run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {m['nproc']} CPUs ({m['cpu']}), "
            f"load average {load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
            f"(the machine was shared with other jobs), {seconds:.0f} s; non-2xx or socket errors: {errors}.\n\n"
            + table(result) + f"\n\n{'MET' if met else 'MISSED'}: {line}\n")


def main() -> int:
    started, load = time.monotonic(), os.getloadavg()
    result = run()
    print(table(result))
    met, line = verdict(result)
    print(f"\n{'MET   ' if met else 'MISSED'} {line}")
    write_section(section(result, time.monotonic() - started, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
