"""Cache keys: pure functions, shared by the in-process and the Redis store.

Every key of one user carries `{user_id}` as its Redis Cluster hash tag: only the part between the
braces is hashed, so a user's wallet and locks live in one slot and a script or transaction over
them runs on one node (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
#hash-tags). User ids never hold braces (ids.valid_user_id), so the tag is always the whole id.
"""
from __future__ import annotations

PREFIX = "wp:v1"
# Purge notices: every process drops the named user's entries from its near cache (redis_store.py).
PURGE_CHANNEL = f"{PREFIX}:purge"


def wallet_key(user_id: str) -> str:
    """One key per user; cultures are fields under it, so forgetting a user is one delete."""
    return f"{PREFIX}:wallet:{{{user_id}}}"


def flight_key(user_id: str, culture: str) -> str:
    """The single-flight lock of one (user, culture) fetch, in the slot of the user's wallet."""
    return f"{PREFIX}:lock:{{{user_id}}}:{culture}"
