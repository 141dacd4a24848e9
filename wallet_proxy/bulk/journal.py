"""The on-disk journal of a bulk run: each finished row's outcome, which is also the duplicate check.

One SQLite file beside the input (`FILE.csv.journal`). A row is recorded once its upstream has
answered, so a run interrupted (Ctrl-C, SIGTERM or kill -9) and started again with `--resume` skips
every finished row: only rows in flight at the interruption are looked at again. Keeping the keys on
disk keeps the importer's memory flat in the number of rows.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading

from .rows import FileError, private_file

DONE, REJECTED, IN_FLIGHT = 1, 2, 3  # IN_FLIGHT: sent, no answer yet (rows that must not be sent twice)


class Journal:
    """One SQLite file: each finished row's outcome (by duplicate key), and the run's identity."""

    def __init__(self, path: str, identity: dict, *, resume: bool, keep: bool = True, scratch: bool = False):
        self.path = path
        self.keep = keep
        self.scratch = scratch
        for name in (path, path + "-wal", path + "-shm"):
            if os.path.islink(name):
                raise FileError(f"{name}: is a symbolic link; refusing to keep the journal through it")
        exists = os.path.lexists(path)
        if resume and not exists:
            raise FileError(f"{path}: no journal to resume (was the run finished, or started elsewhere?)")
        if exists and not resume:
            raise FileError(f"{path} exists from an interrupted run: add --resume to finish it, or delete "
                            f"the journal to start over (rows already sent would be sent again)")
        # The journal holds user ids: 0600, created here (never through a link) before SQLite opens it;
        # SQLite gives its -wal and -shm files the database file's permissions.
        os.close(private_file(path, exclusive=True) if not exists else _narrow(path))
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL + synchronous=NORMAL: each commit survives kill -9 (the OS holds it) without an fsync.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, line INTEGER, state INTEGER)")
        stored = self.db.execute("SELECT value FROM meta WHERE name='identity'").fetchone()
        if stored is None:
            self.db.execute("INSERT INTO meta VALUES ('identity', ?)",
                            (json.dumps(identity, sort_keys=True),))
        elif json.loads(stored[0]) != identity:
            old = json.loads(stored[0])
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            self.db.close()
            raise FileError(f"{path}: the file or options changed since the interrupted run "
                            f"({', '.join(changed)}); resume with the same file and options")
        self.lock = threading.Lock()

    def lookup(self, key: str) -> tuple | None:
        """(line, state) recorded for `key`, or None."""
        return self.db.execute("SELECT line, state FROM rows WHERE key=?", (key,)).fetchone()

    def record(self, key: str, line: int, state: int) -> None:
        """Commit a row's outcome (autocommit: one transaction per row)."""
        self.db.execute("INSERT OR REPLACE INTO rows VALUES (?, ?, ?)", (key, line, state))

    def forget(self, key: str) -> None:
        """Drop a row's record (an in-flight mark whose call was never made or was answered)."""
        self.db.execute("DELETE FROM rows WHERE key=?", (key,))

    def close(self, finished: bool) -> None:
        """Close; a finished run's journal is deleted unless asked to keep it."""
        self.db.close()
        if (finished and not self.keep) or self.scratch:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.remove(self.path + suffix)
                except FileNotFoundError:
                    pass


def _narrow(path: str) -> int:
    """Open an existing journal without following a link, and make it 0600; return the fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise FileError(f"{path}: cannot open the journal: {exc.strerror or exc}") from exc
    os.fchmod(fd, 0o600)
    return fd


def stored_identity(path: str) -> dict | None:
    """The identity (file and options) an existing journal was started with, or None."""
    if not os.path.exists(path):
        return None
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE name='identity'").fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    return json.loads(row[0]) if row else None


def file_identity(path: str) -> dict:
    """Size and a digest of the first 64 KB: enough to notice a different file under the same name."""
    with open(path, "rb") as handle:
        head = hashlib.blake2b(handle.read(65536), digest_size=16).hexdigest()
    return {"size": os.path.getsize(path), "head": head}



def journal_path(path: str) -> str:
    return path + ".journal"
