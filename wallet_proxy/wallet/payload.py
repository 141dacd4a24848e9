"""SessionM's get_user_offers answer in, the normalised wallet out: one reader, one pass.

Tolerant by design: unknown fields are dropped, missing ones become None, and the loose forms SessionM
is seen to send are read too (numbers as text for ids, "true"/0/1 for flags, numeric strings for
points, ISO 8601 or epoch dates). What cannot be trusted is refused: a problem in the envelope raises
ValidationError (the caller answers 502 with the field and the reason); a problem in one offer drops
that offer, reported with its field and reason. Each converter checks the plain form first, so a
plain wallet costs a few microseconds an offer (the miss's hottest work; `bench/` measures it).
"""
from __future__ import annotations

import functools
from datetime import datetime, timezone

from marshmallow import ValidationError


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


# -- the converters: the plain form first (a type check), the loose forms after ------------------------
_MISSING = object()
_STR, _INT, _FLOAT, _BOOL, _LIST, _DICT = str, int, float, bool, list, dict
_INF = (float("inf"), float("-inf"))
NULL = "Field may not be null."
NOT_A_LIST = "Not a valid list."
REQUIRED = "Missing data for required field."


def text(value) -> str | None:
    """A string; numbers are read as their text (ids are sometimes numeric)."""
    if type(value) is _STR or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValidationError("must be a string")
    return str(value)


def number(value) -> int | float | None:
    """An int or float (or numeric string); integral values below 2**53 come out as int (a Liquid
    template shows 1000, not 1000.0; past 2**53 an int would claim a precision it has not)."""
    if value is None:
        return None
    if type(value) is _INT and -2**53 < value < 2**53:
        return value
    if isinstance(value, bool):
        raise ValidationError("must be a number")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as exc:
            raise ValidationError("must be a number") from exc
    if not isinstance(value, (int, float)) or value != value or value in _INF:
        raise ValidationError("must be a finite number")
    try:
        return int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)
    except OverflowError as exc:  # an integer past the largest float
        raise ValidationError("must be a finite number") from exc


def record_count(value) -> int:
    """`total_records`, how many offers SessionM holds for the user: read as any number is (a numeric
    string too); 0 -- nothing more to fetch -- when it is missing or not a whole count."""
    try:
        count = number(value)
    except ValidationError:
        return 0
    return count if type(count) is _INT and count > 0 else 0


def flag(value) -> bool | None:
    """A boolean; SessionM sometimes sends "true"/"false" or 0/1."""
    if value is None or type(value) is _BOOL:
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValidationError("must be a boolean")


def _note(errors: dict | None, name: str, reason) -> dict:
    """`errors` with `name`'s reason added (a ValidationError's messages, or a text)."""
    errors = {} if errors is None else errors
    errors[name] = reason.messages if isinstance(reason, ValidationError) else [reason]
    return errors


def _entries(payload: dict, name: str, nullable: bool, errors: dict) -> list:
    """The list `payload[name]` ([] when absent, and when null if `nullable`); no entry may be null.
    Problems are noted in `errors`, as {index: [reason]} for null entries."""
    value = payload.get(name, _MISSING)
    if value is _MISSING or (value is None and nullable):
        return []
    if value is None:
        errors[name] = [NULL]
    elif type(value) is not _LIST:
        errors[name] = [NOT_A_LIST]
    elif any(item is None for item in value):
        errors[name] = {index: [NULL] for index, item in enumerate(value) if item is None}
    else:
        return value
    return []


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


_TEXTS = ("user_offer_id", "offer_id", "root_offer_id", "offer_group_id", "offer_type", "name",
          "description", "terms", "logo_uri", "pos_discount_id")
# A garbled start/end/acquire date only loses that date; a garbled expiration drops the offer (an
# offer we cannot prove unexpired is never shown).
SOFT_DATES = ("start_date", "end_date", "acquire_date")


def read_offer(item) -> dict:
    """One entry of `user_offers`, normalised; ValidationError({field: [reason]}) when it must be
    dropped. Unknown fields are ignored; every problem found is named, not just the first."""
    if type(item) is not _DICT:
        raise ValidationError("not an object")
    get = item.get
    errors = None
    texts = []
    for name in _TEXTS:
        try:
            texts.append(text(get(name)))
        except ValidationError as exc:
            errors = _note(errors, name, exc)
    media = get("media", _MISSING)
    if media is _MISSING:
        media = []
    elif media is not None and type(media) is not _LIST:
        errors = _note(errors, "media", NOT_A_LIST)
    lists = []
    for name in ("categories", "category_ids"):
        value = get(name)
        if value is not None and type(value) is not _LIST:
            errors = _note(errors, name, NOT_A_LIST)
        lists.append(value)
    try:
        redeemable = flag(get("is_redeemable"))
    except ValidationError as exc:
        errors = _note(errors, "is_redeemable", exc)
    try:
        expires = moment(get("expiration_date"))
    except ValidationError as exc:
        errors = _note(errors, "expiration_date", exc)
    if errors:
        raise ValidationError(errors)
    soft = []
    for name in SOFT_DATES:
        try:
            soft.append(moment(get(name)))
        except ValidationError:
            soft.append(None)
    start, end, issued = soft
    return _normalised_offer(*texts, media, lists[0] if lists[0] is not None else lists[1], redeemable,
                             get("redeem_date"), start, end, issued, expires)


def read_named(item) -> dict:
    """An entry of `offer_groups` or `offer_categories`: {id, name, sort_order}; the id is required.
    ValidationError when the entry is unusable: it is left out (a catalogue entry's reasons are not
    reported: no template depends on one entry of it)."""
    if type(item) is not _DICT:
        raise ValidationError("not an object")
    ident = item.get("id")
    if ident is None:
        raise ValidationError({"id": [REQUIRED]})
    return {"id": text(ident), "name": text(item.get("name")), "sort_order": number(item.get("sort_order"))}


def read_user(raw) -> dict:
    """Only what a template may see of the user, no personal data: {opted_in, activated}, both None
    unless `raw` is an object whose two flags both read."""
    if isinstance(raw, dict):
        try:
            return {"opted_in": flag(raw.get("opted_in")), "activated": flag(raw.get("activated"))}
        except ValidationError:
            pass
    return {"opted_in": None, "activated": None}


def normalise_payload(payload) -> tuple[dict, list]:
    """Read a get_user_offers `payload`; return (normalised wallet, dropped offers as (index, reasons)).

    Raises ValidationError({field: [reason]}) when the envelope itself is unusable (not an object,
    offers not a list or holding a null, points not numbers...): the caller answers 502.
    """
    if not isinstance(payload, dict):
        raise ValidationError({"payload": ["must be an object"]})
    errors: dict = {}
    offers = _entries(payload, "user_offers", False, errors)
    groups = _entries(payload, "offer_groups", True, errors)
    categories = _entries(payload, "offer_categories", True, errors)
    fields = {}
    for name, convert in (("user_id", text), ("total_points", number), ("available_points", number)):
        try:
            fields[name] = convert(payload.get(name))
        except ValidationError as exc:
            _note(errors, name, exc)
    if errors:
        raise ValidationError(errors)
    dropped: list = []
    wallet = {
        **fields,
        "user": read_user(payload.get("user")),
        "offers": _read_all(read_offer, offers, dropped),
        "groups": _catalogue(_sorted(_read_all(read_named, groups, []))),
        "categories": _catalogue(_sorted(_read_all(read_named, categories, []))),
        "truncated": False,  # set when SessionM held more offers than were fetched
    }
    return wallet, dropped


def _read_all(read, items: list, dropped: list) -> list:
    """`read` of each item; an item that fails is left out and noted in `dropped` as (index, reasons)."""
    out = []
    for index, item in enumerate(items):
        try:
            out.append(read(item))
        except ValidationError as exc:
            dropped.append((index, exc.messages))
    return out


def _sorted(named: list) -> tuple:
    return tuple((n["id"], n["name"], n["sort_order"]) for n in sorted(named, key=_order))


@functools.lru_cache(maxsize=256)
def _catalogue(pairs: tuple) -> list:
    """The retailer's offer groups (or categories) as [{id, name}], one shared list per distinct
    catalogue: every wallet carries the same few, and the view only reads them."""
    return [{"id": i, "name": n, "sort_order": o} for i, n, o in pairs]


def _order(item):
    order = item.get("sort_order")
    return (0, order) if isinstance(order, (int, float)) else (1, 0)
