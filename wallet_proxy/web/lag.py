"""How late this process's event loop runs: the queue of work that no other measure sees.

Under gunicorn's gevent worker every connection, timer and socket read of the process waits its
turn in one loop. When more work arrives than one CPU can do, the turns grow: a request that
arrived waits in its socket before any of our code sees it, and an answer SessionM sent on time is
read late. Slot queues and call timings only see that indirectly, as calls that take longer and
time out. The loop's lag sees it directly: a greenlet here asks to sleep `interval` seconds, over
and over, and records how much later than asked it woke.

A single late wake is noise (a garbage collection, one large answer). What matters is a *standing*
queue, the way CoDel reads a network queue: when even the smallest lag seen over the last `window`
seconds is high, the loop never caught up during that window, and new work only makes every
answer later. `standing()` is that smallest lag; `WalletService.admits` refuses new SessionM calls
while it is above its target, so the CPU goes to the calls already in flight and their answers are
read in time, and each refusal is a cheap 503 with `Retry-After`.
"""
from __future__ import annotations

import collections
import sys
import threading
import time

INTERVAL = 0.02  # seconds between wake-ups: 50 samples a second, ~1 µs of CPU each
WINDOW = 0.2  # CoDel's interval: a lag that lasts this long is a standing queue, not a burst


class LoopLag:
    """Samples the loop's lag; `standing()` is the smallest lag of the last `window` seconds.

    `record` takes a sample (the monitor calls it; tests call it with their own clock).
    """

    def __init__(self, interval: float = INTERVAL, window: float = WINDOW, monotonic=time.monotonic,
                 sleep=time.sleep):
        self.interval = interval
        self.window = window
        self.monotonic = monotonic
        self.sleep = sleep
        self._samples: collections.deque = collections.deque()  # (woke at, lag), oldest first
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> "LoopLag":
        """Run the monitor in a daemon thread (a greenlet under gevent's monkey-patching); once."""
        if not self._started:
            self._started = True
            threading.Thread(target=self._run, daemon=True, name="loop-lag").start()
        return self

    def _run(self) -> None:
        while True:
            self.sleep(self.interval)
            # Under gevent, sleep(0) queues this greenlet behind every greenlet already runnable
            # (woken by I/O, an Event or a spawn) and returns when its turn comes: the time it took
            # is what a runnable request waits for the CPU right now. (A timer's lateness says much
            # less: gevent runs timers each turn, but spreads a long queue of runnable greenlets
            # over many turns.) Without gevent it is the wait for the GIL.
            asked = self.monotonic()
            self.sleep(0)
            woke = self.monotonic()
            self.record(woke, woke - asked)

    def record(self, at: float, lag: float) -> None:
        """One wake-up `lag` seconds late, at `at` (monotonic)."""
        with self._lock:
            self._samples.append((at, lag))
            while len(self._samples) > 1 and self._samples[0][0] < at - self.window:
                self._samples.popleft()

    def standing(self) -> float:
        """Seconds of lag that lasted the whole window: the smallest sample in it (0 without samples).

        A monitor that has not woken for a whole window is stuck behind a turn that long: that
        overdue time is the lag, before its next sample says so.
        """
        now = self.monotonic()
        with self._lock:
            if not self._samples:
                return 0.0
            overdue = now - self._samples[-1][0] - self.interval
            if overdue >= self.window:  # no wake-up for a whole window: the loop is stuck that long
                return overdue
            recent = [lag for at, lag in self._samples if at >= now - self.window]
            return min(recent) if recent else self._samples[-1][1]

    def mean(self) -> float:
        """The average lag of the last `window` seconds (0 without samples): what a request that
        arrived now is likely to have waited for its turn before any of our code ran."""
        now = self.monotonic()
        with self._lock:
            recent = [lag for at, lag in self._samples if at >= now - self.window]
            return sum(recent) / len(recent) if recent else 0.0


def running_under_gevent() -> bool:
    """Whether gevent's monkey-patching made threads greenlets in this process (gunicorn's worker)."""
    if "gevent.monkey" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("threading")
