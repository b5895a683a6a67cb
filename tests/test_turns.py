"""Fair turns between visitors (issue 19 item 8), without a model: a short job never waits behind another
visitor's long one, a waiting job's ETA comes from the estimates ahead of it, a third long job is refused
with what fits, and Cancel drops a waiting job."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

from nscvf.errors import Cancelled
from webapp.state.turns import SHARED_SLOWDOWN, Cost, Full, Pace, Ticket, Turns


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
    """Beside another visitor's long job (the other lane) a short lane's jobs run about 2x slower (they take
    steps in turn: SHARED_SLOWDOWN)."""
    with running(500) as turns:
        release, started = threading.Event(), threading.Event()
        short = hold(turns, "b", 20, release, started)
        assert started.wait(5)
        waiting = turns.join("c", 10)
        assert 39 <= turns.place(waiting).eta_s <= 40  # b's 20 s x 2
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

    e = Estimate(seconds_per_step=1.0, before_s=5.0, after_s=5.0, steps_share=0.5, before_steps=3.0, after_steps=7.0)
    cfg = UnlearnConfig(steps=40)
    assert e.seconds(40) == 50 and e.expected_steps(cfg) == 20  # 20 of 40 steps expected
    assert e.cost(cfg) == Cost(3.0, 20, 1.0, 7.0, 40) and e.cost(cfg).seconds == 30
    assert e.expected_steps(cfg.replace(stop_when_forgotten=False)) == 40  # runs every step
    assert e.expected_steps(UnlearnConfig(steps=4, min_steps=4)) == 4  # never fewer than min_steps
    e.update({}, None, steps_share=0.25)  # a request that stopped at 10 of 40 steps
    assert e.steps_share == 0.375 and e.expected_steps(cfg) == 15


def test_estimate_learns_the_rest_of_a_request_in_its_own_steps():
    """A finished request's time before and after its steps, over its own seconds per step: a ratio that the
    live pace scales (a request measured at a slow step moves the ratio, not the seconds)."""
    from nscvf.method.config import UnlearnConfig
    from webapp.state.runtime import Estimate

    e = Estimate(seconds_per_step=0.4, before_steps=5.0, after_steps=9.0)
    timings = {"read": 0.5, "base_answers": 0.5, "images": 0.5, "references": 0.5, "null_space": 2.0,
               "optimise": 10.0, "seconds_per_step": 1.0}  # fmt: skip
    e.update(timings, job_s=17.0)  # 4 s before, 10 steps of 1 s, 3 s after
    assert (e.before_steps, e.after_steps) == (4.5, 6.0)
    cost = e.cost(UnlearnConfig(steps=40, stop_when_forgotten=False))
    assert e.seconds_per_step == 0.7 and cost == Cost(pytest.approx(4.5 * 0.7), 40, 0.7, pytest.approx(6.0 * 0.7), 40)


# ---------------------------------------------------------------- the measured pace, with a fake clock


def _running_ticket(turns: Turns, sid: str, cost: Cost, started: float, long: bool = False) -> Ticket:
    """A ticket that has run since ``started`` (a fake clock), with a :class:`Pace` to feed."""
    t = turns.join(sid, 1000 if long else cost.seconds, expected=cost, pace=Pace(now=started))
    t.started = started
    return t


def _steps(pace: Pace, first: int, last: int, t0: float, per_step: float) -> float:
    """Report steps ``first``..``last`` done at ``per_step`` seconds each from ``t0``; the time of the last."""
    for k in range(first, last + 1):
        pace.update(f"step {k + 1}/400", k, now=t0 + (k - first) * per_step)
    return t0 + (last - first) * per_step


def test_pace_records_the_phase_and_the_recent_seconds_per_step():
    pace = Pace(now=0.0)
    pace.update("base answers", 0, now=1.0)
    assert pace.phase == "before" and pace.per_step() is None
    pace.update("step 1/40", 0, now=2.0)
    pace.update("step 2/40", 1, now=2.5)
    assert pace.phase == "optimise" and pace.since == 2.0 and pace.per_step() is None  # one step: no pace yet
    end = _steps(pace, 2, 20, 3.5, 1.0)  # then 1 s a step: the window holds only those
    assert pace.per_step() == (1.0, end - Pace.WINDOW) and pace.steps() == (20, end)
    pace.update("evaluating", 0, now=end + 1)
    assert pace.phase == "after" and pace.since == end + 1
    teach = Pace(now=0.0)
    teach.update("teaching step 1/8", 0, now=1.0)
    assert teach.phase == "optimise"


def test_eta_scales_with_the_pace_the_running_steps_measure():
    """Visitor A's long job steps at twice the estimate's seconds: B's request ahead of C (not started yet
    in its steps) is expected to take twice its cost, beside A; at the estimate's pace, its cost (the
    issue's first ETA after start, with nothing finished yet)."""
    cost = Cost(2.0, 20, 0.4, 4.0, 40)  # 14 s alone at the estimate's pace
    for per_step, speed in ((0.8, 2.0), (0.4, 1.0), (0.2, 0.5)):
        turns = Turns(slots=1, long_slots=1, turn_s=60)
        a = _running_ticket(turns, "a", Cost(2.0, 400, 0.4, 4.0, 400), started=0.0, long=True)
        now = _steps(a.pace, 0, 30, 10.0, per_step)
        b = _running_ticket(turns, "b", cost, started=now)  # B started after A's measured steps
        c = turns.join("c", cost.seconds, expected=cost)
        beside = 1.0 + SHARED_SLOWDOWN  # B runs beside A
        assert turns._pace(None) == pytest.approx(per_step)
        assert turns._eta(c, now + 1.0) == pytest.approx(cost.seconds * speed * beside - 1.0)  # 1 s later
        turns.leave(b)
        assert turns._eta(c, now) == 0.0  # its slot is free


def test_each_cost_is_scaled_from_its_own_seconds_per_step():
    """Costs made at different estimates (a finished request moved it between two joins) meet the one pace
    measured now: B's cost, made when the estimate said 0.8 s a step, counts at the 0.4 s measured."""
    turns = Turns(slots=1, long_slots=1, turn_s=60)
    a = _running_ticket(turns, "a", Cost(2.0, 400, 0.4, 4.0, 400), started=0.0, long=True)
    now = _steps(a.pace, 0, 30, 10.0, 0.4)
    _running_ticket(turns, "b", Cost(4.0, 20, 0.8, 8.0, 40), started=now)
    c = turns.join("c", 14, expected=Cost(2.0, 20, 0.4, 4.0, 40))
    assert turns._eta(c, now) == pytest.approx((4.0 + 20 * 0.8 + 8.0) * 0.5 * (1 + SHARED_SLOWDOWN))


def test_a_pace_counts_for_its_own_model_only():
    """The app's models step at their own paces: a photo-model job's steps say nothing of the drawn world's."""
    turns = Turns(slots=1, long_slots=1, turn_s=60)
    a = _running_ticket(turns, "a", Cost(2.0, 400, 0.4, 4.0, 400, model="photo"), started=0.0, long=True)
    now = _steps(a.pace, 0, 30, 10.0, 1.6)
    cost = Cost(2.0, 20, 0.4, 4.0, 40)
    _running_ticket(turns, "b", cost, started=now)
    c = turns.join("c", 14, expected=cost)
    assert turns._pace("photo") == pytest.approx(1.6) and turns._pace(None) is None
    assert turns._eta(c, now) == pytest.approx(cost.seconds * (1 + SHARED_SLOWDOWN))  # its cost, beside A


def test_pace_measured_beside_another_job_is_not_counted_twice():
    """A's steps measured while B ran beside it are slower by B's share: the machine's pace is A's over that."""
    turns = Turns(slots=1, long_slots=1, turn_s=60)
    _running_ticket(turns, "b", Cost(2.0, 20, 0.4, 4.0, 40), started=0.0)
    a = _running_ticket(turns, "a", Cost(2.0, 400, 0.4, 4.0, 400), started=0.0, long=True)
    _steps(a.pace, 0, 30, 5.0, 0.8 * (1 + SHARED_SLOWDOWN))
    assert turns._pace(None) == pytest.approx(0.8)  # 2x the estimate's 0.4 s


def test_a_job_that_started_during_the_measured_steps_counts_for_its_share_of_them():
    """B started halfway through A's measured steps: they were slower by B's share for half of their time."""
    turns = Turns(slots=1, long_slots=1, turn_s=60)
    a = _running_ticket(turns, "a", Cost(2.0, 400, 0.4, 4.0, 400), started=0.0, long=True)
    now = _steps(a.pace, 0, 30, 5.0, 0.6)  # the last 8 steps: 4.8 s, from now - 4.8
    _running_ticket(turns, "b", Cost(2.0, 20, 0.4, 4.0, 40), started=now - 2.4)
    assert turns._pace(None) == pytest.approx(0.6 / (1 + SHARED_SLOWDOWN * 0.5))
    _running_ticket(turns, "late", Cost(2.0, 20, 0.4, 4.0, 40), started=now + 1.0)  # after them: not counted
    assert turns._pace(None) == pytest.approx(0.6 / (1 + SHARED_SLOWDOWN * 0.5))


def test_a_running_job_counts_what_it_has_left():
    """In its steps: the expected steps still to run (past them, the same share of what is left) at the
    measured pace, then what follows; after its steps: what is left of what follows."""
    turns = Turns(slots=1, long_slots=1, turn_s=60)
    cost = Cost(2.0, 20, 0.5, 5.0, 40)
    b = _running_ticket(turns, "b", cost, started=0.0)
    c = turns.join("c", cost.seconds, expected=cost)
    now = _steps(b.pace, 0, 10, 3.0, 0.5)  # 10 steps done at the estimate's pace, alone
    assert turns._eta(c, now) == pytest.approx(10 * 0.5 + 5.0)
    now = _steps(b.pace, 11, 30, now + 0.5, 0.5)  # past its 20 expected: half of the 10 left may still run
    assert turns._eta(c, now) == pytest.approx(5 * 0.5 + 5.0)
    b.pace.update("evaluating", 0, now=now + 1.0)
    assert turns._eta(c, now + 3.0) == pytest.approx(5.0 - 2.0)
    assert turns._eta(c, now + 30.0) == 0.0  # overdue: its turn is due now


def test_before_its_steps_a_job_counts_its_whole_cost_less_what_it_ran():
    turns = Turns(slots=1, long_slots=1, turn_s=60)
    cost = Cost(4.0, 20, 0.5, 5.0, 40)
    _running_ticket(turns, "b", cost, started=0.0)
    c = turns.join("c", cost.seconds, expected=cost)
    assert turns._eta(c, 1.0) == pytest.approx(cost.seconds - 1.0)
    assert turns._eta(c, 10.0) == pytest.approx(20 * 0.5 + 5.0)  # its before-part overdue: the rest still to run
