"""`wallet-proxy attributes sync FILE.csv`: the loyalty attributes of every user of a CSV into Braze.

Built on the bulk runner of `tags import` (rows, journal, rejects, progress, --resume, backoff): each
row's worker reads the wallet (through the wallet route's cache and single flight; with Redis the
cache the web processes share), works out what changed since Braze last accepted that profile, and
hands the change to the Batcher, which writes 75 profiles per `/users/track` call under Braze's budget.
A row is journalled as done only once Braze accepted it and the state remembers it, so `kill -9` loses
nothing: --resume redoes only rows in flight (re-sending the same values is harmless).
"""
from __future__ import annotations

import os
import time

from ..bulk.journal import Journal, file_identity, journal_path, stored_identity
from ..bulk.progress import Progress
from ..bulk.rows import FileError, Rejects, default_rejects, read_rows, scan
from ..bulk.runner import RetryPolicy, Runner, Summary
from ..ids import EXTERNAL, ID_TYPES, parse_id_type
from ..upstream.core import CredentialsRefused
from .batch import Batcher
from .service import AttributesRefused

STATE_NAME = "wallet-proxy-attributes.state"


def default_state(path: str) -> str:
    """The state file beside the input: one per folder, so tonight's export finds last night's state."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), STATE_NAME)


def sync_attributes(path: str, sync, *, resolve=None, user_column: str | None = None, id_type: str = "seed",
                    concurrency: int = 150, rate: float = 50.0, rejects: str | None = None,
                    resume: bool = False, timeout: float = 10.0, retry: RetryPolicy | None = None,
                    linger: float | None = None, stream=None, interval: float = 10.0, sleep=time.sleep) -> Summary:
    """Sync every user of a CSV (`sync`: an AttributeSync whose state is the state file or Redis).

    `resolve(external_id, timeout) -> SessionM user id` is needed for `id_type="external"`; the Braze
    profile is always the id in the file. Raises FileError for a file or options it cannot use.
    """
    if resume:
        stored = stored_identity(journal_path(path))
        if stored:
            user_column = user_column or stored.get("user_column")
            id_type = stored.get("id_type", id_type)
    try:
        id_type = parse_id_type(id_type)  # the one vocabulary of every door (ids.py)
    except ValueError:
        raise FileError(f"--id-type: must be one of {', '.join(ID_TYPES)}, got {id_type!r}") from None
    if id_type == EXTERNAL and resolve is None:
        raise FileError("--id-type external needs the SessionM Core settings (to resolve external ids)")
    total = scan(path)
    rows = read_rows(path, user_column=user_column, need_tags=False)
    first = next(rows, None)  # reads the header now: a missing column is an error before any call
    identity = {"job": "attributes sync", **file_identity(path), "user_column": user_column or "user_id",
                "id_type": id_type}
    journal = Journal(journal_path(path), identity, resume=resume, keep=False)
    size = sync.braze.batch  # BRAZE_TRACK_BATCH
    if linger is None:  # long enough for `rate` rows to fill a call, short enough not to stall
        linger = min(5.0, max(1.0, 1.2 * size / rate))
    batcher = Batcher(sync, size=size, linger=linger)

    def task(row) -> None:
        batcher.task_started()
        try:
            deadline = time.monotonic() + timeout
            seed_id = resolve(row.user_id, timeout) if id_type == EXTERNAL else row.user_id
            (planned,) = sync.plan([(row.user_id, sync.current(seed_id, deadline))])
            if planned.obj is None:
                return  # Braze already holds these values: no call, no data point
            refused = batcher.submit(planned)
        finally:
            batcher.task_finished()
        if refused is not None:
            raise AttributesRefused(refused)

    def rows_then_flush():
        yield from _chain(first, rows)
        batcher.no_more_rows()

    runner = Runner(task, journal, Rejects(rejects or default_rejects(path), append=resume),
                    Progress("attributes sync", total, stream, interval), concurrency=concurrency, rate=rate,
                    retry=retry, fatal=(CredentialsRefused,), sleep=sleep)
    summary = runner.run(rows_then_flush())
    summary.braze_calls = batcher.calls
    summary.batch_sizes = batcher.sizes
    return summary


def _chain(first, rows):
    if first is not None:
        yield first
        yield from rows
