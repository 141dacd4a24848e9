"""marshmallow schemas: SessionM's get_user_offers answer in, normalised plain dicts out.

Tolerant by design: unknown fields are dropped, missing ones become None. What cannot be trusted is
refused: the caller maps a ValidationError on the envelope to 502, and drops a single bad offer.
"""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=8192, typed=True)  # typed: True and 1 are different dates; ~2 MB at most
def _moment(value) -> tuple | None:
    moment = parse_time(value)
    return None if moment is None else (iso(moment), moment.timestamp())


def moment(value) -> tuple | None:
    """A SessionM date as (ISO 8601 UTC text with `Z`, epoch seconds), or None; ValidationError if
    unreadable. Remembered per distinct value: thousands of wallets repeat the same few dates."""
    try:
        return _moment(value)
    except TypeError as exc:  # unhashable: a list or an object is not a date
        raise ValidationError("not a date") from exc


class Timestamp(fields.Field):
    """A date, loaded as `moment()` gives it."""

    def _deserialize(self, value, attr, data, **kwargs):
        return moment(value)


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
            items.append({k: v for k in MEDIA_KEYS
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
            for name in SOFT_DATES:
                try:
                    moment(data.get(name))
                except ValidationError:
                    data[name] = None
        return data

    @post_load
    def _normalise(self, data, **kwargs):
        return offer_out(data)


SOFT_DATES = ("start_date", "end_date", "acquire_date")


def offer_out(data: dict) -> dict:
    """The normalised offer from its loaded fields (texts as text, dates as `moment()` pairs)."""
    return _normalised_offer(
        data["user_offer_id"], data["offer_id"], data["root_offer_id"], data["offer_group_id"], data["offer_type"],
        data["name"], data["description"], data["terms"], data["logo_uri"], data["pos_discount_id"], data["media"],
        data["categories"] if data["categories"] is not None else data["category_ids"], data["is_redeemable"],
        data["redeem_date"], data["start_date"], data["end_date"], data["acquire_date"], data["expiration_date"])


def _normalised_offer(user_offer_id, offer_id, root_offer_id, group_id, offer_type, name, description, terms,
                      logo_uri, pos_discount_id, media, raw_categories, flag, redeem_date, start, end, issued,
                      expires) -> dict:
    """The normalised offer; both readings (the schemas, the fast path) end here."""
    category_ids = []
    for entry in raw_categories or ():
        if isinstance(entry, dict):  # some clients send [{id, name}]
            entry = entry.get("id")
        if isinstance(entry, (str, int)) and not isinstance(entry, bool):
            category_ids.append(str(entry))
    logo = logo_uri or image_uri(media)
    # `start_date` is when the offer became available, not when this user got it: never issued_at.
    return {
        "user_offer_id": user_offer_id,
        "offer_id": offer_id,
        "root_offer_id": root_offer_id,
        "logo_uri": logo_uri,
        "media": media_items(media),
        "start_date": start and start[0],
        "end_date": end and end[0],
        "offer_type": offer_type,
        "title": name,
        "description": description,
        "terms": terms,
        "logo_url": logo or None,
        "pos_discount_id": pos_discount_id,
        "group_id": group_id,
        "category_ids": category_ids,
        "issued_at": issued and issued[0],
        "expires_at": expires and expires[0],
        "expires_ts": expires and expires[1],
        "redeemed": redeem_date not in (None, "", False),
        "redeemable": True if flag is None else flag,
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


# -- the fast path ---------------------------------------------------------------------------------
# A miss normalises every offer of a wallet. Loading each through marshmallow costs ~0.1 ms an offer,
# most of a miss's CPU, although SessionM's offers nearly always arrive in one plain form. So each
# item is first read by the functions below, which accept only that plain form (text as text, dates
# as ISO text or epoch numbers, flags as booleans, lists as lists) and give exactly what the schemas
# above give for it; anything else (a numeric string, "true", an unreadable expiry, a missing id...)
# returns None and the schema decides, with its error messages. The schemas stay the contract;
# tests/test_payload_fast.py holds the two paths equal on generated payloads.

_MISSING = object()
_TEXTS = ("user_offer_id", "offer_id", "root_offer_id", "offer_group_id", "offer_type", "name",
          "description", "terms", "logo_uri", "pos_discount_id")
_STR, _INT, _FLOAT, _BOOL, _LIST = str, int, float, bool, list


def _text(value):
    """What `Text` loads for a str/number/None, else _MISSING."""
    kind = type(value)
    if kind is _STR or value is None:
        return value
    if kind is _INT or kind is _FLOAT:
        return str(value)
    return _MISSING


def _number(value):
    """What `Number` loads for an int/float/None that needs no conversion doubt, else _MISSING."""
    kind = type(value)
    if value is None:
        return None
    if kind is _INT and -2**53 < value < 2**53:
        return value
    if kind is _FLOAT and value == value and value not in (float("inf"), float("-inf")):
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return _MISSING


def fast_offer(item: dict) -> dict | None:
    """`OfferSchema().load(item)` for an offer in the plain form, else None (let the schema decide).

    Reads the fields in one pass, without the intermediate dict the schema path fills."""
    get = item.get
    texts = []
    for key in _TEXTS:
        value = get(key)
        kind = type(value)
        if kind is not _STR and value is not None:
            if kind is _INT or kind is _FLOAT:
                value = str(value)
            else:
                return None
        texts.append(value)
    media = get("media", _MISSING)
    if media is _MISSING:
        media = []
    elif media is not None and type(media) is not _LIST:
        return None
    categories, category_list = get("categories"), get("category_ids")
    if (categories is not None and type(categories) is not _LIST) or (
            category_list is not None and type(category_list) is not _LIST):
        return None
    flag = get("is_redeemable")
    if flag is not None and type(flag) is not _BOOL:
        return None
    try:
        expires = moment(get("expiration_date"))
    except ValidationError:
        return None
    soft = []
    for key in SOFT_DATES:
        try:
            soft.append(moment(get(key)))
        except ValidationError:
            soft.append(None)
    start, end, issued = soft
    return _normalised_offer(*texts, media, categories if categories is not None else category_list, flag,
                             get("redeem_date"), start, end, issued, expires)


def fast_named(item: dict) -> dict | None:
    """`NamedSchema().load(item)` for a plain catalogue entry, else None."""
    ident = item.get("id")
    if ident is None:
        return None
    ident, name, order = _text(ident), _text(item.get("name")), _number(item.get("sort_order"))
    if ident is _MISSING or name is _MISSING or order is _MISSING:
        return None
    return {"id": ident, "name": name, "sort_order": order}


def _has_none(items: list) -> bool:
    return any(item is None for item in items)


def fast_envelope(payload: dict) -> dict | None:
    """`PayloadSchema().load(payload)` for a plain payload, else None."""
    data = {"user": payload.get("user")}
    offers = payload.get("user_offers", _MISSING)
    if offers is _MISSING:
        offers = []
    elif type(offers) is not _LIST or _has_none(offers):  # a null entry refuses the envelope
        return None
    data["user_offers"] = offers
    for key in ("offer_groups", "offer_categories"):
        value = payload.get(key, _MISSING)
        if value is _MISSING:
            value = []
        elif value is not None and (type(value) is not _LIST or _has_none(value)):
            return None
        data[key] = value
    user_id = _text(payload.get("user_id"))
    total, available = _number(payload.get("total_points")), _number(payload.get("available_points"))
    if user_id is _MISSING or total is _MISSING or available is _MISSING:
        return None
    data.update(user_id=user_id, total_points=total, available_points=available)
    return data


_payload = PayloadSchema()
_offer = OfferSchema()
_named = NamedSchema()
_user = UserSchema()


def _load_many(schema: Schema, items, dropped: list, fast=None) -> list:
    out = []
    for index, item in enumerate(items or []):
        try:
            if not isinstance(item, dict):
                raise ValidationError("not an object")
            loaded = fast(item) if fast is not None else None
            out.append(schema.load(item) if loaded is None else loaded)
        except ValidationError as exc:
            dropped.append((index, exc.messages))
    return out


def normalise_payload(payload, fast: bool = True) -> tuple[dict, list]:
    """Validate a get_user_offers `payload`; return (normalised wallet, dropped items).

    Raises ValidationError when the envelope itself is unusable (not an object, offers not a list).
    `fast=False` loads everything through the schemas (the reference the fast path is tested against).
    """
    if not isinstance(payload, dict):
        raise ValidationError({"payload": ["must be an object"]})
    data = (fast_envelope(payload) if fast else None) or _payload.load(payload)
    dropped: list = []
    offers = _load_many(_offer, data["user_offers"], dropped, fast_offer if fast else None)
    named = fast_named if fast else None
    groups = sorted(_load_many(_named, data["offer_groups"], [], named), key=_order)
    categories = sorted(_load_many(_named, data["offer_categories"], [], named), key=_order)
    user = {"opted_in": None, "activated": None}
    raw_user = data["user"]
    if isinstance(raw_user, dict):
        flags = (raw_user.get("opted_in"), raw_user.get("activated"))
        if fast and all(flag is None or type(flag) is _BOOL for flag in flags):
            user = {"opted_in": flags[0], "activated": flags[1]}
        else:
            try:
                user.update(_user.load(raw_user))
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
    return [{"id": i, "name": n, "sort_order": o} for i, n, o in pairs]


def _order(item):
    order = item.get("sort_order")
    return (0, order) if isinstance(order, (int, float)) else (1, 0)
