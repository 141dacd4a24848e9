"""Progress of a bulk run: a tqdm bar on a terminal, else a plain line every `interval` seconds."""
from __future__ import annotations

import sys
import threading
import time


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
