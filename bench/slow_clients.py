"""Slow and idle connections against the Procfile's gunicorn line, at the scale of the attack (#11 item 4).

    .venv/bin/python bench/slow_clients.py [TRICKLERS] [IDLE]

Starts the service (sandbox, one worker, worker_connections 4000), warms a wallet, then opens
TRICKLERS connections (default 4100) that send one header byte every 5 s and never finish their
request head, plus IDLE keep-alive connections (default 500) that made one request and wait. While
they are open it times normal wallet reads on fresh connections, and reports how long the trickling
connections lived and how many idle ones gave way. The suite's small version is
tests/test_hostile.py::TestSlowAndIdleConnections. `GUNICORN_CMD_ARGS="-k gevent"` runs the same
attack against gunicorn's own gevent worker, for comparison.

Measured 2026-11-29 on the shared 2-core machine (4100 tricklers, 500 idle, 400 reads, 8 at a time):

- WalletProxyWorker: tricklers closed by the server 4100 of 4100 (median lifetime 12.1 s, max 19.4 s);
  idle gave way 500 of 500; wallet reads 400 x 200, p50 57 ms, p99 9.4 s.
- gunicorn's gevent worker: tricklers closed 0 of 4100 after 30 s; wallet reads: some ReadTimeout
  (10 s), p50 33 ms, p99 10.1 s.

More trickling connections than worker_connections (4100 > 4000) still make some reads wait for a
slot until the oldest heads time out (10 s): per-address connection limits belong to the front
(README "Security").
"""
from __future__ import annotations

import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(tricklers: int = 4100, idle_count: int = 500) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    env.update(PORT=str(port), WALLET_PROXY_SANDBOX="1")
    proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(200):
            try:
                requests.get(url + "/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        auth = ("demo", "demo")
        requests.get(url + "/v1/wallets/bench-user", auth=auth, timeout=5)

        idle = []
        for _ in range(idle_count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(65536)
            idle.append(sock)

        selector = selectors.DefaultSelector()
        opened = {}
        started = time.monotonic()
        for _ in range(tricklers):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            opened[sock] = time.monotonic()
            selector.register(sock, selectors.EVENT_READ)
        lifetimes, next_byte = [], time.monotonic()

        def read_wallet(_):
            t0 = time.monotonic()
            try:
                answer = requests.get(url + "/v1/wallets/bench-user", auth=auth, timeout=10,
                                      headers={"Connection": "close"})
            except requests.RequestException as exc:
                return time.monotonic() - t0, type(exc).__name__
            return time.monotonic() - t0, answer.status_code

        timings = []
        with ThreadPoolExecutor(8) as pool:
            reads = [pool.submit(read_wallet, n) for n in range(400)]
            while opened and time.monotonic() - started < 30:
                if time.monotonic() >= next_byte:  # one header byte per open connection every 5 s
                    for sock in list(opened):
                        try:
                            sock.send(b"GET / HTTP/1.1\r\n" if time.monotonic() - opened[sock] < 1 else b"X")
                        except OSError:
                            pass
                    next_byte = time.monotonic() + 5
                for key, _ in selector.select(timeout=0.2):
                    sock = key.fileobj
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        lifetimes.append(time.monotonic() - opened.pop(sock))
                        selector.unregister(sock)
                        sock.close()
            timings = [r.result() for r in reads]
        still_open = len(opened)
        gave_way = 0
        for sock in idle:
            sock.settimeout(0.05)
            try:
                while sock.recv(65536):
                    pass
                gave_way += 1
            except socket.timeout:
                pass
            except OSError:
                gave_way += 1
            sock.close()
        seconds = sorted(t for t, _ in timings)
        statuses = {str(s) for _, s in timings}
        lived = (f"lifetime median {statistics.median(lifetimes):.1f} s, max {max(lifetimes):.1f} s"
                 if lifetimes else "none")
        print(f"tricklers: {tricklers}, closed by the server: {len(lifetimes)} ({lived}), "
              f"still open after 30 s: {still_open}")
        print(f"idle keep-alives: {idle_count}, gave way: {gave_way}")
        p99 = seconds[int(len(seconds) * 0.99) - 1]
        print(f"wallet reads during the attack: {len(seconds)}, answers {sorted(statuses)}, "
              f"p50 {statistics.median(seconds) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
              f"max {seconds[-1] * 1000:.0f} ms")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
