"""The flattened wallet view: pure functions from a normalised SessionM wallet to what Liquid reads."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from ..ids import DEFAULT_CULTURE, normalise_culture
from .payload import iso

SORT_KEYS = ("expires_at", "title", "issued_at")
MAX_BODY = 1_000_000  # bytes: Braze's Connected Content limit

class CultureField(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return normalise_culture(super()._deserialize(value, attr, data, **kwargs))
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class WalletQuery(Schema):
    """Query string of GET /v1/wallets/<user_id>; unknown keys (cache busters) are ignored."""

    class Meta:
        unknown = EXCLUDE

    culture = CultureField(load_default=DEFAULT_CULTURE)
    sig = fields.String(load_default=None, validate=validate.Length(max=128))
    group = fields.String(load_default=None, validate=validate.Length(min=1, max=256))
    category = fields.String(load_default=None, validate=validate.Length(min=1, max=256))
    type = fields.String(load_default=None, validate=validate.Length(min=1, max=128))
    expiring_within_days = fields.Integer(load_default=None, strict=False,
                                          validate=validate.Range(min=0, max=36500))
    limit = fields.Integer(load_default=None, validate=validate.Range(min=1, max=1000))
    sort = fields.String(load_default=None, validate=validate.OneOf(
        SORT_KEYS + tuple("-" + k for k in SORT_KEYS)))
    on_error = fields.String(load_default="status", validate=validate.OneOf(("status", "empty")))
    id_type = fields.String(load_default="seed", validate=validate.OneOf(("seed", "external")))

    @validates("expiring_within_days")
    def _int_only(self, value, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("must be an integer")


def is_servable(offer: dict, now_ts: float) -> bool:
    """An offer is shown only when not redeemed and not yet expired (checked at serve time)."""
    if offer["redeemed"]:
        return False
    expires = offer["expires_ts"]
    return expires is None or expires > now_ts


def _matches(value: str | None, wanted: str, names: dict) -> bool:
    if value is None:
        return False
    return value == wanted or (names.get(value) or "").casefold() == wanted.casefold()


def flatten(wallet: dict, *, now: datetime, user_id: str, culture: str, fetched_at: float,
            stale: bool, query: dict | None = None, keep: int | None = None) -> dict:
    """Build the SPEC's 200 body: drop expired/redeemed offers, resolve names, filter, sort, limit.

    `keep` leaves out the offers past that many (the body would not fit Braze's 1 MB): `truncated`.
    """
    query = query or {}
    now_ts = now.timestamp()
    group_names = {g["id"]: g["name"] for g in wallet["groups"]}
    category_names = {c["id"]: c["name"] for c in wallet["categories"]}

    offers = []
    for offer in wallet["offers"]:
        if not is_servable(offer, now_ts):
            continue
        if query.get("type") and offer["offer_type"] != query["type"]:
            continue
        if query.get("group") and not _matches(offer["group_id"], query["group"], group_names):
            continue
        if query.get("category") and not any(
                _matches(c, query["category"], category_names) for c in offer["category_ids"]):
            continue
        days = None if offer["expires_ts"] is None else math.floor((offer["expires_ts"] - now_ts) / 86400)
        within = query.get("expiring_within_days")
        if within is not None and (days is None or days > within):
            continue
        offers.append(({
            "user_offer_id": offer["user_offer_id"],
            "offer_id": offer["offer_id"],
            "offer_type": offer["offer_type"],
            "title": offer["title"],
            "description": offer["description"],
            "terms": offer["terms"],
            "logo_url": offer["logo_url"],
            "pos_discount_id": offer["pos_discount_id"],
            "group_id": offer["group_id"],
            "group_name": group_names.get(offer["group_id"]),
            "category_names": [category_names[c] for c in offer["category_ids"]
                               if category_names.get(c) is not None],
            "issued_at": offer["issued_at"],
            "expires_at": offer["expires_at"],
            "expires_in_days": days,
            "redeemable": offer["redeemable"],
        }, offer["category_ids"]))

    sort = query.get("sort")
    if sort:
        key = sort.lstrip("-")
        present = [p for p in offers if p[0][key] is not None]
        absent = [p for p in offers if p[0][key] is None]  # offers without the key always go last
        present.sort(key=lambda p: p[0][key].casefold() if key == "title" else p[0][key],
                     reverse=sort.startswith("-"))
        offers = present + absent
    if query.get("limit"):
        offers = offers[: query["limit"]]
    truncated = bool(wallet.get("truncated"))
    if keep is not None and keep < len(offers):
        offers, truncated = offers[:keep], True

    group_counts: dict = {}
    category_counts: dict = {}
    for offer, category_ids in offers:
        group_counts[offer["group_id"]] = group_counts.get(offer["group_id"], 0) + 1
        for cid in category_ids:
            category_counts[cid] = category_counts.get(cid, 0) + 1
    offers = [offer for offer, _ in offers]

    return {
        "ok": True,
        "stale": stale,
        "user_id": user_id,
        "culture": culture,
        "available_points": wallet["available_points"],
        "total_points": wallet["total_points"],
        "offer_count": len(offers),
        "offers": offers,
        "groups": [{"id": g["id"], "name": g["name"], "offer_count": group_counts.get(g["id"], 0)}
                   for g in wallet["groups"]],
        "categories": [{"id": c["id"], "name": c["name"], "offer_count": category_counts.get(c["id"], 0)}
                       for c in wallet["categories"]],
        "user": {"opted_in": wallet["user"].get("opted_in"), "activated": wallet["user"].get("activated")},
        "fetched_at": iso(datetime.fromtimestamp(fetched_at, tz=timezone.utc)),
        "truncated": truncated,
    }


def encode(body: dict) -> bytes:
    """The compact UTF-8 JSON every wallet answer is sent as."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def fit(build, limit: int = MAX_BODY) -> bytes:
    """Encode `build(keep=None)`; when over `limit` bytes, leave out the last offers until it fits.

    Braze cannot use a Connected Content answer over 1 MB, so the body says `truncated: true`
    instead of being lost (https://www.braze.com/docs/user_guide/personalization_and_dynamic_content/
    connected_content/making_an_api_call/). `build(keep=n)` returns the body with at most n offers.
    """
    body = build(keep=None)
    data = encode(body)
    if len(data) <= limit:
        return data
    sizes = [len(encode(offer)) + 1 for offer in body["offers"]]  # each offer and its comma
    budget = limit - (len(data) - sum(sizes)) - 64  # room for `true`, smaller counts and the like
    keep = 0
    for size in sizes:
        if budget < size:
            break
        budget -= size
        keep += 1
    while True:
        data = encode(build(keep=keep))
        if len(data) <= limit or keep == 0:
            return data
        keep -= 1


def next_change(wallet: dict, now_ts: float) -> float:
    """When (epoch seconds) `flatten` of this wallet could next answer differently for the same query.

    The view changes only when an offer expires or its `expires_in_days` ticks down, so a rendered
    body may be reused until the earliest such moment.
    """
    soonest = math.inf
    for offer in wallet["offers"]:
        expires = offer["expires_ts"]
        if expires is None or offer["redeemed"] or expires <= now_ts:
            continue
        days = math.floor((expires - now_ts) / 86400)
        soonest = min(soonest, expires - days * 86400)
    return soonest


def empty_wallet(*, user_id: str, culture: str, error: dict) -> dict:
    """The `on_error=empty` body: same keys, no offers, zero points, `ok: false` and the error."""
    return {
        "ok": False,
        "error": error,
        "stale": False,
        "user_id": user_id,
        "culture": culture,
        "available_points": 0,
        "total_points": 0,
        "offer_count": 0,
        "offers": [],
        "groups": [],
        "categories": [],
        "user": {"opted_in": None, "activated": None},
        "fetched_at": None,
        "truncated": False,
    }
