"""Per-visitor state: :class:`Session` (its chain, its records, its running job, its lock) and the
:class:`Registry` of sessions (bounded; never evicts a busy session).

Every operation on a session runs inside ``session.exclusive(what)``: one at a time in code, whatever the
Gradio queue's concurrency; a second one is refused with :class:`Busy` (a message for the page). The
session's own evaluation (the accuracies computed after a Forget's answers are shown) never blocks a light
action: ``exclusive(..., evaluation="cancel")`` (Undo, Reset) stops it first, ``evaluation="wait"`` (the
next Forget or Teach) queues behind it and says so.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

from nscvf.errors import NSCVFError
from webapp.state.turns import Pace

log = logging.getLogger("nscvf.app")


class Busy(NSCVFError):
    """Another operation of the same session is running."""


@dataclass
class Job:
    """One running operation: its progress (written by the engine's callback, timed in ``pace`` for the turns'
    ETAs) and its cancel flag."""

    what: str = "request"
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stage: str = "waiting"
    step: int = 0
    total: int = 1
    started: float = field(default_factory=time.time)
    timed_out: bool = False
    superseded_by: str | None = None  # cancelled by this operation of the same session (e.g. "undo")
    progress: object = None  # the caller's progress(fraction, desc=...) callback
    pace: Pace = field(default_factory=Pace)

    def __post_init__(self):
        if self.progress is None:
            self.progress = lambda *a, **k: None

    def update(self, stage: str, done: int, total: int) -> None:
        self.stage, self.step, self.total = stage, done, max(1, total)
        self.pace.update(stage, done)


@dataclass
class Session:
    sid: str
    chain: object = None  # nscvf UnlearningChain, made on the first Forget (adapters only: cheap)
    records: list = field(default_factory=list)  # one RequestRecord per request of the chain
    job: Job | None = None
    pending: int = 0  # Forget clicks of this session waiting in the queue
    behind: int = 0  # operations waiting for this session's evaluation to end (Cancel drops them)
    cancel_pending: bool = False
    numbers_due: bool = False  # the last Forget succeeded and its accuracies are still to show
    closed: bool = False
    clicked: float | None = None  # when the waiting Forget was clicked (its time includes the queue)
    last_error: str | None = None  # the last failed Forget's message, shown in the status (a toast fades)
    last_used: float = field(default_factory=time.time)
    tmp_dir: str | None = None  # the session's temporary folder (exports, imported images; webapp.service.timeline)
    model: str | None = None  # the model it works on (a ModelChoice key; None: the page's default model)
    shelved: dict = field(default_factory=dict)  # model key -> (chain, records) of the models it switched away from
    lock: threading.Lock = field(default_factory=threading.Lock)

    def switch(self, key: str, current: str) -> None:
        """Work on the model ``key`` from now on (inside :meth:`exclusive`; ``current``: the key of the model it
        works on now). That model's chain and records are shelved, and come back when the session switches back;
        ``key``'s are taken off the shelf (none: its base model, nothing requested yet)."""
        if key == current:
            return
        self.shelved[current] = (self.chain, self.records)
        self.chain, self.records = self.shelved.pop(key, (None, []))
        self.model, self.numbers_due, self.last_error = key, False, None

    def _behind_evaluation(self, what: str, policy: str, waiting, timeout: float) -> None:
        """While this session's evaluation runs: cancel it (``policy`` "cancel") or not ("wait"), call
        ``waiting()`` once and wait for it to end (at most ``timeout`` s; then :meth:`exclusive` refuses)."""
        with self.lock:
            job = self.job
            if job is None or job.what != "evaluation":
                return
            if policy == "cancel":
                job.superseded_by = what
                job.cancel.set()
            self.behind += 1
        try:
            if waiting is not None:
                waiting()
            job.done.wait(timeout)
        finally:
            with self.lock:
                self.behind -= 1

    @contextmanager
    def exclusive(self, what: str = "request", evaluation: str | None = None, waiting=None, timeout: float = 900):
        """Run one operation on this session: yields its :class:`Job`; raises :class:`Busy` while another runs.
        ``evaluation``: while this session's own evaluation runs, "cancel" it or "wait" for it (``waiting()``
        is called once, to show it) instead of refusing."""
        if evaluation in ("cancel", "wait"):
            self._behind_evaluation(what, evaluation, waiting, timeout)
        with self.lock:
            if self.job is not None:
                raise Busy(f"a {self.job.what} is already running in this session; wait for it to finish or press Cancel")
            if self.closed:
                raise Busy("this session has ended; reload the page")
            job = self.job = Job(what)
        try:
            yield job
        finally:
            with self.lock:
                self.job = None
                job.done.set()
                closing = self.closed
            if closing:
                self._close_chain()

    @contextmanager
    def reading(self, what: str = "question"):
        """Read the session's model without changing it (Ask): beside a running evaluation, which does not
        change the chain either; exclusive otherwise (:class:`Busy` while a request or an undo runs)."""
        with self.lock:
            job = self.job
        if job is not None and job.what == "evaluation":
            yield job
            return
        with self.exclusive(what) as job:
            yield job

    @property
    def busy(self) -> bool:
        return self.job is not None

    def queued(self) -> None:
        """A Forget click is waiting in the queue (so that Cancel can drop it before it starts)."""
        with self.lock:
            self.pending += 1
            self.cancel_pending = False
            self.clicked = time.time()

    def clicked_at(self) -> float | None:
        """When the Forget now starting was clicked (None for an API call, which has no click)."""
        with self.lock:
            t, self.clicked = self.clicked, None
            return t

    def dequeued(self) -> bool:
        """The queued Forget starts: False when Cancel dropped it meanwhile."""
        with self.lock:
            self.pending = max(0, self.pending - 1)
            dropped, self.cancel_pending = self.cancel_pending, False
            return not dropped

    def dropped(self) -> bool:
        """Cancel was pressed while this operation waited behind the session's evaluation (reset here)."""
        with self.lock:
            dropped, self.cancel_pending = self.cancel_pending, False
            return dropped

    def cancel(self) -> str:
        """Stop the running operation (and drop what waits behind it) or drop the queued Forget: 'running',
        'queued' or 'nothing'."""
        with self.lock:
            if self.job is not None:
                self.job.cancel.set()
                if self.behind:
                    self.cancel_pending = True
                return "running"
            if self.pending > 0:
                self.cancel_pending = True
                return "queued"
            return "nothing"

    def close(self) -> None:
        """Cancel what runs and free the chain's adapters (now, or when the running operation ends)."""
        with self.lock:
            self.closed = True
            job = self.job
            if job is not None:
                job.cancel.set()
        if job is None:
            self._close_chain()

    def _close_chain(self) -> None:
        chain, self.chain = self.chain, None
        self.records = []
        tmp, self.tmp_dir = self.tmp_dir, None
        shelved, self.shelved = list(self.shelved.values()), {}
        for c in [chain, *(c for c, _ in shelved)]:
            if c is not None:
                c.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


class Registry:
    """The sessions by id (gr.State holds only the id); at most ``capacity``, the idle least recently used
    one is freed first, a busy one never."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._s: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sid: str) -> Session:
        evicted = []
        with self._lock:
            s = self._s.get(sid)
            if s is None:
                s = self._s[sid] = Session(sid)
            self._s.move_to_end(sid)
            s.last_used = time.time()
            while len(self._s) > self.capacity:
                idle = next((k for k, v in self._s.items() if not v.busy and k != sid), None)
                if idle is None:
                    break
                evicted.append(self._s.pop(idle))
        for e in evicted:
            e.close()
            log.info("session %s evicted (registry full)", e.sid[:8])
        return s

    def peek(self, sid: str | None) -> Session | None:
        with self._lock:
            return self._s.get(sid) if sid else None

    def free(self, sid: str | None) -> None:
        with self._lock:
            s = self._s.pop(sid, None) if sid else None
        if s is not None:
            s.close()
            log.info("session %s freed", sid[:8])

    def __len__(self) -> int:
        return len(self._s)

    def __contains__(self, sid) -> bool:
        return sid in self._s
