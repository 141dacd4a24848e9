"""Identifiers the whole service checks the same way: user ids, id types, cultures and query flags
(pure; no Flask, no requests)."""
from __future__ import annotations

import re

from marshmallow import ValidationError, fields

from .errors import InvalidRequest

DEFAULT_CULTURE = "en-US"
_CULTURE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?\Z")
_USER_ID = re.compile(r"^[A-Za-z0-9\-_.@:+]{1,128}\Z")


def valid_user_id(user_id: str) -> bool:
    """SPEC: 1-128 ASCII letters, digits and `-_.@:+`, not made of dots alone."""
    return bool(_USER_ID.match(user_id)) and user_id.strip(".") != ""


def normalise_culture(value: str | None) -> str:
    """Return a canonical BCP 47 tag (`fr-fr` -> `fr-FR`); empty means en-US; raise ValueError."""
    if value is None or value.strip() == "":
        return DEFAULT_CULTURE
    value = value.strip().replace("_", "-")
    if not _CULTURE.match(value):
        raise ValueError("must be a BCP 47 language tag such as fr or fr-FR")
    parts = value.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        out.append(part.title() if len(part) == 4 else part.upper())
    return "-".join(out)


def check_user_id(user_id: str) -> None:
    """Raise InvalidRequest unless `user_id` is in the SPEC's alphabet (never sent upstream then)."""
    if not valid_user_id(user_id):
        raise InvalidRequest("user_id must be 1-128 ASCII letters, digits or -_.@:+ (not only dots)",
                             details={"user_id": ["invalid characters or length"]})

# One id_type vocabulary for every door (wallet, tags, sync, the CLI): `seed` is SessionM's own user
# id (`user_id` is accepted as its other name, the tags route's former default), `external` the
# customer's external id, resolved through Core.
SEED, EXTERNAL = "seed", "external"
ID_TYPES = (SEED, "user_id", EXTERNAL)


def parse_id_type(value: str | None) -> str:
    """The canonical id type of a query's `id_type` (absent: seed); ValueError for anything else."""
    if value is None:
        return SEED
    if value not in ID_TYPES:
        raise ValueError(f"must be one of {', '.join(ID_TYPES)}")
    return EXTERNAL if value == EXTERNAL else SEED


# One boolean flag rule for every query flag (`?dry_run=`): exactly `1` or `0`. A blank `?dry_run`,
# `true`, `TRUE` or `yes` is refused, never guessed: a guess that reads "no" sends for real.
FLAG_VALUES = {"1": True, "0": False}


def parse_flag(value: str | None, default: bool = False) -> bool:
    """A query flag: absent -> `default`; "1" -> True; "0" -> False; anything else ValueError."""
    if value is None:
        return default
    try:
        return FLAG_VALUES[value]
    except KeyError:
        raise ValueError("must be 1 or 0") from None


def check_id_type(value: str | None) -> str:
    """parse_id_type as a 400 naming the field (routes and the CLI share it)."""
    try:
        return parse_id_type(value)
    except ValueError as exc:
        raise InvalidRequest(f"invalid query: id_type: {exc}", details={"id_type": [str(exc)]}) from None


def check_flag(name: str, value: str | None, default: bool = False) -> bool:
    """parse_flag as a 400 naming the flag."""
    try:
        return parse_flag(value, default)
    except ValueError as exc:
        raise InvalidRequest(f"invalid query: {name}: {exc}", details={name: [str(exc)]}) from None


class IdTypeField(fields.String):
    """`id_type` in a marshmallow query schema: the one vocabulary, loaded as its canonical name."""

    def __init__(self, **kwargs):
        kwargs.setdefault("load_default", SEED)
        kwargs.setdefault("metadata", {"enum": list(ID_TYPES), "description":
                                       "`external`: the id is the customer's external id (resolved "
                                       "through SessionM Core); `seed` (or `user_id`): SessionM's own"})
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_id_type(super()._deserialize(value, attr, data, **kwargs))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
