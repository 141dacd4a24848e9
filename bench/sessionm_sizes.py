"""A SessionM Connect stand-in for bench/cpu_per_miss.py and bench/memory.py: answers at once (no
latency) a pre-encoded get_user_offers of N live offers for a user id starting `nN-` (5 otherwise),
the caller's id spliced in. Run under gunicorn gevent in its own process, so its CPU is not counted."""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = (5, 50, 500)
MARK = "@@USER@@"


def sessionm_body(size: int, user_id: str = "bench-0") -> str:
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
    payload.update(user_offers=offers[:size], total_records=size, user_id=user_id)
    return json.dumps({"status": "OK", "payload": payload})


_PARTS = {size: sessionm_body(size, MARK).split(json.dumps(MARK)) for size in SIZES}
_HEADERS = [("Content-Type", "application/json")]


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    user_id = json.loads(environ["wsgi.input"].read(length) or b"{}").get("user_id", "")
    size = int(user_id[1:].split("-", 1)[0]) if user_id.startswith("n") and "-" in user_id else 5
    data = json.dumps(user_id).join(_PARTS.get(size, _PARTS[5])).encode()
    start_response("200 OK", _HEADERS + [("Content-Length", str(len(data)))])
    return [data]
