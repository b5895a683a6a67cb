"""The ZeroGPU contract (issue 18): a job runs with only its arguments and returns only its value.

:class:`nscvf.zerogpu.ProcessPerCall` runs every call in a fresh process (spawn: pickled arguments in,
pickled values out, an exception back as its class name only, as a ZeroGPU worker does). A session of
forget -> continual forget -> undo -> cancel through it gives the same answers and byte-identical adapter
weights as the same session in-process (plain ``UnlearningChain`` calls, the same seed).
"""

from __future__ import annotations

import threading

import pytest
import torch

from nscvf import world, zerogpu
from nscvf.cache import Cache
from nscvf.errors import InputError
from nscvf.method.chain import UnlearningChain
from nscvf.method.config import UnlearnConfig
from nscvf.method.domain import WorldDomain

pytestmark = pytest.mark.slow

# Small and fixed: two steps, no early stop, small retain/protect/region sets (the contract, not quality).
CFG = UnlearnConfig(steps=2, evaluate="none", stop_when_forgotten=False, retain_batch=8, check_views=0)
SMALL = WorldDomain(retain_per_character=1, protect_per_character=2, region_size=8)


def renders(name: str, n: int = 3) -> list:
    return world.forget_examples(name, n)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_session_through_a_process_per_call_matches_in_process(embedded, tmp_path):
    a, b, c = renders("Mirel"), renders("Dravik"), renders("Brisa")
    cfg_b = CFG.replace(seed=3, lr=3e-3)

    ref = UnlearningChain(embedded, Cache(tmp_path / "ref"), SMALL)  # in-process: the engine's own calls
    r1 = ref.forget(a, None, CFG).to_dict()
    w1 = dict(ref.adapter_state())
    r2 = ref.forget(b, None, cfg_b).to_dict()
    w2 = dict(ref.adapter_state())

    gpu = zerogpu.ProcessPerCall()
    sess = UnlearningChain(embedded, Cache(tmp_path / "session"), SMALL)  # the main process keeps the session
    seen: list[str] = []
    state0 = zerogpu.chain_state(sess)
    o1 = zerogpu.run("forget", state0, zerogpu.ForgetJob(tuple(a), CFG), progress=lambda s, d, t: seen.append(s), gpu=gpu)
    zerogpu.apply_step(sess, o1, a)
    assert same_weights(o1.adapter_state, w1) and same_weights(sess.adapter_state(1), w1)
    assert o1.result["probes_after"] == r1["probes_after"] and o1.result["target"] == "Mirel"
    assert o1.result["embeddings"]["after"] == r1["embeddings"]["after"]  # the plot data
    assert {"base answers", "null space"} <= set(seen) and any(s.startswith("step ") for s in seen)

    state1 = zerogpu.chain_state(sess)
    o2 = zerogpu.run("forget", state1, zerogpu.ForgetJob(tuple(b), cfg_b), gpu=gpu)  # continual
    zerogpu.apply_step(sess, o2, b)
    assert same_weights(o2.adapter_state, w2)
    assert o2.result["probes_after"] == r2["probes_after"] and [h["target"] for h in o2.result["history"]] == ["Mirel", "Dravik"]
    assert sess.state_fingerprint == ref.state_fingerprint and sess.forgotten_targets == ["Mirel", "Dravik"]
    # Each call asked for the duration of its own request (the callable got the call's arguments).
    assert [x["duration"] for x in gpu.calls] == [zerogpu.duration("forget")(state0, zerogpu.ForgetJob((), CFG)),
                                                  zerogpu.duration("forget")(state1, zerogpu.ForgetJob((), cfg_b))]  # fmt: skip

    sess.undo()  # main process only: the next call gets the shorter state
    assert sess.state_fingerprint == ref.fingerprint_at(1)

    cancel = threading.Event()

    def progress(stage, done, total):
        if stage.startswith("step "):
            cancel.set()  # Cancel pressed once training runs

    with pytest.raises(zerogpu.Stopped) as stopped:
        zerogpu.run(
            "forget", zerogpu.chain_state(sess), zerogpu.ForgetJob(tuple(c), CFG.replace(steps=50)), progress, cancel, gpu=gpu
        )
    assert stopped.value.reason == "cancelled"
    assert len(sess) == 1 and sess.state_fingerprint == ref.fingerprint_at(1)  # unchanged
    closed = gpu.calls[-1]  # the worker stopped by itself at a step boundary, early in the 50 steps
    assert closed["exitcode"] == 0 and closed["closed_at"].stage.startswith("step "), closed
    assert closed["closed_at"].done < 50, closed

    answers = zerogpu.run("ask", zerogpu.chain_state(sess), zerogpu.AskJob("Who is this?", c[0]), gpu=gpu)
    assert answers["current"] == ref.model_at(1).generate(["Who is this?"], [c[0]], max_new_tokens=24)[0]
    assert answers["base"] == embedded.generate(["Who is this?"], [c[0]], max_new_tokens=24)[0] and answers["k"] == 1


def test_in_process_job_cancel_and_errors(embedded, tmp_path):
    """Off ZeroGPU the same jobs run in this process: Cancel stops at a step boundary and leaves no adapter
    behind; a user error arrives as itself with its message."""
    sess = UnlearningChain(embedded, Cache(enabled=False), SMALL)
    adapters_before = set(sess.shared.adapter_names())
    cancel = threading.Event()
    with pytest.raises(zerogpu.Stopped):
        zerogpu.run("forget", zerogpu.chain_state(sess), zerogpu.ForgetJob(tuple(renders("Mirel")), CFG.replace(steps=50)),
                    lambda s, d, t: s.startswith("step ") and cancel.set(), cancel)  # fmt: skip
    assert len(sess) == 0 and set(sess.shared.adapter_names()) == adapters_before
    with pytest.raises(InputError, match="max_forget_images=1"):
        zerogpu.run(
            "forget", zerogpu.chain_state(sess), zerogpu.ForgetJob(tuple(renders("Mirel")), CFG.replace(max_forget_images=1))
        )
    ident = zerogpu.run("identify", zerogpu.chain_state(sess), zerogpu.IdentifyJob(tuple(renders("Mirel")), "Brisa"))
    assert ident["identification"].answers == embedded.generate(["Who is this?"] * 3, renders("Mirel"))
    with pytest.raises(InputError, match="at most 300 s"):  # refused before the call
        zerogpu.run(
            "forget", zerogpu.chain_state(sess), zerogpu.ForgetJob((), CFG.replace(steps=2000)), gpu=zerogpu.ProcessPerCall()
        )


def test_errors_cross_the_process_as_themselves():
    """A ZeroGPU worker sends back only an exception's class name: a job returns user errors as data, so
    the message survives; anything else arrives as 'ZeroGPU worker error: <class>'."""
    gpu = zerogpu.ProcessPerCall()
    state = zerogpu.ChainState("/no/such/model", "fp", 2.0, 45.0)
    with pytest.raises(Exception, match="no such model folder"):
        zerogpu.run("forget", state, zerogpu.ForgetJob((), CFG), gpu=gpu)
    assert gpu.calls[0]["seconds"] > 0


def test_cuda_tensors_are_refused_in_a_result():
    with pytest.raises(TypeError, match="return CPU tensors"):
        zerogpu._check_cpu({"state": zerogpu.StepOutcome({}, {"w": torch.empty(2, device="meta")})})
    zerogpu._check_cpu(zerogpu.StepOutcome({"x": [1]}, {"w": torch.zeros(2)}))
