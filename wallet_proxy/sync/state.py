"""What Braze last accepted for each profile, so a sync sends only what changed.

Three homes, one interface (`get_many(ids) -> {id: attributes}`, `put_many({id: attributes})`):
Redis when WALLET_PROXY_REDIS_URL is set (shared by every process and by the CLI), else the
route's process memory, else the CLI's state file (SQLite, beside the input). Only attributes Braze
accepted are ever written here. Losing a record costs a resend (data points), never a missed change.
"""
from __future__ import annotations

import json
import logging
import threading

from cachetools import LRUCache

from ..bulk.journal import json_object, private_database

log = logging.getLogger(__name__)

PREFIX = "wp:v1:sync:"
REDIS_TTL = 90 * 86400  # a profile not synced for 90 days is sent in full once more


def _readable(rows) -> dict:
    """{user_id: attributes} of (user_id, stored text) rows, leaving out absent and unreadable ones."""
    found = {}
    for user_id, raw in rows:
        value = json_object(raw) if raw is not None else None
        if value is not None:
            found[user_id] = value
    return found


def _encode(attributes: dict) -> str:
    return json.dumps(attributes, separators=(",", ":"), sort_keys=True)


class MemoryState:
    """Per process, LRU-bounded: the route's memory when there is no Redis."""

    name = "memory"

    def __init__(self, maxsize: int = 100_000):
        self._cache: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

    def get_many(self, ids) -> dict:
        with self._lock:
            return {i: dict(self._cache[i]) for i in ids if i in self._cache}

    def put_many(self, records: dict) -> None:
        with self._lock:
            for user_id, attributes in records.items():
                self._cache[user_id] = dict(attributes)

    def close(self) -> None:
        pass


class RedisState:
    """One string key per profile. A Redis error reads as "unknown" (send all), never as "unchanged"."""

    name = "redis"

    def __init__(self, client, ttl: int = REDIS_TTL):
        self.client = client
        self.ttl = ttl

    def get_many(self, ids) -> dict:
        ids = list(ids)
        if not ids:
            return {}
        try:
            # One key per GET: under Redis Cluster the keys of a batch live in different slots.
            pipe = self.client.pipeline(transaction=False)
            for user_id in ids:
                pipe.get(PREFIX + user_id)
            raws = pipe.execute()
        except Exception as exc:  # redis.RedisError and cluster errors alike: resend rather than fail
            log.warning("sync state: Redis unreadable (%s); sending every attribute", type(exc).__name__)
            return {}
        return _readable(zip(ids, raws))

    def put_many(self, records: dict) -> None:
        if not records:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for user_id, attributes in records.items():
                pipe.set(PREFIX + user_id, _encode(attributes), ex=self.ttl)
            pipe.execute()
        except Exception as exc:
            log.warning("sync state: Redis unwritable (%s); these profiles are sent again next time",
                        type(exc).__name__)

    def close(self) -> None:
        pass


class FileState:
    """The CLI's state file (SQLite, WAL): outlives the run, survives kill -9 once a batch is recorded."""

    name = "file"

    def __init__(self, path: str):
        """Open or create the state file; FileError (one line for the operator) for any problem with it.

        Created 0600; refused: a symbolic link (the file, its -wal or -shm), and an existing file others
        may read or write -- whoever can write it can mark profiles "already synced".
        """
        self.path = path
        self.db = private_database(path, "state file", (
            "CREATE TABLE IF NOT EXISTS synced (user_id TEXT PRIMARY KEY, attributes TEXT)",))
        self._lock = threading.Lock()

    def get_many(self, ids) -> dict:
        ids = list(ids)
        found = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(_readable(self.db.execute(
                    f"SELECT user_id, attributes FROM synced WHERE user_id IN ({marks})", chunk)))
        return found

    def put_many(self, records: dict) -> None:
        if not records:
            return
        with self._lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO synced VALUES (?, ?)",
                                [(k, _encode(v)) for k, v in records.items()])
            self.db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self.db.close()
