"""Gather the profiles that changed into `/users/track` calls of up to BRAZE_TRACK_BATCH (Flask-free).

The bulk runner hands each row to its own worker; a worker whose profile changed `submit`s it here and
waits until the call carrying it is answered, so its row is journalled as done only once Braze
accepted it (a kill -9 before that leaves the row for --resume). The worker that fills a batch sends
it; a batch no profile joined for `linger` seconds (or older than `max_wait`) is sent by a waiter, and
once the input is read a batch holding every row still in flight goes at once.
"""
from __future__ import annotations

import threading
import time

from ..errors import ApiError
from ..upstream.braze_users import MAX_OBJECTS


class _Batch:
    def __init__(self):
        self.items: list = []
        self.taken = False
        self.done = threading.Event()
        self.refused: dict = {}
        self.error: BaseException | None = None
        self.first = self.last = 0.0  # when the first and the latest profile joined (monotonic)


class Batcher:
    """Collects Planned profiles; `submit` returns Braze's reason when it refused this one, else None."""

    def __init__(self, sync, *, size: int = MAX_OBJECTS, linger: float = 1.0, budget: float = 120.0,
                 monotonic=time.monotonic):
        self.sync = sync  # sync.service.AttributeSync
        self.size = min(size, MAX_OBJECTS)
        self.linger = linger
        self.budget = budget  # seconds one call may spend on Braze's retries and rate waits
        self.max_wait = max(linger, min(30.0, 10 * linger))  # a batch still filling goes out after this
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._open = _Batch()
        self.calls = 0
        self.sizes: list = []
        self.active = 0
        self.exhausted = threading.Event()

    def task_started(self) -> None:
        """A row's worker began (it may submit soon): a batch waits for it rather than leave early."""
        with self._lock:
            self.active += 1

    def task_finished(self) -> None:
        with self._lock:
            self.active -= 1

    def no_more_rows(self) -> None:
        """The input is read: once every row still in flight waits in the batch, send it at once."""
        self.exhausted.set()

    def submit(self, planned) -> str | None:
        with self._lock:
            batch = self._open
            batch.last = self.monotonic()
            if not batch.items:
                batch.first = batch.last
            batch.items.append(planned)
            full = len(batch.items) >= self.size
            if full:
                self._take(batch)
        if full:
            self._send(batch)
        while not batch.done.wait(0.02):
            with self._lock:
                now = self.monotonic()
                mine = not batch.taken and (
                    now - batch.last >= self.linger or now - batch.first >= self.max_wait
                    or (self.exhausted.is_set() and len(batch.items) >= self.active))
                if mine:
                    self._take(batch)
            if mine:
                self._send(batch)
        if batch.error is not None:
            raise _copy(batch.error)
        return batch.refused.get(planned.profile_id)

    def _take(self, batch: _Batch) -> None:
        batch.taken = True
        self._open = _Batch()

    def _send(self, batch: _Batch) -> None:
        try:
            self.calls += 1
            self.sizes.append(len(batch.items))
            batch.refused = self.sync.write(batch.items, self.monotonic() + self.budget)
        except BaseException as exc:  # every waiter of the batch learns it failed: each row is retried
            batch.error = exc
        finally:
            batch.done.set()


def _copy(error: BaseException) -> BaseException:
    """The batch's error for one waiter (each raises its own object: tracebacks are per thread)."""
    if isinstance(error, ApiError):
        copy = type(error).__new__(type(error))
        copy.__dict__.update(error.__dict__)
        copy.args = error.args
        return copy
    return error
