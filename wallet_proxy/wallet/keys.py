"""Cache keys: pure functions, shared by the in-process and the Redis store."""
from __future__ import annotations

PREFIX = "wp:v1"


def wallet_key(user_id: str) -> str:
    """One key per user; cultures are fields under it, so forgetting a user is one delete."""
    return f"{PREFIX}:wallet:{user_id}"


def flight_key(user_id: str, culture: str) -> str:
    """The single-flight lock of one (user, culture) fetch."""
    return f"{PREFIX}:lock:{user_id}:{culture}"
