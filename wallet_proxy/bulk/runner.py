"""The bulk runner: feed the rows of a CSV to a per-row task with bounded concurrency and rate.

No Flask: any per-row job uses it (tags import, prewarm, attribute sync); the job hands in its task.
Work is bounded (a small queue, `concurrency` workers), each row is retried on 429/5xx/timeouts by the
one retry policy of every upstream call (upstream/retry.py: rate token, Retry-After, backoff), the journal (bulk/journal.py) records each outcome and is the duplicate check, bad rows go to
the rejects CSV (bulk/rows.py) and a progress line comes regularly (bulk/progress.py).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import ApiError
from ..upstream import retry
from ..upstream.pacing import TokenBucket
from .journal import DONE, IN_FLIGHT, REJECTED, Journal
from .progress import Progress
from .rows import BadRow, Rejects, Row

log = logging.getLogger(__name__)


@dataclass
class RetryPolicy(retry.RetryPolicy):
    """The one retry policy (upstream/retry.py) with the bulk jobs' patience: 8 attempts, backoff up to
    a minute, and a server's Retry-After honoured up to 10 minutes. No deadline: the CLI waits."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 60.0
    told_cap: float = 600.0


is_retryable = retry.is_retryable


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



class Runner:
    """Feed rows to `task` with bounded concurrency and rate, retries, a journal and a rejects CSV."""

    def __init__(self, task: Callable[[Row], None], journal: Journal, rejects: Rejects, progress: Progress, *,
                 concurrency: int = 8, rate: float = 50.0, retry: RetryPolicy | None = None,
                 fatal: tuple = (), idempotent: Callable[[Row], bool] | None = None, sleep=time.sleep,
                 clock=time.monotonic):
        """`fatal`: ApiError classes after which no row can succeed (refused credentials): the run stops
        with the journal kept, so --resume continues once the cause is fixed.

        `idempotent(row)` false: sending the row twice does not do the same as once (a counter tag). Such
        a row is journalled as in flight before its first call, so a run killed while it was in flight
        does not send it again on --resume: it goes to the rejects with reason outcome_unknown.
        """
        self.task = task
        self.fatal = tuple(fatal)
        self.idempotent = idempotent or (lambda row: True)
        self.journal = journal
        self.rejects = rejects
        self.progress = progress
        self.concurrency = concurrency
        # the runner's sleep and clock, so a test's fake time reaches the policy's waits too
        self.retry = dataclasses.replace(retry or RetryPolicy(), sleep=sleep, monotonic=clock)
        # at most `rate` calls a second, evenly spaced; held for every worker when SessionM throttles
        self.bucket = TokenBucket(rate, 1.0, clock)
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
        self.progress.start()
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
                if recorded is not None and recorded[1] == IN_FLIGHT and self.idempotent(row):
                    recorded = None  # sent by the interrupted run, never answered: harmless to resend
                if recorded is None:
                    seen = "new"
                    self.in_flight.add(key)
                elif recorded[0] == row.line and recorded[1] == IN_FLIGHT:
                    seen = "unknown"  # sent by the interrupted run, never answered: it may have landed
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
        if seen == "unknown":
            self._finish(row, OUTCOME_UNKNOWN)
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
            marked = not self.idempotent(row)
            reason = self._attempt(row, marked)
            if reason is not _ABANDONED:  # an answer that came in while stopping is still recorded
                self._finish(row, reason)
            elif marked:
                # Abandoned before a call or after an answer: nothing is pending, --resume may send it.
                with self.journal.lock:
                    self.journal.forget(row.key)

    def _attempt(self, row: Row, mark: bool = False):
        """Call the task until it succeeds or fails for good; None on success, else the reason.

        With `mark`, the row is journalled as in flight before its first call (see `idempotent`).
        """
        unmarked = [mark]

        def attempt():
            if self.stopping.is_set():
                return _ABANDONED
            if unmarked[0]:
                with self.journal.lock:
                    self.journal.record(row.key, row.line, IN_FLIGHT)
                unmarked[0] = False
            self.task(row)
            return None

        def retrying(exc: ApiError, number: int, wait: float) -> None:
            with self._count_lock:
                self.summary.retries += 1
            self.progress.retried()
            # The line number, never the user id: ids stay out of logs.
            log.debug("line %d: %s (attempt %d of %d), retrying in %.2fs", row.line, exc.code, number,
                      self.retry.attempts, wait)

        def give_up(exc: ApiError, number: int, wait: float) -> ApiError:
            error = copy.copy(exc)
            error.gave_up_after = number
            return error

        try:
            return self.retry.run(attempt, take=self.bucket.take, hold=self.bucket.hold, on_retry=retrying,
                                  give_up=give_up, what="SessionM")
        except ApiError as exc:
            if isinstance(exc, self.fatal):
                self.summary.fatal = exc.message
                self.stopping.set()
                return _ABANDONED
            attempts = getattr(exc, "gave_up_after", None)
            if attempts is not None:
                return f"gave up after {attempts} attempts: {exc.code}: {exc.message}"
            return f"{exc.code}: {exc.message}"
        except Exception as exc:  # a bug must cost one row, not the run
            log.exception("unexpected error on line %s", row.line)
            return f"internal: {type(exc).__name__}"

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
OUTCOME_UNKNOWN = ("outcome_unknown: sent by the interrupted run and never answered; it may have been "
                   "applied, so it is not sent again")
