"""marshmallow schemas: SessionM's get_user_offers answer in, normalised plain dicts out.

Tolerant by design: unknown fields are dropped, missing ones become None. What cannot be trusted is
refused: the caller maps a ValidationError on the envelope to 502, and drops a single bad offer.
"""
from __future__ import annotations

import functools
import sys
from datetime import datetime, timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load


def parse_time(value) -> datetime | None:
    """Parse SessionM's date forms (ISO 8601 with Z/offset/none, or epoch seconds) into aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValidationError("not a date")
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value / 1000 if value > 10**11 else value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValidationError("date out of range") from exc
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError("not a date")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError as exc:
        raise ValidationError(f"not an ISO 8601 date: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # SessionM documents its dates as UTC
    return parsed.astimezone(timezone.utc)


def shared(value):
    """Intern a string that many cached wallets repeat (an offer's catalogue text, ids, dates).

    Thousands of users hold the same offers, so a cache of 100,000 wallets would otherwise keep
    100,000 copies of each title, description and terms. Interned strings are freed when unused.
    """
    return sys.intern(value) if isinstance(value, str) and len(value) <= 4096 else value


def iso(moment: datetime | None) -> str | None:
    """Format a UTC datetime as ISO 8601 with `Z`, to the second."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Text(fields.Field):
    """A string; numbers are accepted as their text (ids are sometimes numeric)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValidationError("must be a string")
        return str(value)


class Number(fields.Field):
    """An int or float (or numeric string); integral values come out as int."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("must be a number")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError as exc:
                raise ValidationError("must be a number") from exc
        if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
            raise ValidationError("must be a finite number")
        return int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)


class Flag(fields.Field):
    """A boolean; SessionM sometimes sends "true"/"false" or 0/1."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValidationError("must be a boolean")


class Timestamp(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        return parse_time(value)


# SessionM media items: content_type 1 image, 2 video, 4 audio, 5 web link.
IMAGE = 1


def image_uri(media) -> str | None:
    """The uri of the first media item that is an image (`content_type` 1, or none given)."""
    for item in media or ():
        if not isinstance(item, dict):
            continue
        uri = item.get("uri")
        kind = item.get("content_type")
        if isinstance(kind, bool):  # JSON true is not content type 1
            continue
        if kind is not None:
            try:
                kind = int(kind)
            except (TypeError, ValueError):
                continue
        if isinstance(uri, str) and uri and kind in (None, IMAGE):
            return uri
    return None


MEDIA_KEYS = ("uri", "content_type", "category_id", "category_name")


def media_items(media) -> list:
    """SessionM's media items, kept for view=sessionm: objects only, their documented keys only."""
    items = []
    for item in media or ():
        if isinstance(item, dict):
            items.append({k: shared(v) if isinstance(v, str) else v for k in MEDIA_KEYS
                          if isinstance(v := item.get(k), (str, int, float)) and not isinstance(v, bool)})
    return items


def _opt(field_cls, **kw):
    return field_cls(load_default=None, allow_none=True, **kw)


class OfferSchema(Schema):
    """One entry of `user_offers`, normalised to the fields the view needs."""

    class Meta:
        unknown = EXCLUDE

    user_offer_id = _opt(Text)
    offer_id = _opt(Text)
    root_offer_id = _opt(Text)
    offer_group_id = _opt(Text)
    offer_type = _opt(Text)
    name = _opt(Text)
    description = _opt(Text)
    terms = _opt(Text)
    logo_uri = _opt(Text)
    media = fields.List(fields.Raw(allow_none=True), load_default=list, allow_none=True)
    pos_discount_id = _opt(Text)
    start_date = _opt(Timestamp)
    end_date = _opt(Timestamp)
    expiration_date = _opt(Timestamp)
    acquire_date = _opt(Timestamp)
    redeem_date = fields.Raw(load_default=None, allow_none=True)
    is_redeemable = _opt(Flag)
    categories = fields.List(fields.Raw(allow_none=True), load_default=None, allow_none=True)
    category_ids = fields.List(fields.Raw(allow_none=True), load_default=None, allow_none=True)

    @pre_load
    def _soft_dates(self, data, **kwargs):
        # A garbled start/acquire date only loses that date; a garbled expiration drops the offer
        # (an offer we cannot prove unexpired is never shown), so it is left to fail validation.
        if isinstance(data, dict):
            data = dict(data)
            for name in ("start_date", "end_date", "acquire_date"):
                try:
                    parse_time(data.get(name))
                except ValidationError:
                    data[name] = None
        return data

    @post_load
    def _normalise(self, data, **kwargs):
        logo = data["logo_uri"] or image_uri(data["media"])
        raw_cats = data["categories"] if data["categories"] is not None else data["category_ids"]
        category_ids = []
        for item in raw_cats or []:
            if isinstance(item, dict):  # some clients send [{id, name}]
                item = item.get("id")
            if isinstance(item, (str, int)) and not isinstance(item, bool):
                category_ids.append(shared(str(item)))
        expires = data["expiration_date"]
        # `start_date` is when the offer became available, not when this user got it: never issued_at.
        issued = data["acquire_date"]
        redeemed = data["redeem_date"] not in (None, "", False)
        return {
            "user_offer_id": data["user_offer_id"],
            "offer_id": shared(data["offer_id"]),
            "root_offer_id": shared(data["root_offer_id"]),
            "logo_uri": shared(data["logo_uri"]),
            "media": media_items(data["media"]),
            "start_date": shared(iso(data["start_date"])),
            "end_date": shared(iso(data["end_date"])),
            "offer_type": shared(data["offer_type"]),
            "title": shared(data["name"]),
            "description": shared(data["description"]),
            "terms": shared(data["terms"]),
            "logo_url": shared(logo) or None,
            "pos_discount_id": shared(data["pos_discount_id"]),
            "group_id": shared(data["offer_group_id"]),
            "category_ids": category_ids,
            "issued_at": shared(iso(issued)),
            "expires_at": shared(iso(expires)),
            "expires_ts": expires.timestamp() if expires else None,
            "redeemed": redeemed,
            "redeemable": True if data["is_redeemable"] is None else data["is_redeemable"],
        }


class NamedSchema(Schema):
    """An entry of `offer_groups` or `offer_categories`."""

    class Meta:
        unknown = EXCLUDE

    id = Text(required=True)
    name = _opt(Text)
    sort_order = _opt(Number)


class UserSchema(Schema):
    """Only what a template may see: no personal data."""

    class Meta:
        unknown = EXCLUDE

    opted_in = _opt(Flag)
    activated = _opt(Flag)


class PayloadSchema(Schema):
    """The `payload` object of an ok answer."""

    class Meta:
        unknown = EXCLUDE

    user = fields.Raw(load_default=None, allow_none=True)
    user_id = _opt(Text)
    user_offers = fields.List(fields.Raw(), load_default=list, allow_none=False)
    offer_groups = fields.List(fields.Raw(), load_default=list, allow_none=True)
    offer_categories = fields.List(fields.Raw(), load_default=list, allow_none=True)
    total_points = _opt(Number)
    available_points = _opt(Number)


_payload = PayloadSchema()
_offer = OfferSchema()
_named = NamedSchema()
_user = UserSchema()


def _load_many(schema: Schema, items, dropped: list) -> list:
    out = []
    for index, item in enumerate(items or []):
        try:
            if not isinstance(item, dict):
                raise ValidationError("not an object")
            out.append(schema.load(item))
        except ValidationError as exc:
            dropped.append((index, exc.messages))
    return out


def normalise_payload(payload) -> tuple[dict, list]:
    """Validate a get_user_offers `payload`; return (normalised wallet, dropped items).

    Raises ValidationError when the envelope itself is unusable (not an object, offers not a list).
    """
    if not isinstance(payload, dict):
        raise ValidationError({"payload": ["must be an object"]})
    data = _payload.load(payload)
    dropped: list = []
    offers = _load_many(_offer, data["user_offers"], dropped)
    groups = sorted(_load_many(_named, data["offer_groups"], []), key=_order)
    categories = sorted(_load_many(_named, data["offer_categories"], []), key=_order)
    user = {"opted_in": None, "activated": None}
    if isinstance(data["user"], dict):
        try:
            user.update(_user.load(data["user"]))
        except ValidationError:
            pass
    wallet = {
        "user_id": data["user_id"],
        "total_points": data["total_points"],
        "available_points": data["available_points"],
        "user": user,
        "offers": offers,
        "groups": _catalogue(tuple((g["id"], g["name"], g["sort_order"]) for g in groups)),
        "categories": _catalogue(tuple((c["id"], c["name"], c["sort_order"]) for c in categories)),
        "truncated": False,  # set when SessionM held more offers than were fetched
    }
    return wallet, dropped


@functools.lru_cache(maxsize=256)
def _catalogue(pairs: tuple) -> list:
    """The retailer's offer groups (or categories) as [{id, name}], one shared list per distinct
    catalogue: every wallet carries the same few, and the view only reads them."""
    return [{"id": shared(i), "name": shared(n), "sort_order": o} for i, n, o in pairs]


def _order(item):
    order = item.get("sort_order")
    return (0, order) if isinstance(order, (int, float)) else (1, 0)
