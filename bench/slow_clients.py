"""Slow and idle connections against the Procfile's gunicorn line, at the scale of the attack (#11 item 4).

    .venv/bin/python bench/slow_clients.py [TRICKLERS] [IDLE]
    .venv/bin/python bench/slow_clients.py bodies [TRICKLERS] [NON_READERS] [WORKER_CONNECTIONS]

The second form is #22's attack (`bodies`, see `issue22` below): request bodies trickled one byte every
3 s and clients pipelining 100 GET /openapi.json without reading, more of them than the worker has
connections.

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
- Again 2026-12-07, once heads and bodies not yet here give way too (#22): tricklers closed 4100 of
  4100 (median 11.4 s, max 14.2 s); idle gave way 500 of 500; reads 400 x 200, p50 38 ms, p99 4.2 s
  (load average 6-9 from other jobs: noisy).
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
    proc, url, port = start({})
    try:
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
            gave_way += closed_by_server(sock)
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


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed `sock` (what it sent before is read and dropped)."""
    sock.settimeout(0.05)
    try:
        while sock.recv(1 << 20):
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


def start(env_extra: dict) -> tuple[subprocess.Popen, str, int]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
    env.update(PORT=str(port), WALLET_PROXY_SANDBOX="1", **env_extra)
    proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        try:
            requests.get(url + "/healthz", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    return proc, url, port


def issue22(tricklers: int = 55, non_readers: int = 55, connections: int = 50, timeout: float = 10.0) -> None:
    """#22's attack: trickled bodies and non-reading pipeliners, more than `connections`; wallet reads timed.

    Measured 2026-12-07 on the shared 2-core machine (load average 6-11 from other jobs), body and
    write timeouts 10 s, one wallet read at a time every 0.3 s for 20 s:
    - 55 + 55 against 50 connections (the issue's): WalletProxyWorker closed 55/55 trickled bodies
      (median 0.3 s: they give way to each other and to the reads; max 10.3 s, the body timeout) and
      55/55 non-readers; 64 reads, all 200, p50 4 ms, max 321 ms. The worker before #22 and
      gunicorn's gevent worker (`GUNICORN_CMD_ARGS="-k gevent"`): 0/55 and 0/55 closed; the one read
      timed out after 20 s.
    - 2,100 + 2,100 against 4,000 connections: one run 2,056/2,100 bodies closed within the 22 s run
      (median 12.2 s from when the client opened them), 2,100/2,100 non-readers, 21 reads all 200,
      p50 16 ms, max 13.1 s; a second run: the one read timed out at 20 s. 4,200 trickled bodies
      alone: the read took 19.6 s. At that scale the worker is short of CPU, not of connections:
      each attacker's request costs it milliseconds (Flask, the form parser, an OpenAPI answer) on
      its share of a loaded core, and the read waits in the kernel's accept queue behind thousands
      of them. Per-address connection limits at the front (README "Security") are what stop that.
    """
    proc, url, port = start({"WALLET_PROXY_WORKER_CONNECTIONS": str(connections),
                             "WALLET_PROXY_BODY_TIMEOUT": f"{timeout:g}", "WALLET_PROXY_WRITE_TIMEOUT": f"{timeout:g}"})
    auth = ("demo", "demo")
    try:
        requests.get(url + "/v1/wallets/bench-user", auth=auth, timeout=5)
        selector = selectors.DefaultSelector()
        opened, kinds = {}, {}
        head = (b"POST /preview/login HTTP/1.1\r\nHost: x\r\nCookie: wallet_proxy_preview_login=x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n")
        started = time.monotonic()
        for n in range(max(tricklers, non_readers)):
            for kind, wanted in (("trickle", tricklers), ("reader", non_readers)):
                if n >= wanted:
                    continue
                sock = socket.socket()
                if kind == "reader":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.setblocking(False)
                try:
                    sock.send(head if kind == "trickle" else b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
                except BlockingIOError:
                    pass
                opened[sock], kinds[sock] = time.monotonic(), kind
                if kind == "trickle":
                    selector.register(sock, selectors.EVENT_READ)
        lifetimes, reads, next_byte = [], [], time.monotonic() + 3
        with ThreadPoolExecutor(1) as pool:
            def read_wallets():
                out = []
                while time.monotonic() - started < 2 * timeout:
                    t0 = time.monotonic()
                    try:
                        status = requests.get(url + "/v1/wallets/bench-user", auth=auth, timeout=2 * timeout,
                                              headers={"Connection": "close"}).status_code
                    except requests.RequestException as exc:
                        status = type(exc).__name__
                    out.append((time.monotonic() - t0, status))
                    time.sleep(0.3)
                return out

            reading = pool.submit(read_wallets)
            while time.monotonic() - started < 2 * timeout + 2:
                if time.monotonic() >= next_byte:  # one body byte every 3 s
                    for sock in list(selector.get_map().values()):
                        try:
                            sock.fileobj.send(b"a")
                        except OSError:
                            pass
                    next_byte = time.monotonic() + 3
                for key, _ in selector.select(timeout=0.1):
                    try:
                        data = key.fileobj.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        lifetimes.append(time.monotonic() - opened[key.fileobj])
                        selector.unregister(key.fileobj)
            reads = reading.result()
        readers_closed = 0
        for sock, kind in kinds.items():
            if kind == "reader":
                readers_closed += closed_by_server(sock)
            sock.close()
        seconds = sorted(t for t, _ in reads)
        print(f"#22 attack: {tricklers} trickled bodies + {non_readers} non-readers vs {connections} connections, "
              f"timeouts {timeout:g} s")
        print(f"trickled bodies closed by the server: {len(lifetimes)} of {tricklers}"
              + (f" (lifetime median {statistics.median(lifetimes):.1f} s, max {max(lifetimes):.1f} s)"
                 if lifetimes else ""))
        print(f"non-readers closed by the server: {readers_closed} of {non_readers}")
        print(f"wallet reads during the attack: {len(seconds)}, answers {sorted({str(s) for _, s in reads})}, "
              f"p50 {statistics.median(seconds) * 1000:.0f} ms, max {seconds[-1] * 1000:.0f} ms")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    if sys.argv[1:2] == ["bodies"]:
        issue22(*(int(a) for a in sys.argv[2:5]))
    else:
        main(*(int(a) for a in sys.argv[1:3]))
