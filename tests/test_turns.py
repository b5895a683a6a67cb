"""Fair turns between visitors (issue 19 item 8), without a model: a short job never waits behind another
visitor's long one, a waiting job's ETA comes from the estimates ahead of it, a third long job is refused
with what fits, and Cancel drops a waiting job."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

from nscvf.errors import Cancelled
from webapp.state.turns import Full, Turns


def hold(turns: Turns, sid: str, seconds: float, release: threading.Event, started: threading.Event | None = None):
    """A job of ``seconds`` (estimated) that runs until ``release`` is set, in a thread."""

    def run():
        with turns.turn(sid, seconds):
            if started is not None:
                started.set()
            release.wait(30)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@contextmanager
def running(seconds: float):
    """Turns (one short slot, one long slot, 60 s turns) with visitor a's job of ``seconds`` running."""
    turns = Turns(slots=1, long_slots=1, turn_s=60, poll_s=0.05)
    release, started = threading.Event(), threading.Event()
    t = hold(turns, "a", seconds, release, started)
    assert started.wait(5)
    try:
        yield turns
    finally:
        release.set()
        t.join(5)


def test_a_short_job_never_waits_behind_a_long_one():
    with running(500) as turns:
        t0 = time.time()
        with turns.turn("b", 20) as waited:  # another visitor's ordinary Forget
            assert waited < 0.5 and turns.running() == 2
        assert time.time() - t0 < 1


def test_eta_of_a_waiting_job_counts_the_jobs_running_and_ahead():
    turns = Turns(slots=1, long_slots=1, turn_s=60, poll_s=0.05)
    release, started = threading.Event(), threading.Event()
    first = hold(turns, "a", 30, release, started)
    assert started.wait(5)  # not running(): a ends in the middle of this test
    second = turns.join("b", 20)
    third = turns.join("c", 10)
    p2, p3 = turns.place(second), turns.place(third)
    assert p2.ahead == 1 and 29 <= p2.eta_s <= 30  # a's 30 s, just started
    assert p3.ahead == 2 and 49 <= p3.eta_s <= 50  # then b's 20 s
    seen = []
    waiter = threading.Thread(target=lambda: seen.append(turns.wait(second, waiting=seen.append)), daemon=True)
    waiter.start()
    time.sleep(0.3)
    assert seen and seen[0].ahead == 1  # told where it stands while it waits
    release.set()
    first.join(5)
    waiter.join(5)
    assert isinstance(seen[-1], float) and seen[-1] >= 0.2  # the seconds it waited
    turns.leave(second)
    assert turns.place(third).ahead == 0 and turns.place(third).eta_s == 0
    turns.leave(third)


def test_eta_counts_the_job_running_beside_it():
    """Beside another visitor's long job (the other lane) a short lane's jobs run about 1.5x slower."""
    with running(500) as turns:
        release, started = threading.Event(), threading.Event()
        short = hold(turns, "b", 20, release, started)
        assert started.wait(5)
        waiting = turns.join("c", 10)
        assert 29 <= turns.place(waiting).eta_s <= 30  # b's 20 s x 1.5
        release.set()
        short.join(5)
        turns.leave(waiting)


def test_third_long_job_is_refused_with_what_fits():
    with running(300) as turns:
        waiting = turns.join("b", 200)
        with pytest.raises(Full, match=r"about 400 s, longer than a turn of 60 s.*lower Steps"):
            turns.join("c", 400)
        turns.join("d", 30)  # a short one is still welcome
        turns.leave(waiting)


def test_cancel_drops_a_waiting_job():
    with running(30) as turns:
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        with pytest.raises(Cancelled, match="waiting for a turn"):
            with turns.turn("b", 10, cancel):
                pass
        place = turns.place(turns.join("c", 10))
        assert place.ahead == 1 and place.eta_s <= 30  # only a (running) ahead: b left the lane


def test_eta_counts_the_expected_seconds_and_the_lane_the_most():
    """A request that stops once forgotten runs fewer steps than its Steps: the ETAs behind it count its
    expected seconds; its lane is chosen by the most it may take (a long job stays in the long lane)."""
    turns = Turns(slots=1, long_slots=1, turn_s=60, poll_s=0.05)
    release, started = threading.Event(), threading.Event()

    def run():
        with turns.turn("b", 40, expected=20):
            started.set()
            release.wait(30)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(5)
    waiting = turns.join("c", 40, expected=20)
    assert 19 <= turns.place(waiting).eta_s <= 20  # b's 20 s expected, not its 40 s at most
    assert turns.join("d", 400, expected=30).long  # long by its most, whatever it is expected to take
    release.set()
    t.join(5)


def test_estimate_expects_the_share_of_steps_a_request_runs():
    from nscvf.method.config import UnlearnConfig
    from webapp.state.runtime import Estimate

    e = Estimate(seconds_per_step=1.0, before_s=5.0, after_s=5.0, steps_share=0.5)
    cfg = UnlearnConfig(steps=40)
    assert e.seconds(40) == 50 and e.expected_seconds(cfg) == 30  # 20 of 40 steps expected
    assert e.expected_seconds(cfg.replace(stop_when_forgotten=False)) == 50  # runs every step
    assert e.expected_seconds(UnlearnConfig(steps=4, min_steps=4)) == 14  # never fewer than min_steps
    e.update({}, None, steps_share=0.25)  # a request that stopped at 10 of 40 steps
    assert e.steps_share == 0.375 and e.expected_seconds(cfg) == e.seconds(15)
