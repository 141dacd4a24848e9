"""The floor of this stack for a wallet miss (issue #24): a plain WSGI app on the same gunicorn gevent
line as the service that checks one Basic token, POSTs get_user_offers, drops expired and redeemed
offers, flattens and encodes with orjson. No cache, log, metrics, validation or error mapping.

Two apps, as `gunicorn -c gunicorn.conf.py bench.floor:gevent_app` (geventhttpclient, the client
of Locust's fast users) and `bench.floor:urllib3_app` (urllib3 directly). Settings come from the same
environment variables as the service's (SESSIONM_CONNECT_URL, SESSIONM_CONNECT_AUTH,
SESSIONM_RETAILER_ID, WALLET_PROXY_CLIENTS with one `name:secret`). bench/cpu_per_miss.py measures
the service against it.
"""
from __future__ import annotations

import base64
import os
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import orjson

PATH = "/offers/api/2.0/offers/get_user_offers"
PREFIX = "/v1/wallets/"


def _settings():
    name, secret = os.environ["WALLET_PROXY_CLIENTS"].split(",")[0].split(":")[:2]
    auth = os.environ["SESSIONM_CONNECT_AUTH"]
    return ("Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode(),
            os.environ["SESSIONM_CONNECT_URL"].rstrip("/"), auth if auth.startswith("Basic ") else "Basic " + auth,
            os.environ["SESSIONM_RETAILER_ID"])


def _ts(value):
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _flat(user_id: str, payload: dict) -> bytes:
    now = time.time()
    offers = []
    for o in payload.get("user_offers") or ():
        if o.get("redeem_date"):
            continue
        expires = _ts(o.get("expiration_date"))
        if expires is not None and expires <= now:
            continue
        offers.append({"user_offer_id": o.get("user_offer_id"), "offer_id": o.get("offer_id"),
                       "offer_type": o.get("offer_type"), "title": o.get("name"),
                       "description": o.get("description"), "terms": o.get("terms"),
                       "logo_url": o.get("logo_uri"), "pos_discount_id": o.get("pos_discount_id"),
                       "group_id": o.get("offer_group_id"), "issued_at": o.get("acquire_date"),
                       "expires_at": o.get("expiration_date"),
                       "expires_in_days": None if expires is None else int((expires - now) // 86400),
                       "redeemable": o.get("is_redeemable", True)})
    return orjson.dumps({"ok": True, "user_id": user_id, "available_points": payload.get("available_points"),
                         "total_points": payload.get("total_points"), "offer_count": len(offers),
                         "offers": offers})


def _make(post):
    token, _, _, retailer = _settings()

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("HTTP_AUTHORIZATION") != token or not path.startswith(PREFIX):
            start_response("401 Unauthorized", [("Content-Length", "0")])
            return [b""]
        user_id = path[len(PREFIX):]
        body = orjson.dumps({"retailer_id": retailer, "user_id": user_id, "skip": 0, "take": 1000,
                             "include_pending_extended_data": False, "culture": "en-US"})
        data = _flat(user_id, orjson.loads(post(body))["payload"])
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return app


def _gevent_post():
    from geventhttpclient import HTTPClient

    _, base, auth, _ = _settings()
    url = urlsplit(base)
    client = HTTPClient(url.hostname, url.port, concurrency=64, connection_timeout=1, network_timeout=5)
    headers = {"Authorization": auth, "Content-Type": "application/json", "Accept": "application/json"}

    def post(body: bytes) -> bytes:
        response = client.request("POST", url.path + PATH, body=body, headers=headers)
        return response.read()

    return post


def _urllib3_post():
    import urllib3

    _, base, auth, _ = _settings()
    pool = urllib3.PoolManager(maxsize=64)
    headers = {"Authorization": auth, "Content-Type": "application/json", "Accept": "application/json"}

    def post(body: bytes) -> bytes:
        return pool.request("POST", base + PATH, body=body, headers=headers, timeout=5.0, retries=False).data

    return post


class _Lazy:
    """Built on the first request, inside the worker (after gevent's monkey-patching)."""

    def __init__(self, factory):
        self.factory, self.app = factory, None

    def __call__(self, environ, start_response):
        if self.app is None:
            self.app = _make(self.factory())
        return self.app(environ, start_response)


gevent_app = _Lazy(_gevent_post)
urllib3_app = _Lazy(_urllib3_post)
