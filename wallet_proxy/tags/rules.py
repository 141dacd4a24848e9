"""What a SessionM tag is, said once for the webhook route and the CSV importer (pure; no Flask)."""
from __future__ import annotations

MAX_TAGS = 50  # per call
MAX_TAG_LENGTH = 128  # characters
MAX_TTL = 2**31 - 1  # seconds (68 years): keeps the value a 32-bit int for SessionM


def check_tag(tag: str) -> str | None:
    """Return why `tag` cannot be sent to SessionM, or None when it can."""
    if not tag.strip():
        return "a tag must not be empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters"
    return None
