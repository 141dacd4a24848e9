"""How cheaply an over-long trigger body is refused (issue #20: "cheap refusal").

61,000 recipients fit in a 1 MB body; the contract allows 2,500. This times, in one process and one
run, POST /campaigns/trigger/send and /v1/braze/trigger with that body (Flask test client: no network,
Braze never called) against the time it takes only to read the same bytes as JSON, so the figure is a
ratio on this machine, not an absolute:

    .venv/bin/python bench/refusal.py            # this checkout
    PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/refusal.py   # another one, same machine
"""
from __future__ import annotations

import json
import statistics
import time

from wallet_proxy import create_app
from wallet_proxy.settings import parse

ROUNDS = 5


def body() -> bytes:
    recipients = [{"braze_id": "1"}] * 61_000
    return json.dumps({"campaign_id": "c", "recipients": recipients}, separators=(",", ":")).encode()


def best(fn) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main() -> None:
    import logging

    logging.disable(logging.CRITICAL)
    data = body()
    app = create_app(parse({"BRAZE_REST_URL": "http://braze.invalid", "BRAZE_API_KEY": "k",
                            "WALLET_PROXY_CLIENTS": "bench:bench-secret-0123456789"}))
    client = app.test_client()
    headers = {"Authorization": "Bearer bench-secret-0123456789", "Content-Type": "application/json"}
    read, _ = best(lambda: json.loads(data))
    print(f"body: {len(data):,} bytes, 61,000 recipients; json.loads alone: {read * 1000:.0f} ms")
    for path in ("/campaigns/trigger/send", "/v1/braze/trigger"):
        statuses = set()

        def post():
            statuses.add(client.post(path, data=data, headers=headers).status_code)

        fastest, median = best(post)
        print(f"{path}: answered {sorted(statuses)} in {fastest * 1000:.0f} ms (median {median * 1000:.0f} ms)"
              f" = {fastest / read:.1f} x json.loads")


if __name__ == "__main__":
    main()
