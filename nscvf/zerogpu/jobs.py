"""The jobs, run inside one ZeroGPU call: each rebuilds the chain on the process's base model
(:func:`register_base`, :func:`open_chain`), runs one request and closes the chain again. The long ones are
generators (:func:`_stream`). See :mod:`nscvf.zerogpu`."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from nscvf.cache import Cache
from nscvf.errors import Cancelled, ModelLoadError
from nscvf.method import photo_domain  # noqa: F401  (registers the photo model's Domain)
from nscvf.method.chain import UnlearningChain
from nscvf.method.domain import domain_for
from nscvf.method.outcome import identify
from nscvf.method.relearn import relearn
from nscvf.method.teach import TeachConfig
from nscvf.models import load_model
from nscvf.zerogpu.state import (
    AskJob,
    ChainState,
    Done,
    EvaluateJob,
    Failed,
    ForgetJob,
    IdentifyJob,
    Progress,
    RelearnJob,
    StepOutcome,
    TeachJob,
)

HEARTBEAT_S = 0.5  # a long job yields at least this often (Cancel and the time limit act between yields)


# ------------------------------------------------------------------------------------ the process's model


_BASES: dict[str, object] = {}  # base fingerprint -> the loaded model (this process)
_CACHES: dict = {}  # cache folder (None: memory) -> Cache
_LOCK = threading.Lock()


def register_base(vlm) -> None:
    """Make ``vlm`` the base model that jobs of this process use (call once at start-up, after loading;
    a ZeroGPU worker is forked from the app and finds it here with its weights on CUDA)."""
    with _LOCK:
        _BASES[vlm.fingerprint] = vlm


def base_model(state: ChainState):
    """The process's base model of ``state`` (a fresh process loads ``state.source`` once and checks it)."""
    with _LOCK:
        vlm = _BASES.get(state.fingerprint)
        if vlm is None:
            vlm = load_model(state.source)
            if vlm.fingerprint != state.fingerprint:
                raise ModelLoadError(
                    f"{state.source} loads a model with fingerprint {vlm.fingerprint}, not the session's "
                    f"{state.fingerprint}: the model changed on disk; restart the app"
                )
            _BASES[state.fingerprint] = vlm
        return vlm


def _cache(directory: str | None):
    with _LOCK:
        if directory not in _CACHES:
            _CACHES[directory] = Cache(directory) if directory else Cache(enabled=False)
        return _CACHES[directory]


def open_chain(state: ChainState):
    """A new chain on the process's base model with ``state``'s requests restored (no training). Close it
    (``chain.close()``) when done: its adapters live in the shared model until then."""
    chain = UnlearningChain(base_model(state), _cache(state.cache_dir), state.domain)
    try:
        for s in state.steps:
            chain.restore(s.result, s.adapter_state, list(s.images))
    except BaseException:
        chain.close()
        raise
    return chain


def apply_step(chain, outcome: StepOutcome, images) -> None:
    """Append the request a job returned to the session's ``chain`` (no retraining)."""
    chain.restore(outcome.result, outcome.adapter_state, list(images))


# ------------------------------------------------------------------------------------ the jobs


def _cpu_state(chain) -> dict:
    return {k: v.detach().cpu().clone() for k, v in chain.adapter_state().items()}


def _stream(work: Callable, stop_after_s: float | None = None) -> Iterator:
    """Run ``work(progress, cancel, stop)`` in a thread and yield its :class:`Progress` (the latest, at
    least every HEARTBEAT_S), then :class:`Done` or :class:`Failed`. Closed early (GeneratorExit at a
    yield), it sets ``cancel`` and waits for the work to stop at its next step boundary."""
    t0 = time.time()
    updates: queue.Queue = queue.Queue()
    cancel, stop = threading.Event(), threading.Event()
    out: dict = {}

    def progress(stage, done=0, total=1):
        updates.put(Progress(stage, int(done), max(1, int(total)), round(time.time() - t0, 2)))

    def target():
        try:
            out["value"] = work(progress, cancel, stop)
        except BaseException as e:  # noqa: BLE001  (sent on as Failed)
            out["error"] = e
        finally:
            updates.put(None)

    thread = threading.Thread(target=target, name="gpu-job", daemon=True)
    last = Progress("starting")
    thread.start()
    try:
        while True:
            try:
                item = updates.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                item = dataclasses.replace(last, elapsed=round(time.time() - t0, 2))
            while item is not None:  # only the latest stage matters (None, the end, wins)
                try:
                    item = updates.get_nowait()
                except queue.Empty:
                    break
            if item is None:
                break
            if stop_after_s is not None and time.time() - t0 > stop_after_s:
                stop.set()
            last = item
            yield item
    finally:
        if thread.is_alive():  # closed early: stop at the next step boundary
            cancel.set()
            thread.join()
    if "error" in out:
        e = out["error"]
        yield Failed(type(e).__name__, str(e), "".join(traceback.format_exception(e)))
    else:
        yield Done(out["value"])


def forget_job(state: ChainState, request: ForgetJob) -> Iterator:
    """One forget request on ``state`` (a generator: :class:`Progress`, then ``Done(StepOutcome)``)."""

    def work(progress, cancel, stop):
        chain = open_chain(state)
        try:
            r = chain.forget(list(request.images), None if request.retain is None else list(request.retain),
                             request.config, progress=progress, cancel=cancel, target=request.target,
                             region_images=None if request.region_images is None else list(request.region_images),
                             stop=stop)  # fmt: skip
            extra = request.then(chain, r) if request.then is not None else None
            return StepOutcome(r.to_dict(), _cpu_state(chain), extra)
        finally:
            chain.close()

    yield from _stream(work, request.stop_after_s)


def teach_job(state: ChainState, request: TeachJob) -> Iterator:
    """One teach request on ``state`` (a generator: :class:`Progress`, then ``Done(StepOutcome)``)."""

    def work(progress, cancel, stop):
        chain = open_chain(state)
        try:
            r = chain.teach(list(request.images), request.name, request.facts, request.config or TeachConfig(),
                            progress=progress, cancel=cancel)  # fmt: skip
            extra = request.then(chain, r) if request.then is not None else None
            return StepOutcome(r.to_dict(), _cpu_state(chain), extra)
        finally:
            chain.close()

    yield from _stream(work)


def relearn_job(state: ChainState, request: RelearnJob) -> Iterator:
    """The relearning probe on ``state``'s model (and the reference on the base model); the chain is not
    changed. ``Done({"chain": probe, "reference": probe or None})`` (``nscvf.method.relearn.relearn``'s dicts)."""

    def work(progress, cancel, stop):
        def labelled(which):
            return lambda stage, done, total: progress(f"{which}: {stage}", done, total)

        chain = open_chain(state)
        try:
            mine = relearn(chain.vlm, list(request.images), request.name, list(request.heldout), request.steps,
                           request.config, progress=labelled("this model"), cancel=cancel)  # fmt: skip
            ref = None
            if request.reference_images is not None:
                ref = relearn(chain.base_vlm, list(request.reference_images), request.name,
                              list(request.reference_heldout or request.heldout), request.steps, request.config,
                              progress=labelled("reference"), cancel=cancel)  # fmt: skip
            return {"chain": mine, "reference": ref}
        finally:
            chain.close()

    yield from _stream(work)


def evaluate_job(state: ChainState, request: EvaluateJob) -> Iterator:
    """Evaluations of ``state``'s chain states about the target (cached by the engine under each state's
    fingerprint). ``Done({"evaluations": {label: dict}, "seconds": {label: s}})``."""

    def work(progress, cancel, stop):
        chain = open_chain(state)
        n = len(chain)
        try:
            evals, seconds = {}, {}
            for i, (label, k) in enumerate(request.states):
                k = (n - 1 if i == 0 else n) if k is None else k

                def cb(done, total, label=label):
                    if cancel.is_set():
                        raise Cancelled("evaluation cancelled")
                    progress(f"evaluating {label}", done, total)

                cb(0, 1)
                t = time.time()
                evals[label] = chain.evaluate(request.target, request.mode, k=max(0, k), progress=cb)
                seconds[label] = round(time.time() - t, 2)
            return {"evaluations": evals, "seconds": seconds}
        finally:
            chain.close()

    yield from _stream(work)


def ask_job(state: ChainState, request: AskJob) -> dict:
    """The base model's and the chain's answers to one question (short: a plain function)."""
    try:
        chain = open_chain(state)
        try:
            imgs = [request.image] if request.image is not None else None
            base = chain.base_vlm.generate([request.question], imgs, max_new_tokens=request.max_new_tokens)[0]
            current = (
                chain.vlm.generate([request.question], imgs, max_new_tokens=request.max_new_tokens)[0] if len(chain) else base
            )
            return {"base": base, "current": current, "k": len(chain)}
        finally:
            chain.close()
    except Exception as e:  # noqa: BLE001  (as data: the worker would keep only the class name)
        return {"failed": Failed(type(e).__name__, str(e), "".join(traceback.format_exception(e)))}


def identify_job(state: ChainState, request: IdentifyJob) -> dict:
    """``nscvf.method.outcome.identify`` on the base model (short: a plain function)."""
    try:
        vlm = base_model(state)
        return {"identification": identify(vlm, domain_for(vlm), list(request.images), request.given)}
    except Exception as e:  # noqa: BLE001  (as data: the worker would keep only the class name)
        return {"failed": Failed(type(e).__name__, str(e), "".join(traceback.format_exception(e)))}


JOBS: dict[str, Callable] = {
    "forget": forget_job,
    "compare": forget_job,  # the same request, another method, on the chain's state before it
    "teach": teach_job,
    "relearn": relearn_job,
    "evaluate": evaluate_job,
    "ask": ask_job,
    "identify": identify_job,
}
