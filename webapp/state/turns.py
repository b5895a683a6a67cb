"""Fair turns between visitors (issue 19 item 8): who trains now, who waits, and for about how long.

A job is *short* when its estimated time fits one turn (``NSCVF_TURN_S``, 60 s) and *long* otherwise.
Short jobs take turns in their own lane (``NSCVF_CONCURRENCY`` at once), long ones in theirs
(``NSCVF_LONG_CONCURRENCY`` at once, and at most as many more waiting; one more is refused with a message
that says what fits): so a visitor's ordinary Forget waits only behind other short jobs (each at most a
turn), never behind another visitor's long one. A short and a long job run side by side on the shared
model, which the engine holds per training step, so they alternate steps.

A waiting job is told where it stands every :data:`~webapp.state.settings.POLL_S`: how many wait ahead of
it and when its turn comes (:meth:`Turns.eta`, from the estimates of the jobs running and ahead). Each
visitor has one job at a time (a session's operations are exclusive), so a lane's order is fair per visitor.
No Gradio here: the queue in code, so that the waits and ETAs on the page are the app's own measured ones.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from nscvf.errors import Cancelled, NSCVFError

SHARED_SLOWDOWN = 0.5  # each job running in the other lane adds this share to a job's time (see _eta)


class Full(NSCVFError):
    """No room in a lane: a long request runs and as many wait already."""


@dataclass
class Ticket:
    """One job's place: its estimated seconds at most (they choose its lane) and as expected (the ETAs count
    those: a request that stops once forgotten runs fewer steps than its Steps), its lane, when it was queued
    and when it started."""

    sid: str
    seconds: float
    long: bool
    n: int = 0
    queued: float = field(default_factory=time.time)
    started: float | None = None
    expected: float | None = None  # None: ``seconds``

    @property
    def expected_s(self) -> float:
        return self.seconds if self.expected is None else min(self.seconds, self.expected)


@dataclass(frozen=True)
class Place:
    """Where a waiting job stands: the jobs ahead of it in its lane and the seconds until its turn."""

    ahead: int
    eta_s: float
    long: bool


class Turns:
    """The two lanes (see the module). ``slots`` short jobs and ``long_slots`` long jobs run at once."""

    def __init__(self, slots: int = 1, long_slots: int = 1, turn_s: float = 60.0, poll_s: float = 0.5):
        self.slots, self.long_slots, self.turn_s, self.poll_s = max(1, slots), max(1, long_slots), turn_s, poll_s
        self._lock = threading.Condition()
        self._tickets: list[Ticket] = []  # running and waiting, in arrival order
        self._count = itertools.count()

    def _lane(self, long: bool) -> list[Ticket]:
        return [t for t in self._tickets if t.long == long]

    def _capacity(self, long: bool) -> int:
        return self.long_slots if long else self.slots

    def _eta(self, ticket: Ticket, now: float) -> float:
        """Seconds until ``ticket`` starts: each slot frees when its job's estimate runs out; the jobs
        ahead take the slots in order (lock held)."""
        lane = self._lane(ticket.long)
        running = [t for t in lane if t.started is not None]
        # A lane's jobs run beside the other lane's on the same cores (they alternate steps on the shared
        # model): each running job of the other lane makes this one's about 1.5x slower (measured: a
        # default request took 36 s alone, 57 s beside a long one, at load 19).
        share = 1.0 + SHARED_SLOWDOWN * sum(1 for t in self._tickets if t.started is not None and t.long != ticket.long)
        free = [max(0.0, t.expected_s * share - (now - t.started)) for t in running]
        free += [0.0] * max(0, self._capacity(ticket.long) - len(free))
        heapq.heapify(free)
        for t in lane:
            if t.started is not None:
                continue
            start = heapq.heappop(free)
            if t is ticket:
                return start
            heapq.heappush(free, start + t.expected_s * share)
        return 0.0

    def place(self, ticket: Ticket) -> Place:
        with self._lock:
            ahead = sum(1 for t in self._lane(ticket.long) if t.n < ticket.n)
            return Place(ahead, round(self._eta(ticket, time.time()), 1), ticket.long)

    def _may_start(self, ticket: Ticket) -> bool:
        lane = self._lane(ticket.long)
        running = sum(1 for t in lane if t.started is not None)
        first_waiting = next(t for t in lane if t.started is None)
        return running < self._capacity(ticket.long) and first_waiting is ticket

    def join(self, sid: str, seconds: float, turn_s: float | None = None, expected: float | None = None) -> Ticket:
        """Queue a job of ``seconds`` (estimated at most; long when over ``turn_s``, default the turn's seconds)
        and ``expected`` seconds (the ETAs'; default ``seconds``); :class:`Full` when it is long and the long
        lane is full."""
        turn_s = max(self.turn_s, turn_s or 0.0)
        long = seconds > turn_s
        with self._lock:
            if long and len(self._lane(True)) >= 2 * self.long_slots:
                running = [t for t in self._lane(True) if t.started is not None]
                wait = min((max(0.0, t.seconds - (time.time() - t.started)) for t in running), default=0.0)
                raise Full(
                    f"this request would take about {seconds:.0f} s, longer than a turn of {turn_s:.0f} s, and "
                    f"{len(self._lane(True))} long request(s) of other visitors run or wait already: lower Steps so that "
                    f"it fits a turn, or try again in about {wait:.0f} s"
                )
            ticket = Ticket(sid, float(seconds), long, next(self._count), expected=expected)
            self._tickets.append(ticket)
            return ticket

    def leave(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket in self._tickets:
                self._tickets.remove(ticket)
            self._lock.notify_all()

    def wait(self, ticket: Ticket, cancel: threading.Event | None = None, waiting=None) -> float:
        """Block until ``ticket``'s turn; ``waiting(place)`` every ``poll_s`` meanwhile. Returns the seconds
        waited; :class:`~nscvf.errors.Cancelled` when ``cancel`` is set first (the ticket leaves)."""
        t0 = time.time()
        while True:
            with self._lock:
                if self._may_start(ticket):
                    ticket.started = time.time()
                    return round(ticket.started - t0, 2)
            if cancel is not None and cancel.is_set():
                self.leave(ticket)
                raise Cancelled("cancelled while waiting for a turn; the model is unchanged")
            if waiting is not None:
                waiting(self.place(ticket))
            with self._lock:
                self._lock.wait(self.poll_s)

    @contextmanager
    def turn(self, sid: str, seconds: float, cancel: threading.Event | None = None, waiting=None,
             turn_s: float | None = None, expected: float | None = None):  # fmt: skip
        """Run the body in a turn (see :meth:`wait`; ``turn_s``, ``expected``: :meth:`join`); yields the
        seconds waited."""
        ticket = self.join(sid, seconds, turn_s, expected)
        try:
            yield self.wait(ticket, cancel, waiting)
        finally:
            self.leave(ticket)

    def running(self) -> int:
        with self._lock:
            return sum(1 for t in self._tickets if t.started is not None)
