"""Benchmark of `wallet-proxy attributes sync`: profiles synced per second, and data points saved.

Everything on loopback in this process's threads: a SessionM Connect stand-in (sandbox wallets, real
sleeps for SessionM's latency), a Braze stand-in (the sandbox's /users/track simulator, counting data
points, behind a real sleep for Braze's latency), and the CLI's job (`sync_attributes`) with a fresh
set of services per run, as a nightly cron would start it.

Run 1 syncs a whole segment (every attribute is new); then a tenth of the users' points change and
run 2 goes over the same segment: only the changes are written. The saving is against sending every
attribute of every profile again (what a sync without the state would cost).

Usage: .venv/bin/python bench/sync.py [--users 5000] [--sessionm-ms 20] [--braze-ms 100]
Writes one Markdown section to stdout (paste it into bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

from werkzeug.serving import make_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wallet_proxy import services  # noqa: E402
from wallet_proxy.sandbox import SimState, make_sandbox_app  # noqa: E402
from wallet_proxy.sandbox.connect import make_wallet  # noqa: E402
from wallet_proxy.sandbox.track import track_state  # noqa: E402
from wallet_proxy.settings import parse  # noqa: E402
from wallet_proxy.sync.job import sync_attributes  # noqa: E402
from wallet_proxy.sync.state import FileState  # noqa: E402
from wallet_proxy.upstream import transport  # noqa: E402


class SessionM:
    """get_user_offers: each user's sandbox wallet, `bumped` users with other points, after `latency`."""

    def __init__(self, latency: float):
        self.latency = latency
        self.bumped: set = set()
        self.calls = 0
        self.today = datetime.now(timezone.utc)

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        user_id = json.loads(environ["wsgi.input"].read(length) or b"{}").get("user_id", "")
        self.calls += 1
        time.sleep(self.latency)
        payload = make_wallet(user_id, "en-US", self.today)
        if user_id in self.bumped:
            payload["available_points"] = (payload.get("available_points") or 0) + 250
        data = json.dumps({"status": "ok", "payload": payload}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


class Slow:
    """A WSGI app answered after a real sleep (Braze's latency)."""

    def __init__(self, app, latency: float):
        self.app = app
        self.latency = latency

    def __call__(self, environ, start_response):
        time.sleep(self.latency)
        return self.app(environ, start_response)


def serve(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def one_run(path: str, state_path: str, connect_url: str, braze_url: str, concurrency: int) -> tuple:
    settings = parse({"SESSIONM_CONNECT_URL": connect_url, "SESSIONM_CONNECT_AUTH": "YmVuY2g6YmVuY2g=",
                      "SESSIONM_RETAILER_ID": "bench", "BRAZE_REST_URL": braze_url, "BRAZE_API_KEY": "bench",
                      "WALLET_PROXY_CLIENTS": "bench:bench-secret-bench-secret"})
    built = services.build(settings, session=transport.make_session(concurrency))
    state = FileState(state_path)
    sync = services.build_attribute_sync(settings, built.session, None, built.wallets, built.clock, state=state)
    started = time.monotonic()
    summary = sync_attributes(path, sync, concurrency=concurrency, rate=100_000, stream=io.StringIO(),
                              interval=3600)
    seconds = time.monotonic() - started
    state.close()
    return summary, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--changed", type=float, default=0.10, help="share of users changed before run 2")
    parser.add_argument("--sessionm-ms", type=float, default=20.0)
    parser.add_argument("--braze-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=150)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    sessionm = SessionM(args.sessionm_ms / 1000)
    sim = SimState()
    connect_server, connect_url = serve(sessionm)
    braze_server, braze_url = serve(Slow(make_sandbox_app(sim), args.braze_ms / 1000))
    track = track_state(sim)
    users = [f"bench-{n}" for n in range(args.users)]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "segment.csv")
        with open(path, "w") as handle:
            handle.write("user_id\n" + "\n".join(users) + "\n")
        state_path = os.path.join(folder, "state")

        first, first_s = one_run(path, state_path, connect_url, braze_url, args.concurrency)
        points_1, calls_1 = track.data_points, track.calls
        changed = users[:: max(1, round(1 / args.changed))] if args.changed else []
        sessionm.bumped.update(changed)
        second, second_s = one_run(path, state_path, connect_url, braze_url, args.concurrency)
        points_2, calls_2 = track.data_points - points_1, track.calls - calls_1
    connect_server.shutdown()
    braze_server.shutdown()

    full = points_1  # every attribute of every profile: what run 2 would cost without the state
    lines = [
        "## Attribute sync (`bench/sync.py`)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `.venv/bin/python bench/sync.py "
        f"--users {args.users} --sessionm-ms {args.sessionm_ms:g} --braze-ms {args.braze_ms:g}`: the CLI's job "
        f"over a segment of {args.users:,} users, {args.concurrency} workers, against a SessionM stand-in "
        f"({args.sessionm_ms:g} ms) and the sandbox's /users/track simulator behind {args.braze_ms:g} ms, all on "
        "loopback on the same 2 CPUs.",
        "",
        "| run | profiles | synced/s | /users/track calls | profiles per call | data points written |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| 1. first sync (all new) | {first.sent:,} | **{first.sent / first_s:,.0f}** | {calls_1} | "
        f"{first.sent / max(1, calls_1):.1f} | {points_1:,} |",
        f"| 2. same segment, {len(changed):,} users' points changed | {second.sent:,} | "
        f"**{second.sent / second_s:,.0f}** | {calls_2} | {len(changed) / max(1, calls_2):.1f} | {points_2:,} |",
        "",
        f"Run 2 wrote **{points_2:,}** data points where re-sending every profile would write {full:,}: "
        f"**{100 * (1 - points_2 / full):.1f} %** saved ({len(changed):,} changed profiles × 2: the points and "
        f"`sessionm_synced_at`). Rejected: {first.rejected} and {second.rejected}. SessionM calls: "
        f"{sessionm.calls:,} (one per user per run).",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
