"""The app's service through ZeroGPU's process-per-call (issue 18): with ``spaces.GPU`` replaced by
:class:`nscvf.zerogpu.ProcessPerCall` (a fresh process per call: pickled inputs in, pickled values out),
a session's forget -> continual forget -> undo -> ask -> cancel gives the same answers and byte-identical
adapter weights as the same session run in-process (the default off ZeroGPU), progress comes through the
call, and Cancel stops the worker at a step boundary with the session unchanged."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # webapp/ is the app's package, next to app.py (not installed)

from nscvf import zerogpu  # noqa: E402
from nscvf.cache import Cache  # noqa: E402
from nscvf.method.config import UnlearnConfig  # noqa: E402
from webapp.service import ask as asking  # noqa: E402
from webapp.service import forget as service  # noqa: E402
from webapp.service import jobs  # noqa: E402
from webapp.state import runtime  # noqa: E402
from webapp.state.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLES = ROOT / "assets" / "examples"


def form(name: str, steps: int = 2, **changes) -> dict:
    files = sorted(str(p) for p in (EXAMPLES / name.lower()).glob("*.png"))[:3]
    f = {"files": files, "name": name, "method": "nscvf", "steps": steps, "lr": 2e-3, "lora_rank": 4, "energy": 0.05,
         "tau": 0.07, "retain_weight": 1.0, "evaluation": "none", "retain_files": None}  # fmt: skip
    return {**f, **changes}


def session(embedded, tmp: Path, name: str):
    settings = Settings(data_dir=tmp / name, examples_dir=EXAMPLES, model_dir=ROOT / "assets" / "model")
    rt = runtime.local(settings, embedded, Cache(tmp / name / "cache"), warm_up=False)  # its own cache: no restore
    return rt, rt.sessions.get(name)


def run_session(rt, sess) -> dict:
    """forget Mirel -> forget Dravik (continual) -> undo -> ask: what the visitor sees, and the weights."""
    seen: list[str] = []
    one = service.forget(rt, sess, form("Mirel"), lambda f, desc="": seen.append(desc))
    w1 = {k: v.clone() for k, v in sess.chain.adapter_state(1).items()}
    two = service.forget(rt, sess, form("Dravik", lr=3e-3))
    w2 = {k: v.clone() for k, v in sess.chain.adapter_state(2).items()}
    service.rewind(rt, sess)
    answer = asking.ask(rt, sess, "Who is this?", form("Dravik")["files"][0])
    return {"answers": [one.record.result.probes_after, two.record.result.probes_after], "w": [w1, w2],
            "retained": [one.record.retain_rows, two.record.retain_rows], "answer": answer, "seen": seen,
            "fingerprint": sess.chain.state_fingerprint}  # fmt: skip


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_app_session_through_a_process_per_call_matches_in_process(embedded, tmp_path, monkeypatch):
    ref = run_session(*session(embedded, tmp_path, "in-process"))
    gpu = zerogpu.ProcessPerCall()
    monkeypatch.setattr(jobs, "GPU", gpu)
    rt, sess = session(embedded, tmp_path, "per-call")
    got = run_session(rt, sess)
    assert [c["job"] for c in gpu.calls] == ["forget_job", "forget_job", "ask_job"]  # every model use was a call
    assert got["answers"] == ref["answers"] and got["retained"] == ref["retained"] and got["answer"] == ref["answer"]
    assert all(same_weights(a, b) for a, b in zip(got["w"], ref["w"]))
    assert got["fingerprint"] == ref["fingerprint"] and len(sess.chain) == 1
    assert any(d.startswith("step ") for d in got["seen"]), got["seen"]  # progress came through the call
    # Each call asked ZeroGPU for its own request's duration (the callable got the call's arguments).
    family = type(embedded)
    asked = zerogpu.duration("forget")(zerogpu.ChainState("", "", family.step_seconds, family.fixed_seconds),
                                       zerogpu.ForgetJob((), UnlearnConfig(steps=2)))  # fmt: skip
    assert gpu.calls[0]["duration"] == asked and asked > 0

    stepping = threading.Event()

    def progress(fraction, desc=""):
        if desc.startswith("step "):
            stepping.set()

    threading.Thread(target=lambda: stepping.wait(300) and sess.cancel(), daemon=True).start()
    out = service.forget(rt, sess, form("Brisa", steps=80, lr=1e-5), progress)  # Cancel once it trains (80: fits a call)
    assert out.stopped == "cancelled" and len(sess.chain) == 1 and sess.chain.state_fingerprint == got["fingerprint"]
    closed = gpu.calls[-1]  # the worker stopped by itself at a step boundary, long before the 80 steps
    assert closed["exitcode"] == 0 and closed["closed_at"].stage.startswith("step ") and closed["closed_at"].done < 80
