"""The flattened wallet view: pure functions from a normalised SessionM wallet to what Liquid reads."""
from __future__ import annotations

import math
from datetime import datetime, timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from .. import jsoncodec
from ..ids import DEFAULT_CULTURE, IdTypeField, normalise_culture
from .payload import iso

SORT_KEYS = ("expires_at", "title", "issued_at")
MAX_BODY = 1_000_000  # bytes: Braze does not cache a Connected Content body over 1 MB (its caching page)
VIEW_NAMES = ("flat", "sessionm")

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
    id_type = IdTypeField()
    view = fields.String(load_default="flat", validate=validate.OneOf(tuple(VIEW_NAMES)), metadata={
        "description": "`flat` (default), or `sessionm`: SessionM's own get_user_offers shape"})

    @validates("expiring_within_days")
    def _int_only(self, value, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("must be an integer")


# -- the answer shapes, declared once: OpenAPI (web/openapi.py) is generated from these ---------------

def _n(field_cls, **kw):
    """A field that is always present and may be null (absent values are null)."""
    return field_cls(required=True, allow_none=True, **kw)


class ErrorObject(Schema):
    code = fields.String(required=True, metadata={"description": "stable error code"})
    message = fields.String(required=True, metadata={"description": "safe to show; never a secret"})


class OfferView(Schema):
    """One offer of the flat view (the keys in the order `flatten` writes them)."""

    user_offer_id = _n(fields.String)
    offer_id = _n(fields.String)
    offer_type = _n(fields.String, metadata={"description": "SessionM's offer_type, e.g. manual_fulfillment, "
                                                            "fixed_amount_discount, percent_discount"})
    title = _n(fields.String, metadata={"description": "SessionM's name"})
    description = _n(fields.String)
    terms = _n(fields.String)
    logo_url = _n(fields.String, metadata={"description": "logo_uri, else the first image of media"})
    pos_discount_id = _n(fields.String)
    group_id = _n(fields.String)
    group_name = _n(fields.String)
    category_names = fields.List(fields.String(), required=True)
    issued_at = _n(fields.String, metadata={"format": "date-time", "description": "acquire_date"})
    expires_at = _n(fields.String, metadata={"format": "date-time"})
    expires_in_days = _n(fields.Integer, metadata={"description": "whole days left, rounded down"})
    redeemable = fields.Boolean(required=True)


class CountView(Schema):
    id = fields.String(required=True)
    name = _n(fields.String)
    offer_count = fields.Integer(required=True)


class UserView(Schema):
    opted_in = _n(fields.Boolean)
    activated = _n(fields.Boolean)


class WalletView(Schema):
    """The flattened wallet: every key always present, absent values null."""

    ok = fields.Boolean(required=True, metadata={"description": "false only with on_error=empty"})
    error = fields.Nested(ErrorObject, metadata={"description": "only with on_error=empty"})
    stale = fields.Boolean(required=True, metadata={"description": "served past its TTL"})
    user_id = fields.String(required=True)
    culture = fields.String(required=True)
    available_points = _n(fields.Float, metadata={"description": "points the user can spend now"})
    total_points = _n(fields.Float, metadata={
        "description": "SessionM's total_points: points the user has spent (SessionM's SDK documents it "
                       "so), not a balance; use available_points for the balance"})
    offer_count = fields.Integer(required=True, metadata={"description": "offers after filters"})
    offers = fields.List(fields.Nested(OfferView), required=True)
    groups = fields.List(fields.Nested(CountView), required=True)
    categories = fields.List(fields.Nested(CountView), required=True)
    user = fields.Nested(UserView, required=True)
    fetched_at = _n(fields.String, metadata={"format": "date-time"})
    truncated = fields.Boolean(required=True, metadata={
        "description": "true when the last offers were left out to keep the body under 1,000,000 bytes"})


class SessionMMedia(Schema):
    uri = fields.String()
    content_type = fields.Integer(metadata={"description": "1 image, 2 video, 4 audio, 5 web link"})
    category_id = fields.String()
    category_name = fields.String()


class SessionMOffer(Schema):
    """An entry of `user_offers` as SessionM's get_user_offers sends it (dates normalised to UTC `Z`)."""

    user_offer_id = _n(fields.String)
    offer_id = _n(fields.String)
    root_offer_id = _n(fields.String)
    offer_group_id = _n(fields.String)
    offer_type = _n(fields.String)
    name = _n(fields.String)
    description = _n(fields.String)
    terms = _n(fields.String)
    logo_uri = _n(fields.String)
    media = fields.List(fields.Nested(SessionMMedia), required=True)
    pos_discount_id = _n(fields.String)
    start_date = _n(fields.String, metadata={"format": "date-time"})
    end_date = _n(fields.String, metadata={"format": "date-time"})
    acquire_date = _n(fields.String, metadata={"format": "date-time"})
    expiration_date = _n(fields.String, metadata={"format": "date-time"})
    redeem_date = _n(fields.String, metadata={"description": "always null: redeemed offers are dropped"})
    is_redeemable = fields.Boolean(required=True)
    categories = fields.List(fields.String(), required=True)


class SessionMNamed(Schema):
    id = fields.String(required=True)
    name = _n(fields.String)
    sort_order = _n(fields.Float)


class SessionMPayload(Schema):
    user = fields.Nested(UserView, required=True, metadata={"description": "opted_in and activated only"})
    user_id = _n(fields.String)
    user_offers = fields.List(fields.Nested(SessionMOffer), required=True)
    total_records = fields.Integer(required=True, metadata={
        "description": "offers served (after dropping expired and redeemed, and the filters); more than "
                       "len(user_offers) only when the last were left out to stay under 1,000,000 bytes"})
    offer_groups = fields.List(fields.Nested(SessionMNamed), required=True)
    offer_categories = fields.List(fields.Nested(SessionMNamed), required=True)
    total_points = _n(fields.Float, metadata={
        "description": "points spent (SessionM's meaning), not a balance"})
    available_points = _n(fields.Float)


class SessionMView(Schema):
    """`view=sessionm`: SessionM's own get_user_offers answer, for templates written for the direct call."""

    status = fields.String(required=True, validate=validate.OneOf(("ok", "error")),
                           metadata={"description": "`error` only with on_error=empty"})
    payload = fields.Nested(SessionMPayload, required=True)
    errors = fields.Nested(ErrorObject, metadata={"description": "only with on_error=empty"})


# -- building the views ---------------------------------------------------------------------------------

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


def _days(offer: dict, now_ts: float) -> int | None:
    expires = offer["expires_ts"]
    return None if expires is None else math.floor((expires - now_ts) / 86400)


def select(wallet: dict, now_ts: float, query: dict) -> list:
    """The offers a view serves, in order: servable, filtered, sorted, limited (normalised offers)."""
    group_names = category_names = None
    offers = []
    for offer in wallet["offers"]:
        if not is_servable(offer, now_ts):
            continue
        if query.get("type") and offer["offer_type"] != query["type"]:
            continue
        if query.get("group"):
            group_names = group_names or {g["id"]: g["name"] for g in wallet["groups"]}
            if not _matches(offer["group_id"], query["group"], group_names):
                continue
        if query.get("category"):
            category_names = category_names or {c["id"]: c["name"] for c in wallet["categories"]}
            if not any(_matches(c, query["category"], category_names) for c in offer["category_ids"]):
                continue
        within = query.get("expiring_within_days")
        if within is not None:
            days = _days(offer, now_ts)
            if days is None or days > within:
                continue
        offers.append(offer)
    sort = query.get("sort")
    if sort:
        key = sort.lstrip("-")
        present = [o for o in offers if o[key] is not None]
        absent = [o for o in offers if o[key] is None]  # offers without the key always go last
        present.sort(key=lambda o: o[key].casefold() if key == "title" else o[key],
                     reverse=sort.startswith("-"))
        offers = present + absent
    if query.get("limit"):
        offers = offers[: query["limit"]]
    return offers


def flatten(wallet: dict, *, now: datetime, user_id: str, culture: str, fetched_at: float | None,
            stale: bool, query: dict | None = None, keep: int | None = None) -> dict:
    """Build the flat view (WalletView): drop expired/redeemed offers, resolve names, filter, sort, limit.

    `keep` leaves out the offers past that many (the body would pass 1,000,000 bytes): `truncated`.
    """
    now_ts = now.timestamp()
    offers = select(wallet, now_ts, query or {})
    truncated = bool(wallet.get("truncated"))
    if keep is not None and keep < len(offers):
        offers, truncated = offers[:keep], True
    group_names = {g["id"]: g["name"] for g in wallet["groups"]}
    category_names = {c["id"]: c["name"] for c in wallet["categories"]}
    group_counts: dict = {}
    category_counts: dict = {}
    items = []
    for offer in offers:
        group_counts[offer["group_id"]] = group_counts.get(offer["group_id"], 0) + 1
        for cid in offer["category_ids"]:
            category_counts[cid] = category_counts.get(cid, 0) + 1
        items.append({
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
            "expires_in_days": _days(offer, now_ts),
            "redeemable": offer["redeemable"],
        })
    return {
        "ok": True,
        "stale": stale,
        "user_id": user_id,
        "culture": culture,
        "available_points": wallet["available_points"],
        "total_points": wallet["total_points"],
        "offer_count": len(items),
        "offers": items,
        "groups": [{"id": g["id"], "name": g["name"], "offer_count": group_counts.get(g["id"], 0)}
                   for g in wallet["groups"]],
        "categories": [{"id": c["id"], "name": c["name"], "offer_count": category_counts.get(c["id"], 0)}
                       for c in wallet["categories"]],
        "user": {"opted_in": wallet["user"].get("opted_in"), "activated": wallet["user"].get("activated")},
        "fetched_at": None if fetched_at is None else iso(datetime.fromtimestamp(fetched_at, timezone.utc)),
        "truncated": truncated,
    }


def sessionm_view(wallet: dict, *, now: datetime, user_id: str, query: dict | None = None,
                  keep: int | None = None, **_ignored) -> dict:
    """Build `view=sessionm` (SessionMView): SessionM's own answer, minus expired and redeemed offers.

    The same offers as the flat view (filters included); `user` keeps opted_in/activated only.
    """
    offers = select(wallet, now.timestamp(), query or {})
    served = len(offers)
    if keep is not None:
        offers = offers[:keep]
    return {"status": "ok", "payload": {
        "user": {"opted_in": wallet["user"].get("opted_in"), "activated": wallet["user"].get("activated")},
        "user_id": wallet["user_id"] or user_id,
        "user_offers": [{
            "user_offer_id": o["user_offer_id"],
            "offer_id": o["offer_id"],
            "root_offer_id": o.get("root_offer_id"),
            "offer_group_id": o["group_id"],
            "offer_type": o["offer_type"],
            "name": o["title"],
            "description": o["description"],
            "terms": o["terms"],
            "logo_uri": o.get("logo_uri"),
            "media": o.get("media", []),
            "pos_discount_id": o["pos_discount_id"],
            "start_date": o.get("start_date"),
            "end_date": o.get("end_date"),
            "acquire_date": o["issued_at"],
            "expiration_date": o["expires_at"],
            "redeem_date": None,
            "is_redeemable": o["redeemable"],
            "categories": list(o["category_ids"]),
        } for o in offers],
        "total_records": served,
        "offer_groups": _named(wallet["groups"]),
        "offer_categories": _named(wallet["categories"]),
        "total_points": wallet["total_points"],
        "available_points": wallet["available_points"],
    }}


def _named(items: list) -> list:
    return [{"id": i["id"], "name": i["name"], "sort_order": i.get("sort_order")} for i in items]


VIEWS = {"flat": flatten, "sessionm": sessionm_view}


def offers_of(body: dict) -> list:
    """The offers list of either view's body."""
    return body["offers"] if "offers" in body else body["payload"]["user_offers"]


def encode(body: dict) -> bytes:
    """The compact UTF-8 JSON every wallet answer is sent as."""
    return jsoncodec.dumps(body)


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
    sizes = [len(encode(offer)) + 1 for offer in offers_of(body)]  # each offer and its comma
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
    """When (epoch seconds) a view of this wallet could next answer differently for the same query.

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


EMPTY = {"user_id": None, "total_points": 0, "available_points": 0, "user": {}, "offers": [], "groups": [],
         "categories": [], "truncated": False}
_EPOCH = datetime.fromtimestamp(0, tz=timezone.utc)


def empty_wallet(*, user_id: str, culture: str, error: dict, view: str = "flat") -> dict:
    """The `on_error=empty` body: the view of an empty wallet (zero points, no offers) and the error."""
    if view == "sessionm":
        body = sessionm_view(EMPTY, now=_EPOCH, user_id=user_id)
        return {"status": "error", "errors": error, "payload": body["payload"]}
    body = flatten(EMPTY, now=_EPOCH, user_id=user_id, culture=culture, fetched_at=None, stale=False)
    return {"ok": False, "error": error, **{k: v for k, v in body.items() if k != "ok"}}
