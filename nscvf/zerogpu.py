"""GPU jobs shaped for ZeroGPU: each call is self-contained, its inputs and outputs plain CPU data.

On a ZeroGPU Space every ``@spaces.GPU`` call runs in a worker process forked from the app: the weights
put on CUDA at start-up are there, but what the call changes in memory (peft adapters added to the shared
model, a session's chain) never comes back; only what it returns (pickled) does, and an exception other
than ``gr.Error`` comes back as its class name only. So a job here

- receives the session's chain as :class:`ChainState` (each request's result, adapter weights on the CPU
  and images; :func:`chain_state`) and a request (:class:`ForgetJob`, :class:`TeachJob`,
  :class:`RelearnJob`, :class:`EvaluateJob`, :class:`AskJob`, :class:`IdentifyJob`);
- rebuilds the chain on the process's base model (:func:`register_base`; a fresh process loads
  ``state.source``), runs the request, closes that chain again (no adapter is left in the worker);
- returns the new adapter weights, the result and the plot data (the result's ``embeddings``) on the CPU
  (:class:`StepOutcome`), and an error as :class:`Failed` (its class and message survive the worker);
- is a *generator* when it is long (forget, teach, relearn, evaluate): it yields :class:`Progress` at
  least every :data:`HEARTBEAT_S` and between steps, and its last item is :class:`Done` or
  :class:`Failed`. Closing it (Gradio's Cancel, the time limit) stops the work at the next step boundary.

:func:`run` is the main process's side: it checks that the job fits one call (:func:`check_fits`), calls
the job decorated by :func:`gpu_job` (``spaces.GPU(duration=...)`` when ``spaces`` is importable; a no-op
off ZeroGPU, so the same code runs on a CPU or a dedicated GPU), reports progress, closes the job on
cancel or time limit and returns the outcome. The session then applies it (:func:`apply_step`).
:class:`ProcessPerCall` is a stand-in of ``spaces.GPU`` that runs every call in a fresh process (tests,
``scripts/bench_zerogpu.py``). No Gradio here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from nscvf import errors
from nscvf.errors import Cancelled, InputError, ModelLoadError, NSCVFError
from nscvf.models import budget

HEARTBEAT_S = 0.5  # a long job yields at least this often (Cancel and the time limit act between yields)


# ------------------------------------------------------------------------------------ what a call carries


@dataclass(frozen=True)
class StepState:
    """One request of a chain as plain data: its result (``UnlearnResult.to_dict()``), its adapter's peft
    state dict (CPU tensors) and its images (the forget images, which protect it in later requests)."""

    result: dict
    adapter_state: dict
    images: tuple


@dataclass(frozen=True)
class ChainState:
    """A session's chain as plain data: the base model (``source`` to load it in a fresh process,
    ``fingerprint`` to check it), the disk cache's folder (None: a per-process memory cache), the family's
    GPU budgets (the durations) and the requests in order."""

    source: str
    fingerprint: str
    step_seconds: float
    fixed_seconds: float
    steps: tuple = ()
    cache_dir: str | None = None
    domain: object = None  # the chain's Domain (its image-set sizes); None: the model's default

    def __len__(self) -> int:
        return len(self.steps)


def chain_state(chain, upto: int | None = None) -> ChainState:
    """The state of ``chain`` after its first ``upto`` requests (default: all) as :class:`ChainState`."""
    steps = chain.steps[: len(chain.steps) if upto is None else upto]
    if any(s.result is None for s in steps):
        raise InputError("a request of this chain has no result (saved without report.json): it cannot be replayed")
    cls = type(chain.base_vlm)
    return ChainState(
        source=chain.shared.source,
        fingerprint=chain.shared.fingerprint,
        step_seconds=float(cls.step_seconds),
        fixed_seconds=float(cls.fixed_seconds),
        steps=tuple(StepState(s.result.to_dict(), s.adapter_state, tuple(s.protect_images)) for s in steps),
        cache_dir=None if chain.cache.directory is None else str(chain.cache.directory),
        domain=chain.domain,
    )


@dataclass(frozen=True)
class ForgetJob:
    """One forget request (also a comparison: the same request with another method, on the chain's state
    before it). ``stop_after_s``: seconds after the start at which training stops and what it learned is
    kept (a partial request). ``then``: a module-level function ``then(chain, result)`` run in the same call
    with the new step applied (e.g. the retained characters' answers); its value comes back as ``extra``."""

    images: tuple
    config: object  # UnlearnConfig
    retain: tuple | None = None
    target: str | None = None
    region_images: tuple | None = None
    stop_after_s: float | None = None
    then: Callable | None = None


@dataclass(frozen=True)
class TeachJob:
    """Teach ``name`` (and ``facts``) from ``images`` (``config``: a TeachConfig; None: its defaults)."""

    images: tuple
    name: str
    facts: dict | None = None
    config: object = None
    then: Callable | None = None


@dataclass(frozen=True)
class RelearnJob:
    """The relearning probe ("bring it back"): relearn ``name`` from ``images`` on the chain's model and,
    when ``reference_images`` is given, on the base model (the reference), asking about the held-out sets."""

    images: tuple
    heldout: tuple
    name: str
    steps: int = 20
    reference_images: tuple | None = None
    reference_heldout: tuple | None = None
    config: object = None  # UnlearnConfig (None: its defaults)


@dataclass(frozen=True)
class EvaluateJob:
    """Evaluate the chain's states ``states`` ((label, k) pairs; k requests, 0 = the base) about ``target``."""

    target: str
    mode: str = "quick"
    states: tuple = (("before", None), ("after", None))  # None: the last state minus one / the last state


@dataclass(frozen=True)
class AskJob:
    """One question (about ``image``, or text only) to the base model and the chain's model."""

    question: str
    image: object = None
    max_new_tokens: int = 24


@dataclass(frozen=True)
class IdentifyJob:
    """Who the base model says ``images`` show, before any training (``given``: the name typed, checked)."""

    images: tuple
    given: str | None = None


@dataclass(frozen=True)
class Progress:
    stage: str
    done: int = 0
    total: int = 1
    elapsed: float = 0.0


@dataclass(frozen=True)
class StepOutcome:
    """A new request for the session's chain: ``result`` (``UnlearnResult.to_dict()``: answers, numbers and
    the plot data under ``embeddings``), its adapter's weights (CPU) and the ``then`` hook's value."""

    result: dict
    adapter_state: dict
    extra: object = None


@dataclass(frozen=True)
class Done:
    value: object


@dataclass(frozen=True)
class Failed:
    """An error inside the call, as data (a ZeroGPU worker would keep only the class name)."""

    error: str  # the class name (an nscvf.errors class is raised again as itself)
    message: str
    trace: str = ""

    def exception(self) -> BaseException:
        cls = getattr(errors, self.error, None)
        if isinstance(cls, type) and issubclass(cls, NSCVFError):
            return cls(self.message)
        return RuntimeError(f"{self.error}: {self.message}\n{self.trace}".rstrip())


class Stopped(Cancelled):
    """A job closed by the caller: ``reason`` is "cancelled" or "time limit"; the session is unchanged."""

    def __init__(self, reason: str):
        super().__init__(f"{reason}; the model is unchanged")
        self.reason = reason


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
            from nscvf.models import load_model

            vlm = load_model(state.source)
            if vlm.fingerprint != state.fingerprint:
                raise ModelLoadError(
                    f"{state.source} loads a model with fingerprint {vlm.fingerprint}, not the session's "
                    f"{state.fingerprint}: the model changed on disk; restart the app"
                )
            _BASES[state.fingerprint] = vlm
        return vlm


def _cache(directory: str | None):
    from nscvf.cache import Cache

    with _LOCK:
        if directory not in _CACHES:
            _CACHES[directory] = Cache(directory) if directory else Cache(enabled=False)
        return _CACHES[directory]


def open_chain(state: ChainState):
    """A new chain on the process's base model with ``state``'s requests restored (no training). Close it
    (``chain.close()``) when done: its adapters live in the shared model until then."""
    from nscvf.method.chain import UnlearningChain

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
        from nscvf.method.teach import TeachConfig

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
        from nscvf.method.relearn import relearn

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
        from nscvf.method.domain import domain_for
        from nscvf.method.outcome import identify

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


# ------------------------------------------------------------------------------------ durations


def budget_of(kind: str, state: ChainState, request) -> dict:
    """:func:`nscvf.models.budget.job_budget`'s keywords for ``request``."""
    if kind in ("forget", "compare"):
        return {"steps": int(request.config.steps)}
    if kind == "teach":
        from nscvf.method.teach import TeachConfig

        return {"steps": int((request.config or TeachConfig()).steps)}
    if kind == "relearn":
        return {"steps": int(request.steps), "runs": 1 + (request.reference_images is not None)}
    if kind == "evaluate":
        return {"states": len(request.states), "mode": request.mode}
    return {}


def duration(kind: str, max_seconds: int = budget.ZEROGPU_MAX_SECONDS) -> Callable:
    """The ``duration`` callable of ``spaces.GPU`` for a job of ``kind``: called with the job's arguments
    (state, request), it returns the seconds to ask for, from the request's steps and the family's budgets,
    capped at ``max_seconds`` (never raises: :func:`check_fits` refuses before the call)."""

    def seconds(state: ChainState, request) -> int:
        return budget.job_duration(kind, state.step_seconds, state.fixed_seconds, max_seconds, **budget_of(kind, state, request))

    seconds.__name__ = f"{kind}_duration"
    return seconds


def max_seconds() -> int:
    """The most one call may take: ``$NSCVF_GPU_MAX_S`` (e.g. 120 for a Space used anonymously), else 300."""
    try:
        return max(1, min(budget.ZEROGPU_MAX_SECONDS, int(os.environ.get("NSCVF_GPU_MAX_S") or budget.ZEROGPU_MAX_SECONDS)))
    except ValueError:
        return budget.ZEROGPU_MAX_SECONDS


def check_fits(kind: str, state: ChainState, request, limit: int | None = None) -> int:
    """The call's duration, or InputError (before anything runs) when the job cannot fit one call."""
    return budget.check_fits(
        kind, state.step_seconds, state.fixed_seconds, limit or max_seconds(), **budget_of(kind, state, request)
    )


# ------------------------------------------------------------------------------------ decorating and running


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (``SPACES_ZERO_GPU`` set), where ``spaces.GPU`` sends calls to a worker."""
    return (os.environ.get("SPACES_ZERO_GPU") or "").strip().lower() in ("1", "t", "true")


def spaces_gpu():
    """``spaces.GPU`` when the package is importable (a no-op off ZeroGPU), else None."""
    try:
        import spaces  # type: ignore
    except ImportError:
        return None
    return spaces.GPU


@functools.cache
def gpu_job(kind: str, gpu=None) -> Callable:
    """The job of ``kind`` decorated with ``gpu`` (default ``spaces.GPU``, when importable) and its
    :func:`duration` callable; undecorated when there is no ``spaces``."""
    if kind not in JOBS:
        raise ValueError(f"unknown job kind {kind!r}; one of {', '.join(JOBS)}")
    gpu = gpu or spaces_gpu()
    fn = JOBS[kind]
    return fn if gpu is None else gpu(fn, duration=duration(kind, max_seconds()))


def run(kind: str, state: ChainState, request, progress=None, cancel=None, time_limit: float | None = None, gpu=None,
        limit: int | None = None):  # fmt: skip
    """Run one job in one (ZeroGPU) call and return its value (:class:`StepOutcome` for forget, compare and
    teach; a dict for relearn, evaluate, ask and identify). ``progress(stage, done, total)`` gets each
    :class:`Progress`; ``cancel`` (an Event) or ``time_limit`` (seconds) close the job: :class:`Stopped`.
    On ZeroGPU (or with a ``gpu`` stand-in that has a per-call limit) a job that cannot fit one call is
    refused first (:func:`check_fits`, InputError)."""
    if on_zerogpu() or limit is not None or getattr(gpu, "max_seconds", None):
        check_fits(kind, state, request, limit or getattr(gpu, "max_seconds", None))
    fn = gpu_job(kind, gpu)
    if kind in ("ask", "identify"):
        value = fn(state, request)
        if isinstance(value, dict) and "failed" in value:
            raise value["failed"].exception()
        return value
    t0 = time.time()
    items = fn(state, request)
    last = None
    try:
        for item in items:
            if isinstance(item, Progress):
                if progress is not None:
                    progress(item.stage, item.done, item.total)
            elif isinstance(item, Done | Failed):
                last = item
                break
            if cancel is not None and cancel.is_set():
                raise Stopped("cancelled")
            if time_limit is not None and time.time() - t0 > time_limit:
                raise Stopped("time limit")
    finally:
        if last is None:
            items.close()  # stops the job at its next step boundary
        else:
            for _ in items:  # its last item came: let it end normally (ZeroGPU releases the GPU then)
                pass
    if isinstance(last, Done):
        return last.value
    if isinstance(last, Failed):
        raise last.exception()
    raise RuntimeError(f"the {kind} job ended without a result")


# ------------------------------------------------------------------------------------ process per call


def _child_main(module: str, name: str, args: bytes, results, stop, threads: int) -> None:
    """A fresh process's side of :class:`ProcessPerCall`: run the job, send each value (or the end).
    Values cross as plain pickles (copies: no shared memory, as between a ZeroGPU worker and the app)."""
    try:
        import torch

        torch.set_num_threads(threads)  # the same float reductions as the parent: byte-identical results
        fn = getattr(importlib.import_module(module), name)
        value = fn(*pickle.loads(args))
        if not hasattr(value, "__next__"):
            _check_cpu(value)
            results.put(("value", pickle.dumps(value)))
            return
        for item in value:
            if stop.is_set():  # the caller closed the job: stop at this yield, as spaces does
                value.close()
                results.put(("closed", pickle.dumps(item)))  # where it stopped (ProcessPerCall.calls)
                break
            _check_cpu(item)
            results.put(("value", pickle.dumps(item)))
        results.put(("end", None))
    except BaseException as e:  # noqa: BLE001  (like ZeroGPU: only the class name goes back)
        results.put(("error", type(e).__name__))


def _check_cpu(value, seen=None) -> None:
    """ZeroGPU's rule for what a call returns: no CUDA tensor anywhere in it."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise TypeError(f"a {value.device.type} tensor in a GPU call's result: return CPU tensors")
    elif isinstance(value, dict):
        for v in value.values():
            _check_cpu(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_cpu(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _check_cpu(getattr(value, f.name))


@dataclass
class ProcessPerCall:
    """A stand-in of ``spaces.GPU`` that runs every call in a fresh process (multiprocessing "spawn": only
    the pickled arguments go in, only pickled values come back, an exception returns as its class name, a
    CUDA tensor in a result is refused), so code that works through it keeps no state in the call. It
    records each call's duration (the ``duration`` callable is called with the call's arguments, as
    ZeroGPU does), seconds, exit code and, for a job closed early, the item at which it stopped
    (``closed_at``) in ``calls``; ``max_seconds`` is its per-call limit."""

    max_seconds: int = budget.ZEROGPU_MAX_SECONDS
    calls: list = field(default_factory=list)

    def __hash__(self) -> int:  # gpu_job caches per decorator object
        return id(self)

    def __call__(self, fn, duration=None):
        import inspect
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        module, name = fn.__module__, fn.__name__

        def start(args):
            import torch

            seconds = duration(*args) if callable(duration) else (duration or 60)
            record = {"job": name, "duration": seconds, "started": time.time(), "first_item_s": None}
            self.calls.append(record)
            results, stop = ctx.Queue(), ctx.Event()
            payload = pickle.dumps(args)
            proc = ctx.Process(target=_child_main, args=(module, name, payload, results, stop, torch.get_num_threads()),
                               daemon=True)  # fmt: skip
            proc.start()
            return proc, results, stop, record

        def receive(proc, results, record):
            while True:
                try:
                    kind, value = results.get(timeout=1.0)
                except queue.Empty:
                    if not proc.is_alive():
                        raise RuntimeError(f"ZeroGPU worker error: the {name} process exited ({proc.exitcode})") from None
                    continue
                if record["first_item_s"] is None:
                    record["first_item_s"] = round(time.time() - record["started"], 3)
                if kind == "error":
                    raise RuntimeError(f"ZeroGPU worker error: {value}")
                return kind, None if value is None else pickle.loads(value)

        if not inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def call(*args):
                proc, results, stop, record = start(args)
                try:
                    return receive(proc, results, record)[1]
                finally:
                    proc.join(30)
                    record["seconds"] = round(time.time() - record["started"], 3)

            return call

        @functools.wraps(fn)
        def generate(*args):
            proc, results, stop, record = start(args)
            try:
                while True:
                    kind, value = receive(proc, results, record)
                    if kind == "end":
                        return
                    yield value
            finally:  # closed early: the worker stops at its job's next yield (then its step boundary)
                stop.set()
                deadline = time.time() + 120
                while proc.is_alive() and time.time() < deadline:
                    try:  # keep the pipe drained, so that the worker can exit
                        kind, value = results.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if kind == "closed":
                        record["closed_at"] = pickle.loads(value)
                if proc.is_alive():
                    proc.kill()
                proc.join(5)
                record["exitcode"] = proc.exitcode
                record["seconds"] = round(time.time() - record["started"], 3)

        return generate
