"""Progress of a bulk run: a tqdm bar on a terminal, else a plain line every `interval` seconds.

The line comes on time even when no row finishes (every worker waiting on a retry): a ticker thread
writes it, so a run that is only retrying never goes silent for minutes.
"""
from __future__ import annotations

import sys
import threading
import time

from .rows import printable


class Progress:
    """A tqdm bar (rate, ETA) on a terminal; otherwise a plain line every `interval` seconds."""

    def __init__(self, label: str, total: int, stream=None, interval: float = 10.0, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.label = printable(label)
        self.total = total
        self.interval = interval
        self.clock = clock
        self.done = self.rejected = self.retries = 0
        self.started = self._last = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
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
            self._write_if_due()

    def retried(self) -> None:
        """Count one retry (shown in the line, so a run that only retries says so)."""
        with self._lock:
            self.retries += 1
            if self.bar is not None:
                self.bar.set_postfix(rejected=self.rejected, retries=self.retries, refresh=False)

    def start(self) -> None:
        """Start the ticker: a line (or a bar refresh) at least every `interval`, rows finishing or not."""
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="progress")
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(max(self.interval, 0.05)):
            with self._lock:
                if self.bar is not None:
                    self.bar.refresh()
                else:
                    self._write_if_due()

    def _write_if_due(self) -> None:
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
                f"ETA {eta}, {self.rejected} rejected, {self.retries} retries")

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
