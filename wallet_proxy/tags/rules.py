"""What a SessionM tag is, said once for the webhook route and the CSV importer (pure; no Flask)."""
from __future__ import annotations

import unicodedata

MAX_TAGS = 50  # per call
MAX_TAG_LENGTH = 128  # characters
MAX_TTL = 2**31 - 1  # seconds (68 years): keeps the value a 32-bit int for SessionM


def ttl_problem(value) -> str | None:
    """Why `value` is not a ttl SessionM may get (the webhook's rule, and the importer's): a whole
    number of seconds from 1 to MAX_TTL, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be a whole number of seconds"
    if not 1 <= value <= MAX_TTL:
        return f"must be between 1 and {MAX_TTL} seconds"
    return None


def parse_ttl(text: str) -> tuple[int | None, str | None]:
    """A ttl written as text (a CSV cell, `--ttl`): ASCII digits only, then `ttl_problem`.

    Returns (seconds, None) or (None, why). `int()` alone would take "1_000", "+5" or non-ASCII digits.
    """
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None, f"must be a positive whole number of seconds, got {text[:20]!r}"
    value = int(text)
    problem = ttl_problem(value)
    return (None, f"{problem}, got {text[:20]}") if problem else (value, None)


def check_tag(tag: str) -> str | None:
    """Return why `tag` cannot be sent to SessionM, or None when it can."""
    if not tag.strip():
        return "a tag must not be empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters"
    return control_character(tag)


def control_character(text: str) -> str | None:
    """Why `text` is refused when it holds a control character (a newline, a tab, NUL, DEL, C1), or None.

    A tag is a keyword classifier SessionM's targeting rules compare: an invisible character makes a tag
    that looks like another and never matches, and a newline can split a log or export line.
    """
    for char in text:
        if unicodedata.category(char) == "Cc":
            return f"must not contain control characters (found U+{ord(char):04X})"
    return None
