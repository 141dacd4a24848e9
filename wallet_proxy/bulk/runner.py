"""Bulk jobs over a CSV of users: `tags import` (SessionM Core tags) and `prewarm` (the shared wallet cache).

No Flask: the CLI hands in the upstream clients. Memory stays flat in the number of rows: the file is
streamed, the work queue is bounded, and the duplicate check and the journal live in one SQLite file
on disk. The journal records each row's outcome once SessionM has answered, so a run interrupted
(Ctrl-C or kill -9) and resumed with --resume skips every finished row: only rows in flight at the
interruption are sent again.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import queue
import random
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from ..errors import ApiError, UpstreamTimeout, UpstreamUnavailable
from ..ids import valid_user_id
from ..upstream.core import CredentialsRefused

log = logging.getLogger(__name__)

MAX_TAGS = 50
MAX_TAG_LENGTH = 128
DONE, REJECTED = 1, 2


class FileError(Exception):
    """The file, its journal or the options cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Row:
    """One user to process: the CSV line it came from, the user id, and its tags and ttl (tags import)."""

    line: int
    user_id: str
    tags: tuple = ()
    ttl: int | None = None

    @property
    def key(self) -> str:
        """Identity for the duplicate check: the same user with the same tags and ttl is sent once."""
        raw = "\x1f".join((self.user_id, "\x1e".join(self.tags), str(self.ttl)))
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be sent, and why (it goes to the rejects CSV)."""

    line: int
    user_id: str
    reason: str
    tags: tuple = ()
    ttl: int | None = None

    @property
    def key(self) -> str:
        return f"#line:{self.line}"


# --- reading -------------------------------------------------------------------------------------------

def check_tag(tag: str) -> str | None:
    """Return why `tag` cannot be sent to SessionM, or None when it can."""
    if not tag.strip():
        return "a tag must not be empty"
    if len(tag) > MAX_TAG_LENGTH:
        return f"tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters"
    return None


def scan(path: str) -> int:
    """Check that `path` is readable UTF-8; return its number of non-blank lines after the header.

    Decoding line by line in binary gives the exact line of a bad byte, which a text stream (decoding
    8 KB chunks) cannot; the count feeds the progress bar's ETA.
    """
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FileError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    count = 0
    with handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FileError(f"{path}: line {number} is not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                f"{exc.start + 1}); save the file as UTF-8 (Braze exports are UTF-8)") from exc
            if text.strip():
                count += 1
    return max(0, count - 1)


def read_rows(path: str, *, user_column: str | None = None, tags: Iterable[str] = (), ttl: int | None = None,
              need_tags: bool = True) -> Iterator[Row | BadRow]:
    """Stream the rows of a Braze segment export or a `user_id,tags,ttl` file; raise FileError.

    The first non-blank line is the header. A `tags` column holds `;`-separated tags and a `ttl`
    column seconds; `tags` are added to every row's own, and `ttl` applies where a row has none.
    """
    column = (user_column or "user_id").strip()
    extra = tuple(dict.fromkeys(tags))
    handle = open(path, encoding="utf-8-sig", newline="")  # utf-8-sig drops Excel's BOM
    with handle:
        reader = csv.reader(handle)
        header = None
        for cells in reader:
            if any(c.strip() for c in cells):
                header = [c.strip().lower() for c in cells]
                break
        if header is None:
            raise FileError(f"{path}: the file is empty (expected a header line naming a {column!r} column)")
        if column.lower() not in header:
            raise FileError(f"{path}: no {column!r} column in the header (columns: "
                            f"{', '.join(repr(h) for h in header[:20])}); name the user id column with "
                            f"--user-column")
        user_at = header.index(column.lower())
        tags_at = header.index("tags") if "tags" in header and need_tags else None
        ttl_at = header.index("ttl") if "ttl" in header and need_tags else None
        if need_tags and tags_at is None and not extra:
            raise FileError(f"{path}: no tags to add: give --tag TAG (repeatable) or a 'tags' column")
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank lines (and lines of empty cells) are not rows
                yield _parse(reader.line_num, cells, user_at, tags_at, ttl_at, extra, ttl)
        except csv.Error as exc:
            raise FileError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from exc


def _cell(cells: list, index: int | None) -> str:
    return cells[index].strip() if index is not None and index < len(cells) else ""


def _parse(line, cells, user_at, tags_at, ttl_at, extra, default_ttl) -> Row | BadRow:
    user_id = _cell(cells, user_at)
    if not user_id:
        return BadRow(line, "", "user_id: empty")
    own = [t.strip() for t in _cell(cells, tags_at).split(";") if t.strip()] if tags_at is not None else []
    tags = tuple(dict.fromkeys(own + list(extra)))
    ttl_text = _cell(cells, ttl_at)
    ttl = default_ttl
    if ttl_text:
        try:
            ttl = int(ttl_text)
        except ValueError:
            ttl = None
        if ttl is None or ttl <= 0:
            return BadRow(line, user_id, f"ttl: must be a positive whole number of seconds, got {ttl_text[:20]!r}",
                          tags)
    if not valid_user_id(user_id):
        return BadRow(line, user_id[:128], "user_id: must be 1-128 ASCII letters, digits or -_.@:+", tags, ttl)
    if tags_at is not None or extra:
        if not tags:
            return BadRow(line, user_id, "tags: none (empty tags cell and no --tag)", tags, ttl)
        if len(tags) > MAX_TAGS:
            return BadRow(line, user_id, f"tags: {len(tags)} tags, at most {MAX_TAGS}", tags, ttl)
        for tag in tags:
            problem = check_tag(tag)
            if problem:
                return BadRow(line, user_id, f"tags: {problem}", tags, ttl)
    return Row(line, user_id, tags, ttl)


# --- pacing --------------------------------------------------------------------------------------------

class RateLimiter:
    """At most `rate` calls per second across threads; `hold` pauses everyone (SessionM throttling)."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate
        self.clock = clock
        self.sleep = sleep
        self._next = clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller's slot comes."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """Give no slot for `seconds` from now."""
        with self._lock:
            self._next = max(self._next, self.clock() + seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter on 429/5xx/timeouts; a Retry-After from SessionM is a floor."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 60.0
    retry_after_cap: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng=random.random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = min(self.cap, self.base * 2 ** (attempt - 1))
        backoff = backoff / 2 + rng() * backoff / 2  # "equal jitter": spreads retries, keeps a floor
        return max(backoff, min(retry_after or 0.0, self.retry_after_cap))


def is_retryable(exc: ApiError) -> bool:
    """429, 5xx, refused connections and timeouts are worth another try; other errors are final."""
    return isinstance(exc, (UpstreamUnavailable, UpstreamTimeout))


# --- the journal ---------------------------------------------------------------------------------------

class Journal:
    """One SQLite file: each finished row's outcome (by duplicate key), and the run's identity."""

    def __init__(self, path: str, identity: dict, *, resume: bool, keep: bool = True, scratch: bool = False):
        self.path = path
        self.keep = keep
        self.scratch = scratch
        exists = os.path.exists(path)
        if resume and not exists:
            raise FileError(f"{path}: no journal to resume (was the run finished, or started elsewhere?)")
        if exists and not resume:
            raise FileError(f"{path} exists from an interrupted run: add --resume to finish it, or delete "
                            f"the journal to start over (rows already sent would be sent again)")
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL + synchronous=NORMAL: each commit survives kill -9 (the OS holds it) without an fsync.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, line INTEGER, state INTEGER)")
        stored = self.db.execute("SELECT value FROM meta WHERE name='identity'").fetchone()
        if stored is None:
            self.db.execute("INSERT INTO meta VALUES ('identity', ?)", (json.dumps(identity, sort_keys=True),))
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

    def close(self, finished: bool) -> None:
        """Close; a finished run's journal is deleted unless asked to keep it."""
        self.db.close()
        if (finished and not self.keep) or self.scratch:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.remove(self.path + suffix)
                except FileNotFoundError:
                    pass


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


# --- progress ------------------------------------------------------------------------------------------

class Progress:
    """A tqdm bar (rate, ETA) on a terminal; otherwise a plain line every `interval` seconds."""

    def __init__(self, label: str, total: int, stream=None, interval: float = 10.0, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.label = label
        self.total = total
        self.interval = interval
        self.clock = clock
        self.done = self.rejected = 0
        self.started = self._last = clock()
        self._lock = threading.Lock()
        self.bar = None
        isatty = getattr(self.stream, "isatty", lambda: False)
        if isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="row", file=self.stream, desc=label, dynamic_ncols=True,
                            smoothing=0.1)

    def advance(self, rejected: bool = False) -> None:
        """Count one finished row."""
        with self._lock:
            self.done += 1
            self.rejected += rejected
            if self.bar is not None:
                self.bar.update(1)
                if rejected:
                    self.bar.set_postfix(rejected=self.rejected, refresh=False)
                return
            now = self.clock()
            if now - self._last >= self.interval:
                self._last = now
                self.stream.write(self.line(now) + "\n")
                self.stream.flush()

    def line(self, now: float) -> str:
        """The plain progress line: count, percentage, rate, ETA, rejects."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        eta = _duration(left / rate) if rate > 0 else "?"
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.done}/{self.total} rows ({percent:.1f}%), {rate:.1f} rows/s, "
                f"ETA {eta}, {self.rejected} rejected")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --- the runner ----------------------------------------------------------------------------------------

@dataclass
class Summary:
    """What a run did, for the closing line and the exit status."""

    rows: int = 0
    sent: int = 0
    earlier: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    interrupted: bool = False
    fatal: str | None = None
    seconds: float = 0.0
    rejects_path: str | None = None
    by_reason: dict = field(default_factory=dict)

    def text(self, label: str, verb: str) -> str:
        """One line a person reads at the end of the run."""
        parts = [f"{self.rows} rows", f"{self.sent} {verb}"]
        if self.earlier:
            parts.append(f"{self.earlier} done by the interrupted run")
        parts.append(f"{self.duplicates} duplicates skipped")
        parts.append(f"{self.rejected} rejected" + (f" (see {self.rejects_path})" if self.rejected else ""))
        parts.append(f"{self.retries} retries")
        parts.append(f"{self.seconds:.1f}s")
        head = "INTERRUPTED: " if self.interrupted else ("STOPPED: " if self.fatal else "")
        return f"{head}{label}: " + ", ".join(parts)


class Rejects:
    """The rejects CSV (`line,user_id,tags,ttl,reason`), opened on the first reject.

    It has the importer's own columns, so once fixed it can be imported again as it is.
    """

    HEADER = ("line", "user_id", "tags", "ttl", "reason")

    def __init__(self, path: str, append: bool):
        self.path = path
        self.append = append and os.path.exists(path)
        self._handle = None
        self._writer = None
        self._lock = threading.Lock()
        if not append and os.path.exists(path):
            os.remove(path)  # a stale rejects file from an earlier run would mislead

    def write(self, line: int, user_id: str, tags: tuple, ttl, reason: str) -> None:
        # Workers reject rows concurrently (a refused batch rejects several at once): two first writes
        # racing would each open the file and one would truncate the other's rows.
        with self._lock:
            if self._writer is None:
                self._handle = open(self.path, "a" if self.append else "w", encoding="utf-8", newline="")
                self._writer = csv.writer(self._handle)
                if not self.append:
                    self._writer.writerow(self.HEADER)
            self._writer.writerow((line, user_id, ";".join(tags), "" if ttl is None else ttl, reason))
            self._handle.flush()  # before the journal says "rejected", so kill -9 never loses a reject

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class Runner:
    """Feed rows to `task` with bounded concurrency and rate, retries, a journal and a rejects CSV."""

    def __init__(self, task: Callable[[Row], None], journal: Journal, rejects: Rejects, progress: Progress, *,
                 concurrency: int = 8, rate: float = 50.0, retry: RetryPolicy | None = None,
                 sleep=time.sleep, clock=time.monotonic):
        self.task = task
        self.journal = journal
        self.rejects = rejects
        self.progress = progress
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter(rate, clock=clock, sleep=sleep)
        self.sleep = sleep
        self.clock = clock
        self.summary = Summary(rejects_path=rejects.path)
        self.stopping = threading.Event()
        self.in_flight: set = set()
        self._queue: queue.Queue = queue.Queue(maxsize=concurrency * 4)
        self._count_lock = threading.Lock()

    def run(self, rows: Iterable[Row | BadRow]) -> Summary:
        """Process every row (or stop on Ctrl-C / a fatal error) and return the summary."""
        started = self.clock()
        workers = [threading.Thread(target=self._work, daemon=True, name=f"import-{i}")
                   for i in range(self.concurrency)]
        for worker in workers:
            worker.start()
        finished = False
        try:
            for row in rows:
                if self.stopping.is_set():
                    break
                self._dispatch(row)
            finished = not self.stopping.is_set()
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self.stopping.set()
        finally:
            try:
                for _ in workers:
                    self._put(None, force=True)
                for worker in workers:
                    # Interrupted: workers drop queued rows and finish their current call (bounded by
                    # the call's timeout); rows not recorded are sent again by --resume.
                    while worker.is_alive():
                        worker.join(0.2)
            except KeyboardInterrupt:  # a second Ctrl-C: leave now, the journal is consistent
                self.summary.interrupted = True
                finished = False
            self.summary.seconds = self.clock() - started
            self.progress.close()
            self.rejects.close()
            self.journal.close(finished and not self.summary.interrupted and not self.summary.fatal)
        return self.summary

    def _put(self, item, force: bool = False) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if self.stopping.is_set() and not force:
                    return
                if force and self.stopping.is_set():
                    self._drain()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _dispatch(self, row: Row | BadRow) -> None:
        self.summary.rows += 1
        key = row.key
        with self.journal.lock:
            # In-flight first, then the journal: a worker records a row before leaving in_flight, so a
            # duplicate is caught by one or the other.
            if key in self.in_flight:
                seen = "duplicate"
            else:
                recorded = self.journal.lookup(key)
                if recorded is None:
                    seen = "new"
                    self.in_flight.add(key)
                elif recorded[0] == row.line:
                    seen = "rejected" if recorded[1] == REJECTED else "earlier"
                else:
                    seen = "duplicate"
        if seen == "new":
            if isinstance(row, BadRow):
                self._finish(row, row.reason)
            else:
                self._put(row)
            return
        with self._count_lock:
            if seen == "duplicate":
                self.summary.duplicates += 1
            elif seen == "earlier":
                self.summary.earlier += 1
            else:
                self.summary.rejected += 1
        self.progress.advance(rejected=seen == "rejected")

    def _work(self) -> None:
        while True:
            row = self._queue.get()
            if row is None:
                return
            if self.stopping.is_set():
                continue
            reason = self._attempt(row)
            if reason is not _ABANDONED:  # an answer that came in while stopping is still recorded
                self._finish(row, reason)

    def _attempt(self, row: Row):
        """Call the task until it succeeds or fails for good; None on success, else the reason."""
        for attempt in range(1, self.retry.attempts + 1):
            self.limiter.wait()
            if self.stopping.is_set():
                return _ABANDONED
            try:
                self.task(row)
                return None
            except CredentialsRefused as exc:
                self.summary.fatal = exc.message
                self.stopping.set()
                return _ABANDONED
            except ApiError as exc:
                if not is_retryable(exc):
                    return f"{exc.code}: {exc.message}"
                if attempt == self.retry.attempts:
                    return f"gave up after {attempt} attempts: {exc.code}: {exc.message}"
                hint = getattr(exc, "upstream_retry_after", None)
                wait = self.retry.delay(attempt, hint)
                if exc.status == 429:
                    self.limiter.hold(wait)  # SessionM is throttling: slow every worker, not just this one
                with self._count_lock:
                    self.summary.retries += 1
                self.sleep(wait)
                if self.stopping.is_set():
                    return _ABANDONED
            except Exception as exc:  # a bug must cost one row, not the run
                log.exception("unexpected error on line %s", row.line)
                return f"internal: {type(exc).__name__}"
        return "gave up"  # pragma: no cover - the loop always returns

    def _finish(self, row: Row | BadRow, reason: str | None) -> None:
        if reason is not None:
            self.rejects.write(row.line, row.user_id, row.tags, row.ttl, reason)
        with self.journal.lock:
            self.journal.record(row.key, row.line, REJECTED if reason else DONE)
            self.in_flight.discard(row.key)
        with self._count_lock:
            if reason is None:
                self.summary.sent += 1
            else:
                self.summary.rejected += 1
                short = reason.split(":")[0]
                self.summary.by_reason[short] = self.summary.by_reason.get(short, 0) + 1
        self.progress.advance(rejected=reason is not None)


_ABANDONED = object()  # the run is stopping: leave the row unrecorded so --resume sends it


# --- the two jobs --------------------------------------------------------------------------------------

def journal_path(path: str) -> str:
    return path + ".journal"


def default_rejects(path: str) -> str:
    """FILE.csv -> FILE.rejects.csv"""
    root, ext = os.path.splitext(path)
    return f"{root}.rejects{ext or '.csv'}"


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
                    retry=retry, sleep=sleep)
    return runner.run(_chain(first, rows))


def prewarm(path: str, fetch: Callable[[str], None], *, user_column: str | None = None, concurrency: int = 8,
            rate: float = 50.0, rejects: str | None = None, retry: RetryPolicy | None = None, stream=None,
            interval: float = 10.0, sleep=time.sleep) -> Summary:
    """Call `fetch(user_id)` (fetch a wallet, store it in the shared cache) once per user of a CSV."""
    import tempfile

    total = scan(path)
    rows = read_rows(path, user_column=user_column, need_tags=False)
    first = next(rows, None)
    # Prewarming twice is harmless, so no resume: the journal is only the on-disk duplicate check.
    handle, scratch = tempfile.mkstemp(prefix="wallet-proxy-prewarm-", suffix=".sqlite")
    os.close(handle)
    os.remove(scratch)
    journal = Journal(scratch, {"job": "prewarm"}, resume=False, scratch=True)
    runner = Runner(lambda row: fetch(row.user_id), journal, Rejects(rejects or default_rejects(path), False),
                    Progress("prewarm", total, stream, interval), concurrency=concurrency, rate=rate,
                    retry=retry, sleep=sleep)
    return runner.run(_chain(first, rows))


def _chain(first, rows):
    if first is not None:
        yield first
        yield from rows
