"""CPU microseconds per distinct-user wallet miss, for wallets of 5, 50 and 500 offers.

Run: `.venv/bin/python bench/cpu_per_miss.py` (a few minutes); it prints the figures and writes them
into its own section of bench/RESULTS.md (between the `cpu-per-miss` markers), leaving the rest alone.

What is measured: every request is a new user, so each one is a miss: the route, the query and the
auth, the SessionM call (a POST on loopback, its answer read and decoded), validation and
normalisation of the payload, storing it, the flat view, its JSON encoding and the answer. The
SessionM stand-in answers at once (~0 ms) from *another process*, so its CPU is not counted: the
figure is this process's CPU time (`time.process_time`, all threads) divided by the misses. The
service runs in-process behind Werkzeug's test client (the same WSGI app gunicorn serves); the
client's own share is small and the same for every size. Then the same work is split by phase
(decode, normalise, flatten, encode) on one payload of each size, to show where the time goes.
"""
from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (5, 50, 500)
MISSES = {5: 800, 50: 500, 500: 80}
MARK_BEGIN, MARK_END = "<!-- section:cpu-per-miss -->", "<!-- /section:cpu-per-miss -->"

STAND_IN = textwrap.dedent('''
    """A SessionM Connect stand-in answering a pre-encoded wallet at once: N offers for user `nN-…`.

    Plain http.server with HTTP/1.1 keep-alive, as SessionM's HTTPS front keeps connections open."""
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = {int(n): b.encode() for n, b in json.loads(sys.stdin.read()).items()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            user = str(request.get("user_id", ""))
            body = bodies[int(user[1:].split("-", 1)[0]) if user.startswith("n") else 5]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_port, flush=True)
    server.serve_forever()
''')


def sessionm_body(size: int) -> str:
    """A realistic get_user_offers answer with `size` live offers (sandbox catalogue, distinct ids)."""
    from wallet_proxy.sandbox.connect import make_wallet

    now = datetime.now(timezone.utc)  # a fixed date stops working once its offers expire
    live_past = (now + timedelta(days=7)).strftime("%Y-%m-%d")  # still live during the run
    offers = []
    n = 0
    while len(offers) < size:
        for offer in make_wallet(f"bench-{n}", "en-US", now)["user_offers"]:
            if offer["redeem_date"] is None and offer["expiration_date"] > live_past:
                offers.append(offer)
        n += 1
    payload = make_wallet("bench-0", "en-US", now)
    payload.update(user_offers=offers[:size], total_records=size)
    return json.dumps({"status": "OK", "payload": payload})


def start_stand_in(bodies: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", STAND_IN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    proc.stdin.write(json.dumps(bodies))
    proc.stdin.close()
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def per_miss(url: str, before: bool) -> dict:
    """CPU µs per distinct-user miss through the whole app, per wallet size.

    `before`: as the code was before these changes -- every offer loaded through the marshmallow
    schemas, the standard library's JSON, and requests re-reading the environment on each call --
    measured in the same run.
    """
    import logging

    from wallet_proxy import create_app, jsoncodec
    from wallet_proxy.settings import parse
    from wallet_proxy.wallet import payload

    logging.disable(logging.CRITICAL)  # the access log line is the same for every size: leave it out
    settings = parse({"SESSIONM_CONNECT_URL": url, "SESSIONM_CONNECT_AUTH": "YmVuY2g6YmVuY2g=",
                      "SESSIONM_RETAILER_ID": "bench", "WALLET_PROXY_CLIENTS": "bench:bench-secret",
                      "WALLET_PROXY_CACHE_SIZE": "1000", "WALLET_PROXY_DEADLINE": "20",
                      "WALLET_PROXY_UPSTREAM_TIMEOUT": "15"})  # CPU is measured, not latency
    app = create_app(settings)
    payload.FAST = jsoncodec.FAST = not before
    app.extensions["wallet_proxy"].connect.session.trust_env = before
    client = app.test_client()
    headers = {"Authorization": "Basic YmVuY2g6YmVuY2gtc2VjcmV0"}
    out = {}
    try:
        for size in SIZES:
            for i in range(20):  # warm-up: imports, connection pool, caches of query strings
                assert client.get(f"/v1/wallets/n{size}-warm-{i}", headers=headers).status_code == 200
            count = MISSES[size]
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(count):
                response = client.get(f"/v1/wallets/n{size}-u{i}", headers=headers)
                assert response.status_code == 200 and b'"offer_count":%d' % size in response.data, \
                    response.data[:200]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            out[size] = {"misses": count, "cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6}
    finally:
        payload.FAST = jsoncodec.FAST = True
        logging.disable(logging.NOTSET)
    return out


def phases(bodies: dict) -> dict:
    """CPU µs of each phase of a miss, on one payload of each size (in-process, no HTTP)."""
    from wallet_proxy import jsoncodec
    from wallet_proxy.upstream import transport
    from wallet_proxy.upstream.connect import interpret
    from wallet_proxy.wallet import payload
    from wallet_proxy.wallet.view import encode, flatten

    now = datetime.now(timezone.utc)
    out = {}
    for size in SIZES:
        raw = bodies[size].encode()
        rounds = max(20, 20000 // size)

        def timed(fn):
            started = time.process_time()
            for _ in range(rounds):
                result = fn()
            return (time.process_time() - started) / rounds * 1e6, result

        decode_std_us, data = timed(lambda: json.loads(raw))
        decode_us, _ = timed(lambda: jsoncodec.loads(raw))
        payload.FAST = False
        schema_us, _ = timed(lambda: interpret(transport.Reply(200, {}, data, 0.0)))
        payload.FAST = True
        normalise_us, wallet = timed(lambda: interpret(transport.Reply(200, {}, data, 0.0)))
        flatten_us, body = timed(lambda: flatten(wallet, now=now, user_id="u", culture="en-US",
                                                 fetched_at=now.timestamp(), stale=False, query={}))
        encode_us, _ = timed(lambda: encode(body))
        jsoncodec.FAST = False
        encode_std_us, _ = timed(lambda: encode(body))
        jsoncodec.FAST = True
        out[size] = {"decode_us": decode_us, "decode_std_us": decode_std_us, "normalise_us": normalise_us,
                     "schema_us": schema_us, "flatten_us": flatten_us, "encode_us": encode_us,
                     "encode_std_us": encode_std_us, "bytes_in": len(raw)}
    return out


def run(rounds: int = 2) -> dict:
    """Before and after, alternating (`rounds` each, best kept), with one stand-in process."""
    bodies = {size: sessionm_body(size) for size in SIZES}
    proc, url = start_stand_in(bodies)
    try:
        runs = {"before": [], "after": []}
        for _ in range(rounds):
            for label in ("before", "after"):
                runs[label].append(per_miss(url, before=label == "before"))
        best = {label: {size: min((r[size] for r in results), key=lambda m: m["cpu_us"]) for size in SIZES}
                for label, results in runs.items()}
        return {**best, "phases": phases(bodies)}
    finally:
        proc.terminate()
        proc.wait(5)


def table(result: dict) -> str:
    lines = ["| offers | misses | before: CPU µs / miss | after: CPU µs / miss | after / before "
             "| SessionM answer | decode: json → orjson | normalise: schemas → fast path | flatten "
             "| encode: json → orjson |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in SIZES:
        b, a, p = result["before"][size], result["after"][size], result["phases"][size]
        lines.append(f"| {size} | {a['misses']} | {b['cpu_us']:,.0f} | {a['cpu_us']:,.0f} | "
                     f"{a['cpu_us'] / b['cpu_us']:.2f} | {p['bytes_in'] / 1024:,.1f} KB | "
                     f"{p['decode_std_us']:,.0f} → {p['decode_us']:,.0f} | "
                     f"{p['schema_us']:,.0f} → {p['normalise_us']:,.0f} | "
                     f"{p['flatten_us']:,.0f} | {p['encode_std_us']:,.0f} → {p['encode_us']:,.0f} |")
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Put `text` between the section's markers in bench/RESULTS.md (appended the first time)."""
    path = ROOT / "bench" / "RESULTS.md"
    current = path.read_text() if path.exists() else ""
    block = f"{MARK_BEGIN}\n{text.rstrip()}\n{MARK_END}\n"
    if MARK_BEGIN in current and MARK_END in current:
        current = re.sub(re.escape(MARK_BEGIN) + r".*?" + re.escape(MARK_END) + r"\n?", lambda _: block,
                         current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block
    path.write_text(current)


def main() -> int:
    started = time.monotonic()
    result = run()
    text = table(result)
    print(text)
    ratio = result["after"][50]["cpu_us"] / result["before"][50]["cpu_us"]
    print(f"\n{'MET   ' if ratio <= 0.5 else 'MISSED'} T3. CPU per distinct-user miss, 50 offers: "
          f"{result['after'][50]['cpu_us']:,.0f} / {result['before'][50]['cpu_us']:,.0f} µs = {ratio:.2f} "
          "of before (target ≤ 0.50)")
    load = os.getloadavg()[0]
    write_section(
        "## CPU per distinct-user miss (`bench/cpu_per_miss.py`)\n\n"
        "Each request a new user, so each a miss; SessionM stand-in answering at once from another process "
        "(HTTP/1.1 keep-alive); CPU of the service's process (all threads) per miss, through the whole app "
        "(route, auth, SessionM call, decode, normalise, store, flat view, encode). *Before* and *after* are "
        "measured alternately in the same run (best of two each): *before* loads every offer through the "
        "marshmallow schemas, decodes and encodes with the standard library's json and lets requests "
        "re-read the environment on each call, as the code did; *after* reads plain offers on the fast "
        "path (`wallet/payload.py`, held equal to the schemas by `tests/test_payload_fast.py`), decodes "
        "and encodes with orjson (`wallet_proxy/jsoncodec.py`, held to the standard library's output by "
        "`tests/test_jsoncodec.py`) and reads the environment once per session. Phases in µs on one "
        f"payload of each size, in-process. Run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} "
        f"{'(the machine was shared)' if load > 1.5 else '(nothing else running)'}, "
        f"{time.monotonic() - started:.0f} s.\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
