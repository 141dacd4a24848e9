"""Capacity for a Braze send, from the figures measured in bench/RESULTS.md (docs/capacity.md explains).

    .venv/bin/python bench/capacity.py 1000000 --per-minute 50000 --latency 0.3
    .venv/bin/python bench/capacity.py --update-docs   # rewrite docs/capacity.md's worked examples

Reads its inputs from RESULTS.md's raw figures at every run (tests/test_capacity.py checks the parse
against the same file's results table), so a new `make bench` changes the plan, never a copy.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
DOCS = HERE.parent / "docs" / "capacity.md"

# Policy, not measurement: how hard to drive what was measured.
CPU_TARGET = 0.5  # plan for half the measured hit throughput: the bench shared its CPUs with wrk
SLOT_TARGET = 0.8  # of WALLET_PROXY_UPSTREAM_CONCURRENCY kept busy on SessionM calls
REDIS_HEADROOM = 1.5  # fragmentation, locks, idempotency records, replication buffers
BRAZE_TIMEOUT = 2.0  # seconds: Braze renders the block empty after this
MIN_INSTANCES = 2  # one can restart while the other serves
WALLET_SHARE = 0.75  # of WALLET_PROXY_CACHE_MB for wallets (wallet_proxy/services.py)
# Redis holds a wallet as JSON, not deflated as a process does: its JSON, for the sandbox's wallets, by
# MEMORY USAGE (tests/test_capacity.py measures it against a real redis-server: about 5 KB), rounded up.
REDIS_WALLET_BYTES = 6144


@dataclass(frozen=True)
class Bench:
    """What RESULTS.md measured, per gevent worker process."""

    hits_per_second: float  # fresh cache hits, one worker (scenario 1)
    miss_rps: float  # distinct-user misses served per second (scenario 3)
    miss_connections: int  # its connections, all waiting on SessionM (at most 64 slots)
    miss_latency: float  # its simulated SessionM latency, seconds (the table's "SessionM 150 ms")
    bytes_per_wallet: float  # resident memory per cached wallet (scenario 5)
    calls_per_user: float  # SessionM calls per user during the send (scenario 2)
    send_p99: float  # seconds, scenario 2

    @property
    def miss_efficiency(self) -> float:
        """Misses served / (slots busy / SessionM latency): how fully a process uses its SessionM slots."""
        return self.miss_rps * self.miss_latency / min(self.miss_connections, 64)


def raw_figures(text: str) -> dict:
    """The ```json block of RESULTS.md."""
    return json.loads(text.split("```json", 1)[1].split("```", 1)[0])


def load(path: Path = RESULTS) -> Bench:
    text = path.read_text()
    raw = raw_figures(text)
    misses = raw["misses"]
    row = next(line for line in text.splitlines() if line.startswith("| 3."))
    latency = float(re.search(r"SessionM (\d+) ms", row).group(1)) / 1000
    return Bench(hits_per_second=raw["hits"]["hits"]["rps"], miss_rps=misses["run"]["rps"],
                 miss_connections=misses["connections"], miss_latency=latency,
                 bytes_per_wallet=raw["memory"]["bytes_per_wallet"],
                 calls_per_user=max(1.0, raw["send"]["calls_per_user"]),
                 send_p99=raw["send"]["run"]["p99_us"] / 1e6)
    # calls_per_user: a user not cached before the send costs at least one SessionM call; a figure
    # under 1 only means the bench's send stopped at its time limit before reaching every user.


@dataclass(frozen=True)
class Plan:
    instances: int  # gevent worker processes (pods with WEB_CONCURRENCY=1)
    for_hits: float
    for_misses: float
    requests_per_second: float
    sessionm_calls_per_second: float
    sessionm_in_flight: float
    send_minutes: float
    redis_wallets: int
    redis_mib: float
    process_cache_mib: float  # wallet cache memory per process (WALLET_PROXY_CACHE_MB caps it)
    prewarm: bool
    reasons: tuple


def plan(bench: Bench, recipients: int, per_minute: float, latency: float, *, renders: int = 3,
         cultures: int = 1, prewarmed: bool = False, concurrency: int = 64, cache_ttl: float = 60,
         stale_ttl: float = 300, cache_mb: float = 256, sessionm_limit: float | None = None) -> Plan:
    """Instances and Redis memory for `recipients` at `per_minute` messages, SessionM at `latency` s."""
    messages = per_minute / 60
    requests = messages * renders
    # Without prewarm each recipient's first render misses (one SessionM call per user and culture,
    # whichever instance: single flight through Redis); the other renders hit or join that call.
    calls = 0.0 if prewarmed else messages * cultures * bench.calls_per_user
    in_flight = calls * latency  # Little's law
    for_hits = requests / (bench.hits_per_second * CPU_TARGET)
    for_misses = in_flight / (concurrency * bench.miss_efficiency * SLOT_TARGET)
    instances = max(MIN_INSTANCES, math.ceil(for_hits), math.ceil(for_misses))
    minutes = recipients / per_minute
    # Redis holds a wallet for TTL + stale window after its fetch; prewarmed ones for the whole send.
    window_users = recipients if prewarmed else min(recipients, math.ceil(messages * (cache_ttl + stale_ttl)))
    wallets = window_users * cultures
    redis_mib = wallets * max(bench.bytes_per_wallet, REDIS_WALLET_BYTES) * REDIS_HEADROOM / 2**20
    process_mib = min(wallets * bench.bytes_per_wallet / 2**20, cache_mb * WALLET_SHARE)
    reasons = []
    if latency >= 1.0:
        reasons.append(f"SessionM at {latency:g} s leaves too little of Braze's {BRAZE_TIMEOUT:g} s")
    if sessionm_limit is not None and calls > sessionm_limit:
        reasons.append(f"{calls:,.0f} SessionM calls/s exceed the {sessionm_limit:,.0f}/s agreed with "
                       "SessionM")
    if recipients > 500:
        reasons.append("over 500 recipients: raise the send with SessionM, and spare it the burst")
    return Plan(instances, for_hits, for_misses, requests, calls, in_flight, minutes, wallets, redis_mib,
                process_mib, bool(reasons) and not prewarmed, tuple(reasons))


# The worked examples of docs/capacity.md: (recipients, per minute, SessionM latency, prewarmed).
EXAMPLES = [
    (100_000, 10_000, 0.15, False),
    (1_000_000, 50_000, 0.3, False),
    (1_000_000, 50_000, 0.3, True),
    (5_000_000, 250_000, 0.5, False),
    (5_000_000, 250_000, 0.5, True),
    (1_000_000, 100_000, 1.2, True),
]


def examples_table(bench: Bench) -> str:
    rows = ["| recipients | Braze speed (msg/min) | SessionM latency | prewarmed | requests/s "
            "| SessionM calls/s | instances (hits / misses) | Redis | prewarm? |",
            "| ---: | ---: | ---: | :-: | ---: | ---: | :-: | ---: | :-: |"]
    for recipients, per_minute, latency, prewarmed in EXAMPLES:
        p = plan(bench, recipients, per_minute, latency, prewarmed=prewarmed)
        advice = "done" if prewarmed else ("yes" if p.prewarm else "no")
        rows.append(f"| {recipients:,} | {per_minute:,} | {latency:g} s | {'yes' if prewarmed else 'no'} "
                    f"| {p.requests_per_second:,.0f} | {p.sessionm_calls_per_second:,.0f} "
                    f"| **{p.instances}** ({p.for_hits:.1f} / {p.for_misses:.1f}) | {p.redis_mib:,.0f} MiB "
                    f"| {advice} |")
    return "\n".join(rows)


BEGIN, END = "<!-- capacity:examples -->", "<!-- /capacity:examples -->"


def docs_section(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def update_docs(bench: Bench) -> None:
    text = DOCS.read_text()
    head, rest = text.split(BEGIN, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{examples_table(bench)}\n{END}{rest.split(END, 1)[1]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipients", type=int, nargs="?")
    parser.add_argument("--per-minute", type=float, help="Braze delivery speed (messages per minute)")
    parser.add_argument("--latency", type=float, default=0.3, help="SessionM latency, seconds")
    parser.add_argument("--renders", type=int, default=3, help="renders per message (HTML, text, AMP)")
    parser.add_argument("--cultures", type=int, default=1)
    parser.add_argument("--prewarmed", action="store_true")
    parser.add_argument("--concurrency", type=int, default=64, help="WALLET_PROXY_UPSTREAM_CONCURRENCY")
    parser.add_argument("--sessionm-limit", type=float, help="SessionM calls/s agreed with SessionM")
    parser.add_argument("--update-docs", action="store_true", help="rewrite docs/capacity.md's examples")
    args = parser.parse_args(argv)
    bench = load()
    if args.update_docs:
        update_docs(bench)
        print(f"updated {DOCS}")
        return 0
    if not args.recipients or not args.per_minute:
        parser.error("give RECIPIENTS and --per-minute (or --update-docs)")
    p = plan(bench, args.recipients, args.per_minute, args.latency, renders=args.renders,
             cultures=args.cultures, prewarmed=args.prewarmed, concurrency=args.concurrency,
             sessionm_limit=args.sessionm_limit)
    print(f"send: {args.recipients:,} recipients in {p.send_minutes:,.1f} min; {p.requests_per_second:,.0f} "
          f"requests/s; {p.sessionm_calls_per_second:,.0f} SessionM calls/s "
          f"({p.sessionm_in_flight:,.0f} in flight)")
    print(f"instances (gevent worker processes): {p.instances} "
          f"(hits need {p.for_hits:.2f}, SessionM calls need {p.for_misses:.2f})")
    print(f"Redis: {p.redis_wallets:,} wallets, plan {p.redis_mib:,.0f} MiB; "
          f"per process cache: {p.process_cache_mib:,.0f} MiB")
    advice = "yes: " + "; ".join(p.reasons) if p.prewarm else "not needed"
    print("prewarm: " + ("already" if args.prewarmed else advice))
    return 0


if __name__ == "__main__":
    sys.exit(main())
