"""Fair turns between visitors (issue 19 item 8): who trains now, who waits, and for about how long.

A job is *short* when its estimated time fits one turn (``NSCVF_TURN_S``, 60 s) and *long* otherwise.
Short jobs take turns in their own lane (``NSCVF_CONCURRENCY`` at once), long ones in theirs
(``NSCVF_LONG_CONCURRENCY`` at once, and at most as many more waiting; one more is refused with a message
that says what fits): so a visitor's ordinary Forget waits only behind other short jobs (each at most a
turn), never behind another visitor's long one. A short and a long job run side by side on the shared
model, which the engine holds per training step, so they alternate steps.

A waiting job is told where it stands every :data:`~webapp.state.settings.POLL_S`: how many wait ahead of
it and when its turn comes (:meth:`Turns.place`). The ETA is this machine's, measured while it runs, not a
prior's: each job's :class:`Cost` (its expected steps and the rest, from :class:`webapp.state.runtime.Estimate`)
is scaled by the pace the running jobs' steps have now (their :class:`Pace`, recorded from the engine's
progress), and a running job counts only what it has left (its steps done, its phase). Each visitor has one
job at a time (a session's operations are exclusive), so a lane's order is fair per visitor.
No Gradio here: the queue in code, so that the waits and ETAs on the page are the app's own measured ones.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

from nscvf.errors import Cancelled, NSCVFError

# Each other job running at the same time makes a job's time this much longer: they alternate steps on the
# shared model (the engine holds it per step) on the same cores. Measured (issue 19, load ~4, 2 cores): a
# default request took 9.3 s alone and 21.0 s beside a 400-step one, whose steps went from 0.36-0.42 s to
# 0.77-1.02 s meanwhile (2.3x); at load 19 an earlier one went from 36 to 57 s (1.6x). 1.0: the 2x of steps
# taken in turn. The machine's own pace (its load) is measured live (Turns._pace), not set here.
SHARED_SLOWDOWN = 1.0
SPEED_RANGE = (0.1, 20.0)  # the measured pace over a cost's, clamped (a stalled or a bogus reading)


class Full(NSCVFError):
    """No room in a lane: a long request runs and as many wait already."""


@dataclass(frozen=True)
class Cost:
    """What a job is expected to take on this machine alone, at the estimate's pace: the seconds before its
    steps, ``steps`` optimisation steps (expected: a request that stops once forgotten runs fewer than its
    ``most_steps``) of ``seconds_per_step``, and the seconds after them, on ``model`` (the app's model key: a
    job's pace measures the steps of its own model only). A job given only seconds has no steps."""

    before_s: float
    steps: float = 0.0
    seconds_per_step: float = 0.0
    after_s: float = 0.0
    most_steps: int = 0
    model: str | None = None

    @property
    def seconds(self) -> float:
        return self.before_s + self.steps * self.seconds_per_step + self.after_s

    def steps_left(self, done: int) -> float:
        """Steps still expected after ``done``: the expected ones, and once past them the same share of what is
        left of its most (a request that has not stopped yet may still stop, or run to its end)."""
        if done < self.steps or self.most_steps <= 0:
            return max(0.0, self.steps - done)
        return min(1.0, self.steps / self.most_steps) * max(0, self.most_steps - done)


class Pace:
    """A running job's progress as the engine reports it (``update(stage, done, total)``), timed: its phase
    ("before" its steps, "optimise", "after"), since when, and the seconds per step of its last steps."""

    WINDOW = 8  # steps whose pace is measured (recent: the load and the jobs beside it change)

    def __init__(self, now: float | None = None):
        self.phase = "before"
        self.since = time.time() if now is None else now
        self._marks: deque = deque(maxlen=self.WINDOW + 1)  # (time, steps done)

    def update(self, stage: str, done: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if stage.startswith("step ") or "ing step " in stage:  # a request's, teaching's or relearning's step
            if self.phase != "optimise":
                self.phase, self.since = "optimise", now
            if not self._marks or self._marks[-1][1] != done:
                self._marks.append((now, done))
        elif self.phase == "optimise":
            self.phase, self.since = "after", now

    def steps(self) -> tuple[int, float] | None:
        """The steps done and when the last one ended (None before the first)."""
        marks = list(self._marks)
        return (marks[-1][1], marks[-1][0]) if marks else None

    def per_step(self) -> tuple[float, float] | None:
        """Seconds per step over the last steps and since when they were measured (None before two steps)."""
        marks = list(self._marks)
        if len(marks) < 3 or marks[-1][1] <= marks[0][1]:
            return None
        return (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1]), marks[0][0]


def _overlap(started: float, since: float, end: float) -> float:
    """The share of the measured steps' time (``since`` to ``end``) that a job started at ``started`` ran beside
    (a running job: ``Turns._running`` gives only started ones)."""
    if end <= since:
        return 1.0 if started <= since else 0.0
    return min(1.0, max(0.0, (end - max(started, since)) / (end - since)))


@dataclass
class Ticket:
    """One job's place: its estimated seconds at most (they choose its lane) and its :class:`Cost` as expected
    (the ETAs count those: a request that stops once forgotten runs fewer steps than its Steps), its
    :class:`Pace` while it runs (None: its cost is all the ETAs know), its lane, when it was queued and when
    it started."""

    sid: str
    seconds: float
    long: bool
    n: int = 0
    queued: float = field(default_factory=time.time)
    started: float | None = None
    cost: Cost | None = None  # None: ``seconds``, nothing before or after steps
    pace: Pace | None = None

    @property
    def expected(self) -> Cost:
        return self.cost or Cost(self.seconds)


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

    def _running(self) -> list[Ticket]:
        return [t for t in self._tickets if t.started is not None]

    def _pace(self, model: str | None) -> float | None:
        """This machine's seconds per step of ``model`` now, alone (lock held): each running job of it in its
        steps measures it, its last steps' seconds less the share of the jobs that ran beside it meanwhile (the
        median of them); None when none does (then the costs' own seconds are all there is). A job that started
        during the measured steps counts for the part of them it ran beside: counted whole or not at all, a
        request that had just started beside a long one (its base answers and null space taking turns with
        the long one's steps) made the first ETA behind it 2.0-3.1x its wait (session 10, tests/server)."""
        running, paces = self._running(), []
        for t in running:
            c = t.expected  # a job given only seconds (no steps' cost: a teach) measures no request's steps
            measured = t.pace.per_step() if t.pace is not None and c.model == model and c.seconds_per_step > 0 else None
            if measured is None:
                continue
            per_step, since = measured
            end = t.pace.steps()[1]
            beside = sum(_overlap(o.started, since, end) for o in running if o is not t)
            paces.append(per_step / (1.0 + SHARED_SLOWDOWN * beside))
        return statistics.median(paces) if paces else None

    def _scale(self, t: Ticket, beside: int) -> float:
        """What ``t``'s cost's seconds are worth now (lock held): times its model's pace measured now over its
        cost's (clamped), and ``1 + SHARED_SLOWDOWN`` for each of the ``beside`` jobs that run beside it."""
        speed, pace = 1.0, self._pace(t.expected.model)
        if pace is not None and t.expected.seconds_per_step > 0:
            lo, hi = SPEED_RANGE
            speed = min(hi, max(lo, pace / t.expected.seconds_per_step))
        return speed * (1.0 + SHARED_SLOWDOWN * max(0, beside))

    @staticmethod
    def _left(t: Ticket, now: float, scale: float) -> float:
        """Seconds a running job has left, its cost's seconds times ``scale`` (:meth:`_scale`): in its steps,
        the steps still expected and what follows them; after them, what is left of what follows; before them,
        all but what it has run already."""
        c, pace = t.expected, t.pace
        phase = pace.phase if pace is not None else "before"
        step_s, after = c.seconds_per_step * scale, c.after_s * scale
        if phase == "optimise":
            done, last = pace.steps() or (0, pace.since)
            return max(0.0, c.steps_left(done) * step_s - (now - last)) + after
        if phase == "after":
            return max(0.0, after - (now - pace.since))
        return max(0.0, c.before_s * scale - (now - t.started)) + c.steps * step_s + after

    def _eta(self, ticket: Ticket, now: float) -> float:
        """Seconds until ``ticket`` starts: each slot frees when its job has run what it has left; the jobs
        ahead take the slots in order, each its whole cost (lock held). Every cost is at the pace measured now
        (:meth:`_pace`, :meth:`_scale`), beside the jobs that run with it."""
        lane, running = self._lane(ticket.long), self._running()
        free = [self._left(t, now, self._scale(t, len(running) - 1)) for t in running if t.long == ticket.long]
        free += [0.0] * max(0, self._capacity(ticket.long) - len(free))
        heapq.heapify(free)
        # A job that starts later runs beside the other lane's running jobs (its own lane's slots: in turn).
        beside = sum(1 for t in running if t.long != ticket.long) + min(self._capacity(ticket.long), len(lane)) - 1
        for t in lane:
            if t.started is not None:
                continue
            start = heapq.heappop(free)
            if t is ticket:
                return start
            heapq.heappush(free, start + t.expected.seconds * self._scale(t, beside))
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

    def join(self, sid: str, seconds: float, turn_s: float | None = None, expected: Cost | float | None = None,
             pace: Pace | None = None) -> Ticket:  # fmt: skip
        """Queue a job of ``seconds`` (estimated at most; long when over ``turn_s``, default the turn's seconds)
        and ``expected`` cost (the ETAs'; seconds: a cost of those seconds; default ``seconds``), whose progress
        ``pace`` records while it runs; :class:`Full` when it is long and the long lane is full."""
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
            cost = Cost(float(expected)) if isinstance(expected, (int, float)) else expected
            ticket = Ticket(sid, float(seconds), long, next(self._count), cost=cost, pace=pace)
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
             turn_s: float | None = None, expected: Cost | float | None = None, pace: Pace | None = None):  # fmt: skip
        """Run the body in a turn (see :meth:`wait`; ``turn_s``, ``expected``, ``pace``: :meth:`join`);
        yields the seconds waited."""
        ticket = self.join(sid, seconds, turn_s, expected, pace)
        try:
            yield self.wait(ticket, cancel, waiting)
        finally:
            self.leave(ticket)

    def running(self) -> int:
        with self._lock:
            return sum(1 for t in self._tickets if t.started is not None)
