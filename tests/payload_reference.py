"""The payload reader as it was before issue #20's "one payload parser": marshmallow schemas only.

Kept in the tests as the reference the single reader (`wallet_proxy/wallet/payload.py`) is checked
against on generated payloads (tests/test_payload_fast.py): the step was to change how the payload is
read, not what comes out, nor the reasons given for what is refused. Not shipped; not the contract.
"""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load

from wallet_proxy.wallet.payload import _catalogue, _normalised_offer, _order, moment

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
    """A date, loaded as `moment()` gives it."""

    def _deserialize(self, value, attr, data, **kwargs):
        return moment(value)


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
    """What `normalise_payload(payload, fast=False)` answered before the step."""
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
        "truncated": False,
    }
    return wallet, dropped
