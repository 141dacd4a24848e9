"""Identifiers the whole service checks the same way: user ids and cultures (pure; no Flask)."""
from __future__ import annotations

import re

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
