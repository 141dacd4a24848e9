"""The bulk jobs of the command line: `tags import` (SessionM Core tags) and `prewarm` (the shared cache).

Each job reads its rows with bulk/rows.py and hands a per-row task to the runner (bulk/runner.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Callable, Iterable

from ..ids import DEFAULT_CULTURE
from ..tags.rules import MAX_TAGS, check_tag
from ..upstream.core import CredentialsRefused
from .journal import Journal, file_identity, journal_path, stored_identity
from .progress import Progress
from .rows import FileError, Rejects, Row, default_rejects, read_rows, scan
from .runner import RetryPolicy, Runner, Summary


def import_tags(path: str, core, *, user_column: str | None = None, tags: Iterable[str] = (),
                ttl: int | None = None, concurrency: int = 8, rate: float = 50.0, rejects: str | None = None,
                resume: bool = False, timeout: float = 10.0, retry: RetryPolicy | None = None,
                stream=None, interval: float = 10.0, sleep=time.sleep) -> Summary:
    """Add tags to every user of a CSV through SessionM Core (`core.add_tags`); raise FileError.

    With `resume`, options left unset are those of the interrupted run (read from its journal).
    """
    if resume:
        stored = stored_identity(journal_path(path))
        if stored:
            user_column = user_column or stored.get("user_column")
            tags = tags or stored.get("tags") or ()
            ttl = ttl if ttl is not None else stored.get("ttl")
    tags = tuple(dict.fromkeys(t.strip() for t in tags))
    for tag in tags:
        problem = check_tag(tag)
        if problem:
            raise FileError(f"--tag: {problem}")
    if len(tags) > MAX_TAGS:
        raise FileError(f"--tag: {len(tags)} tags, at most {MAX_TAGS}")
    total = scan(path)
    rows = read_rows(path, user_column=user_column, tags=tags, ttl=ttl)
    first = next(rows, None)  # reads the header now: a missing column is an error before any call
    identity = {"job": "tags import", **file_identity(path), "user_column": user_column or "user_id",
                "tags": list(tags), "ttl": ttl}
    journal = Journal(journal_path(path), identity, resume=resume, keep=False)
    runner = Runner(lambda row: core.add_tags(row.user_id, list(row.tags), row.ttl, timeout), journal,
                    Rejects(rejects or default_rejects(path), append=resume),
                    Progress("tags import", total, stream, interval), concurrency=concurrency, rate=rate,
                    retry=retry, fatal=(CredentialsRefused,), sleep=sleep,
                    idempotent=lambda row: row.ttl is not None)  # a tag without ttl is a counter
    return runner.run(_chain(first, rows))


def prewarm(path: str, fetch: Callable[[str, str], None], *, cultures: Iterable[str] = (),
            user_column: str | None = None, concurrency: int = 8, rate: float = 50.0,
            rejects: str | None = None, retry: RetryPolicy | None = None, stream=None, interval: float = 10.0,
            sleep=time.sleep) -> Summary:
    """Call `fetch(user_id, culture)` (fetch a wallet, store it in the shared cache) for every user of a
    CSV and each of its cultures: the row's own (a `culture` or `language` column), then `cultures`
    (normalised, from --culture), or en-US when neither gives one. That is the key a send's
    `culture={{${language}}}` reads, so the send's calls are hits."""
    extra = tuple(dict.fromkeys(cultures))
    total = scan(path)
    rows = read_rows(path, user_column=user_column, need_tags=False, cultures=True)
    first = next(rows, None)
    # Prewarming twice is harmless, so no resume: the journal is only the on-disk duplicate check, in a
    # private (0700) folder of its own.
    folder = tempfile.mkdtemp(prefix="wallet-proxy-prewarm-")
    try:
        journal = Journal(os.path.join(folder, "journal.sqlite"), {"job": "prewarm"}, resume=False,
                          scratch=True)

        def task(row: Row) -> None:
            for culture in dict.fromkeys(([row.culture] if row.culture else []) + list(extra)) or (
                    DEFAULT_CULTURE,):
                fetch(row.user_id, culture)

        runner = Runner(task, journal, Rejects(rejects or default_rejects(path), False),
                        Progress("prewarm", total, stream, interval), concurrency=concurrency, rate=rate,
                        retry=retry, fatal=(CredentialsRefused,), sleep=sleep)
        return runner.run(_chain(first, rows))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _chain(first, rows):
    if first is not None:
        yield first
        yield from rows
