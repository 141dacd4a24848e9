"""The on-disk journal of a bulk run: each finished row's outcome, which is also the duplicate check.

One SQLite file beside the input (`FILE.csv.journal`). A row is recorded once its upstream has
answered, so a run interrupted (Ctrl-C, SIGTERM or kill -9) and started again with `--resume` skips
every finished row: only rows in flight at the interruption are looked at again. Keeping the keys on
disk keeps the importer's memory flat in the number of rows.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import stat
import threading

from .rows import FileError, private_file

DONE, REJECTED, IN_FLIGHT = 1, 2, 3  # IN_FLIGHT: sent, no answer yet (rows that must not be sent twice)


class Journal:
    """One SQLite file: each finished row's outcome (by duplicate key), and the run's identity."""

    def __init__(self, path: str, identity: dict, *, resume: bool, keep: bool = True, scratch: bool = False):
        self.path = path
        self.keep = keep
        self.scratch = scratch
        refuse_links(path, "journal")
        exists = os.path.lexists(path)
        if resume and not exists:
            raise FileError(f"{path}: no journal to resume (was the run finished, or started elsewhere?)")
        if exists and not resume:
            raise FileError(f"{path} exists from an interrupted run: add --resume to finish it, or delete "
                            f"the journal to start over (rows already sent would be sent again)")
        self.db = private_database(path, "journal", (
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)",
            "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, line INTEGER, state INTEGER)"))
        stored = self.db.execute("SELECT value FROM meta WHERE name='identity'").fetchone()
        if stored is None:
            self.db.execute("INSERT INTO meta VALUES ('identity', ?)",
                            (json.dumps(identity, sort_keys=True),))
        elif json_object(stored[0]) != identity:
            old = json_object(stored[0]) or {}
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


def refuse_links(path: str, what: str) -> None:
    """FileError when `path` or its SQLite side files (-wal, -shm) are symbolic links."""
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.islink(name):
            raise FileError(f"{name}: is a symbolic link; refusing to keep the {what} through it")


def private_database(path: str, what: str, schema=()) -> sqlite3.Connection:
    """Open the SQLite file `path` (a journal, a state file), which holds user ids; raise FileError.

    Created 0600 here (never through a link) before SQLite opens it; SQLite gives its -wal and -shm
    files the database file's permissions. Refused: a symbolic link in place of the file or of its
    -wal/-shm, something that is not a regular file, and an existing file (or side file) that others
    may read or write -- whoever could write it could have marked rows done or profiles synced.
    """
    refuse_links(path, what)
    if not os.path.lexists(path):
        os.close(private_file(path, exclusive=True))
    for name in (path, path + "-wal", path + "-shm"):
        if name == path or os.path.lexists(name):
            _check_private(name, what)
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL + synchronous=NORMAL: each commit survives kill -9 (the OS holds it) without an fsync.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in schema:
            db.execute(statement)
    except sqlite3.Error as exc:
        raise FileError(f"{path}: cannot use it as the {what} ({exc}); move it away to start over") from exc
    return db


def _check_private(path: str, what: str) -> None:
    """Refuse `path` unless it is a regular file only its owner may read and write (opened without
    following a link, so one planted after the checks above is refused too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileError(f"{path}: is a symbolic link; refusing to keep the {what} through it") from exc
        raise FileError(f"{path}: cannot open the {what}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise FileError(f"{path}: is not a regular file; cannot keep the {what} there")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise FileError(f"{path}: has permissions {mode:04o}, so others may read or change the {what}; "
                        f"check it, then chmod 600 it (or move it away to start over)")


def json_object(raw) -> dict | None:
    """The JSON object stored as `raw`, or None for anything else (absent, garbage, not an object)."""
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def stored_identity(path: str) -> dict | None:
    """The identity (file and options) an existing journal was started with, or None."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None  # the Journal refuses it in words
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT value FROM meta WHERE name='identity'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return json_object(row[0]) if row else None


def file_identity(path: str) -> dict:
    """Size and a digest of the first 64 KB: enough to notice a different file under the same name."""
    with open(path, "rb") as handle:
        head = hashlib.blake2b(handle.read(65536), digest_size=16).hexdigest()
    return {"size": os.path.getsize(path), "head": head}



def journal_path(path: str) -> str:
    return path + ".journal"
