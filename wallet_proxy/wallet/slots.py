"""Admission to SessionM: at most N calls in flight (`Slots`, first come first served, with the
measured slot time admission control reads), and the pacing of overload refusals (`Pacer`)."""
from __future__ import annotations

import collections
import threading
import time


class _Ticket:
    """A place in the queue for a SessionM slot."""

    __slots__ = ("event", "granted")

    def __init__(self):
        self.event = threading.Event()
        self.granted = False


class Slots:
    """At most `size` SessionM calls in flight, handed out first come, first served.

    A freed slot goes straight to the oldest waiter, never to a request that just arrived: during a
    send the slots are oversubscribed, and with barging an unlucky waiter could lose every race
    until its deadline (and its renders with it). `wake_all` makes every waiter re-check whether to
    give up (the breaker just opened) at once, without handing a lock from waiter to waiter.

    The slots also measure how long a call holds one (a moving average of `release(held=...)`), so
    `expected_wait()` says how long a newcomer would queue: its place in line times the time a slot
    takes to free up (hold time / size). It starts from `hold` and learns from the first calls.
    """

    SMOOTHING = 0.05  # weight of each new hold time in the moving average (~20 calls of memory)

    def __init__(self, size: int, *, hold: float = 1.0, monotonic=time.monotonic):
        self._lock = threading.Lock()
        self.size = size
        self.hold = hold  # moving average of seconds a call holds a slot
        self.monotonic = monotonic
        self._free = size
        self._queue: collections.deque = collections.deque()  # waiting tickets, oldest first

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now."""
        return len(self._queue)

    def expected_wait(self) -> float:
        """Seconds a request arriving now would wait for a slot (0 when one is free)."""
        with self._lock:
            if self._free > 0 and not self._queue:
                return 0.0
            return (len(self._queue) + 1) * self.hold / self.size

    def take(self, until: float, give_up=lambda: False) -> bool:
        """Take a slot, waiting until `until` (monotonic) at most; False when none, or `give_up()`."""
        with self._lock:
            if give_up():
                return False
            if self._free > 0 and not self._queue:
                self._free -= 1
                return True
            ticket = _Ticket()
            self._queue.append(ticket)
        while True:
            left = until - self.monotonic()
            if left > 0:
                ticket.event.wait(left)
            with self._lock:
                if ticket.granted:
                    if not give_up():
                        return True
                    self._hand_on()  # a slot we will not use goes to the next in line
                    return False
                if left <= 0 or give_up():
                    self._queue.remove(ticket)
                    return False
                ticket.event.clear()  # woken to re-check, not granted: wait on

    def release(self, held: float | None = None) -> None:
        """Give a slot back (to the oldest waiter, or to the pool), with the seconds it was held."""
        with self._lock:
            if held is not None:
                self.hold += self.SMOOTHING * (held - self.hold)
            self._hand_on()

    def wake_all(self) -> None:
        """Wake every waiter so each re-checks whether to give up (the breaker just opened)."""
        with self._lock:
            for ticket in self._queue:
                ticket.event.set()

    def _hand_on(self) -> None:
        if self._queue:
            ticket = self._queue.popleft()
            ticket.granted = True
            ticket.event.set()
        else:
            self._free += 1


class Pacer:
    """Spaces answers out to at most `rate()` per second; none waits more than `max_delay` seconds.

    Used for overload refusals. A refused client (a Braze connection) sends its next request as
    soon as it has the answer, so refusals answered at once come back as fast as the process can
    answer them: the CPU goes to refusing, the event loop's turns grow with the number of
    connections, and the calls that were admitted are read late -- past their deadlines. Spacing the
    refusals keeps the loop's turns short, so the admitted calls keep their place, and paces the
    clients to what the process can do (back pressure), while each 503 still leaves in time.
    """

    def __init__(self, rate, max_delay: float, monotonic=time.monotonic):
        self.rate = rate  # callable: answers per second now
        self.max_delay = max_delay
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._next = 0.0

    def delay(self) -> float:
        """Reserve the next turn; return the seconds to wait for it."""
        with self._lock:
            now = self.monotonic()
            at = min(max(now, self._next), now + self.max_delay)
            self._next = at + 1.0 / self.rate()
        return at - now
