"""Visitors of one running app, through its API (gradio_client): what a second and a third visitor's
Forget wait while a first visitor's long request trains (issue 19 item 8). Shared by
tests/server/test_visitor_turns.py and the before/after measurement in BENCHMARKS.md (run against any checkout's
server: ``python -c "from support.visitors import ...`` with tests/ on the path)."""

from __future__ import annotations

import re
import threading
import time

from support.app_api import STATUS, forget_args
from support.app_server import client, example_paths

STARTED = ("base answers", "null space", "step ", "evaluating", "restoring", "retained", "drawing")
ETA = re.compile(r"your turn in about (\d+) s")


def watch(job, t0: float) -> dict:
    """Follow one submitted job to its end: when training started (its first working stage), the first ETA
    it was shown (the app's "your turn in about N s", else Gradio's queue ETA) and its status line."""
    seen = {"started_s": None, "eta_s": None, "eta_from": None, "descs": []}
    while not job.done():
        st = job.status()
        desc = (st.progress_data[0].desc or "") if st.progress_data else ""
        if desc and (not seen["descs"] or seen["descs"][-1] != desc):
            seen["descs"].append(desc)
        m = ETA.search(desc)
        if seen["eta_s"] is None and m:
            seen["eta_s"], seen["eta_from"] = float(m.group(1)), "app"
        elif seen["eta_s"] is None and getattr(st, "eta", None) and str(getattr(st, "code", "")).endswith("IN_QUEUE"):
            seen["eta_s"], seen["eta_from"] = float(st.eta), "gradio queue"
        if seen["started_s"] is None and desc.startswith(STARTED):
            seen["started_s"] = round(time.time() - t0, 2)
        time.sleep(0.1)
    seen["total_s"] = round(time.time() - t0, 2)
    status = job.result()[STATUS]
    seen["status"] = status.splitlines()[0] if status else ""
    m = re.search(r"done\*\* in ([\d.]+) s", status or "")
    seen["reported_s"] = float(m.group(1)) if m else None
    return seen


def second_visitors(url: str, long_steps: int = 300) -> dict:
    """Visitor A's long request (``long_steps``, a tiny learning rate: it trains to the end), then B's and
    C's ordinary Forget (the defaults, no evaluation) one after the other while A trains; A is cancelled once
    both are done. Returns each one's watch() record (B's and C's) and how A ended."""
    a, b, c = client(url), client(url), client(url)
    job_a = a.submit(*forget_args(example_paths("brisa"), steps=long_steps, lr=1e-5, evaluation="none"), api_name="/forget")
    t0 = time.time()
    while time.time() - t0 < 300:
        st = job_a.status()
        if st.progress_data and (st.progress_data[0].desc or "").startswith("step "):
            break
        if job_a.done():
            raise AssertionError(f"A ended before training: {job_a.result()[STATUS]}")
        time.sleep(0.2)
    else:
        raise AssertionError("A never reached its optimisation steps")
    out: dict = {}
    tb = time.time()
    job_b = b.submit(*forget_args(example_paths("fenna"), evaluation="none"), api_name="/forget")
    time.sleep(1.0)  # B first, then C
    tc = time.time()
    job_c = c.submit(*forget_args(example_paths("dravik"), evaluation="none"), api_name="/forget")
    tb_thread = threading.Thread(target=lambda: out.update(B=watch(job_b, tb)))
    tb_thread.start()
    out["C"] = watch(job_c, tc)
    tb_thread.join()
    out["A_running_when_done"] = not job_a.done()
    a.predict(api_name="/cancel")
    out["A_status"] = job_a.result(timeout=120)[STATUS].splitlines()[0]
    return out


def undo_during_accuracies(url: str) -> dict:
    """One Forget (Mirel, the defaults), then its accuracies (/numbers, quick) and, while they compute, Undo
    again and again until it is not refused: how long Undo was refused, and when it was done."""
    c = client(url)
    c.predict(*forget_args(example_paths("mirel"), evaluation="quick"), api_name="/forget")
    numbers = c.submit("quick", api_name="/numbers")
    while not numbers.done():  # the accuracies have started
        st = numbers.status()
        if st.progress_data and "evaluating" in (st.progress_data[0].desc or ""):
            break
        time.sleep(0.05)
    t0, refusals, status = time.time(), 0, None
    while time.time() - t0 < 120:
        try:
            status = c.predict(api_name="/undo")[STATUS]
            break
        except Exception as e:  # noqa: BLE001  (the refusal arrives as the client's AppError)
            if "already running" not in str(e):
                raise
            refusals += 1
            time.sleep(0.25)
    undone_s = round(time.time() - t0, 2)
    numbers_out = numbers.result(timeout=120)
    return {"refusals": refusals, "undone_s": undone_s, "status": (status or "").splitlines()[0],
            "numbers_note": numbers_out[2] if len(numbers_out) > 2 else None}  # fmt: skip
