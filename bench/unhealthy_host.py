"""How close a SessionM outage during a large send brings one host to Braze's unhealthy-host detection.

Braze (https://braze.com/docs/help/help_articles/api/webhook_connected_content_errors): for Connected
Content, more than 3,000 failures AND an error rate over 90 % in any one-minute window, per host name
(not per path), halts every call to the host for a minute (answered `598` by Braze, cache hits
included); for webhooks, more than 3,000 failures a minute is enough. Failures are 408, 429, 502, 503,
504 and 529.

This runs the Procfile's gunicorn line in sandbox mode on loopback, with every user in a SessionM
outage (the sandbox's `fault-500` user ids: SessionM answers 500, so wallet-proxy answers 503), and
drives it for a few seconds per scenario with a share of the calls asking `on_error=empty`. It prints
the failures a minute one instance hands Braze at the rate it sustains here, and the error rate Braze
sees, beside the two thresholds. Bounded: about 30 s. Run: `.venv/bin/python bench/unhealthy_host.py`.
The machine is shared: the rates are this machine's, the error rates are what matters.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AUTH = ("bench", "bench-secret-0123456789")
COUNTED = {408, 429, 502, 503, 504, 529}  # Braze's unhealthy-host failure codes
DURATION = float(os.environ.get("BENCH_DURATION", "6"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start() -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "WALLET_PROXY_SANDBOX": "1",
           "WALLET_PROXY_CLIENTS": f"{AUTH[0]}:{AUTH[1]}", "WALLET_PROXY_LOG_LEVEL": "ERROR"}
    for name in [n for n in env if n.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_REDIS"))]:
        env.pop(name)
    proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                             "wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def drive(base: str, empty_share: float, webhook: bool = False) -> tuple[Counter, float]:
    """Calls for DURATION seconds; `empty_share` of them with on_error=empty. Returns (codes, seconds)."""
    until = time.monotonic() + DURATION
    every = round(1 / empty_share) if empty_share else 0

    def worker(n: int) -> Counter:
        codes, i = Counter(), 0
        with requests.Session() as session:
            session.auth = AUTH
            while time.monotonic() < until:
                i += 1
                user = f"fault-500-{n}-{i}"
                if webhook:
                    reply = session.post(f"{base}/v1/users/{user}/tags",
                                         json={"tags": ["winter"], "ttl": 86400}, timeout=5)
                else:
                    query = "?on_error=empty" if every and (i + n) % every == 0 else ""
                    reply = session.get(f"{base}/v1/wallets/{user}{query}", timeout=5)
                codes[reply.status_code] += 1
        return codes

    started = time.monotonic()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        total = sum(pool.map(worker, range(CONNECTIONS)), Counter())
    return total, time.monotonic() - started


def main() -> None:
    proc, base = start()
    try:
        print(f"{CONNECTIONS} connections, {DURATION:.0f} s each, "
              "every SessionM call failing (sandbox fault-500)")
        print("| calls | on_error=empty | answers/s | failures a minute (Braze's codes) | error rate | "
              "halted? (CC: >3,000 and >90 %; webhooks: >3,000) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, share, webhook in [("wallet GET", 0.0, False), ("wallet GET", 0.1, False),
                                      ("wallet GET", 0.25, False), ("tags webhook", 0.0, True)]:
            codes, seconds = drive(base, share, webhook)
            total = sum(codes.values())
            failed = sum(v for k, v in codes.items() if k in COUNTED)
            per_minute = failed / seconds * 60
            rate = failed / total if total else 0.0
            halted = per_minute > 3000 and (webhook or rate > 0.9)
            print(f"| {label} | {share:.0%} | {total / seconds:,.0f} | {per_minute:,.0f} | {rate:.1%} | "
                  f"{'yes' if halted else 'no'} ({dict(sorted(codes.items()))}) |")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
