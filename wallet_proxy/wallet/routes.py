"""GET/DELETE /v1/wallets/<user_id>: the Connected Content call and its purge."""
from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timezone

from flask import Blueprint, Response, g, request
from marshmallow import ValidationError

from ..errors import ApiError, invalid_fields
from ..ids import check_user_id
from ..web.admission import resolve_seed_id
from ..web.auth import check_signature
from ..web.http import deadline, require, state
from .service import render_key, wallet_headers
from .view import VIEWS, WalletQuery, empty_wallet, encode, fit, next_change

bp = Blueprint("wallets", __name__)

_query = WalletQuery()
# Errors that `on_error=empty` turns into a 200 the template can test (`wallet.ok`).
_SOFT = ("user_not_found", "upstream_refused", "upstream_error", "upstream_unavailable", "upstream_timeout")


_PARSED_MAX = 1024


def parse_query() -> dict:
    """Validate the query string; a 400 names each bad field and why. The result is read-only.

    A send repeats a handful of query strings, so validated ones are remembered per app."""
    raw = request.query_string
    _parsed = state().queries
    query = _parsed.get(raw)
    if query is not None:
        return query
    try:
        query = _query.load(request.args.to_dict())
    except ValidationError as exc:
        raise invalid_fields("query", exc.messages) from exc
    if len(_parsed) >= _PARSED_MAX:  # per-user `sig`s make many distinct strings: start over
        _parsed.clear()
    _parsed[raw] = query
    return query


def _json(body: dict, status: int = 200) -> Response:
    return Response(encode(body), status=status, mimetype="application/json")


def resolve_user(user_id: str, query: dict) -> str:
    """Return the SessionM user id: the URL's, or Core's answer for an external id."""
    return resolve_seed_id(state(), user_id, query["id_type"], deadline())


@bp.get("/v1/wallets/<anypath:user_id>")
@require("wallet", "connect")
def get_wallet(user_id: str):
    """Serve a user's wallet for Connected Content: the flat view, or SessionM's shape (view=sessionm)."""
    check_user_id(user_id)
    query = parse_query()
    services = state()
    check_signature(services.settings.signing_key, user_id, query["sig"], query["id_type"])
    try:
        seed_id = resolve_user(user_id, query)
        served = services.wallets.get(seed_id, query["culture"], deadline())
    except ApiError as exc:
        if query["on_error"] != "empty" or exc.code not in _SOFT:
            raise
        g.cache_status = "wallet-proxy; fwd=uri-miss; detail=error"
        response = _json(empty_wallet(user_id=user_id, culture=query["culture"], view=query["view"],
                                      error={"code": exc.code, "message": exc.message}))
        response.headers["Cache-Control"] = "no-store"
        return response

    data, etag = render(services, served, seed_id, query)
    headers = wallet_headers(served, etag)  # the fast path answers a hit with the same ones
    g.cache_status = headers[0][1]
    # RFC 9110 §13.1.2: If-None-Match uses the weak comparison, so W/"x" matches "x" (a cache or a
    # compressing proxy may have weakened the tag it stored)
    not_modified = request.if_none_match and request.if_none_match.contains_weak(etag)
    response = Response(b"" if not_modified else data, status=304 if not_modified else 200,
                        mimetype="application/json")
    response.headers.extend(headers)
    return response


def render(services, served, seed_id: str, query: dict) -> tuple[bytes, str]:
    """The JSON body and ETag of a served wallet, reused while the view cannot change."""
    now_ts = services.clock()
    entry = served.entry
    key = render_key(seed_id, served, request.query_string)
    cached = services.rendered.get(key, now_ts)
    if cached is not None:
        return cached
    now = datetime.fromtimestamp(now_ts, tz=timezone.utc)
    data = fit(functools.partial(VIEWS[query["view"]], entry.wallet, now=now, user_id=seed_id,
                                 culture=query["culture"], fetched_at=entry.fetched_at, stale=served.stale,
                                 query=query))
    etag = hashlib.blake2b(data, digest_size=12).hexdigest()
    services.rendered.put(key, data, etag, next_change(entry.wallet, now_ts))
    return data, etag


@bp.delete("/v1/wallets/<anypath:user_id>")
@require("admin", "connect")
def forget_wallet(user_id: str):
    """Forget every cached culture of a user, so the next read goes to SessionM."""
    check_user_id(user_id)
    query = parse_query()
    state().wallets.forget(resolve_user(user_id, query))
    return Response(status=204)
