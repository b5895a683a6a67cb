"""What every operation on a session shares, without Gradio: the session's chain (:func:`ensure_chain`),
a job run in a worker thread with its progress, time limit and Cancel (:func:`run_job`), the GPU work as
one self-contained call (:func:`gpu_call`, through :func:`nscvf.zerogpu.run`), the record of a request a
call returned, applied to the session's chain (:func:`applied_record`), restoring one (:func:`restore`),
storing one (:func:`store`) and a record's images as uploaded (:func:`shown_images`).

Every use of the model (forget, teach, bring back, compare, evaluate, ask, identify) is a job of
:mod:`nscvf.zerogpu`: it gets the session's chain as plain CPU data (:func:`gpu_state`) and the request,
and returns the new adapter weights, the result and the plot data; the main process keeps the session.
On a ZeroGPU Space each is a ``@spaces.GPU`` call in a worker process; elsewhere (no ``spaces``, or not
on ZeroGPU) the same job runs in this process on the shared model. :data:`GPU` replaces ``spaces.GPU``
(tests: :class:`nscvf.zerogpu.ProcessPerCall`, a fresh process per call).

A long job runs in a worker thread so that ``progress(fraction, desc=...)`` names the stage at least every
:data:`~webapp.state.settings.POLL_S`; the time limit and Cancel set the job's cancel flag, which closes
the call's generator at its next yield (the job stops at a step boundary, in whichever process it runs).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from contextlib import contextmanager

from nscvf import zerogpu
from nscvf.errors import Cancelled, InputError
from nscvf.images import load_image
from nscvf.method.chain import UnlearningChain
from nscvf.method.config import UnlearnConfig
from nscvf.method.result import UnlearnResult
from nscvf.method.warmup import warm_up as engine_warm_up
from webapp.service.showcase import draw_figures
from webapp.state.records import RequestRecord
from webapp.state.runtime import NotReady, Runtime
from webapp.state.sessions import Job, Session
from webapp.state.settings import POLL_S

log = logging.getLogger("nscvf.app")


def ensure_chain(rt: Runtime, sess: Session) -> UnlearningChain:
    """The session's chain (made on first use: adapters on the shared base, no model copy)."""
    if sess.chain is None:
        h = rt.holder_of(sess)
        sess.chain = UnlearningChain(h.get(), h.cache)
    return sess.chain


GPU = None  # a stand-in of spaces.GPU (None: spaces.GPU when importable, a no-op off ZeroGPU)


def prepare_gpu(rt: Runtime) -> bool:
    """Before the page launches, on a ZeroGPU Space only: load the model (its weights must be on CUDA when
    ``spaces`` packs them at launch) and decorate every job (``spaces`` reports its GPU functions at launch;
    none decorated then, none is registered). Elsewhere nothing: the model loads in the background. Returns
    whether it ran."""
    if not zerogpu.on_zerogpu():
        return False
    zerogpu.register_base(rt.model.get())
    for kind in zerogpu.JOBS:
        zerogpu.gpu_job(kind, GPU)
    return True


def warm_up(rt: Runtime) -> dict | None:
    """Before the page serves (off ZeroGPU, unless ``NSCVF_WARMUP=0``): load the model here and run the
    engine's warm-up request (:func:`nscvf.method.warmup.warm_up`: the image sets, the base model's features
    and covariances, torch's first passes), so that a first visitor's click is a warm request, and the
    estimate's seconds per step are this machine's (:meth:`~webapp.state.runtime.Estimate.calibrate`). Returns
    what it did, or None; a failure is logged and the page serves anyway (the first request then does the work)."""
    try:
        vlm = rt.model.get()
    except NotReady:
        return None  # the page says why the model is missing
    try:
        out = engine_warm_up(vlm)
    except Exception:  # noqa: BLE001  (never keeps the page from serving)
        log.warning("warm-up failed (the first request does its work):\n%s", traceback.format_exc())
        return None
    if out is not None:
        rt.estimate.calibrate(out.get("timings"))  # so that the first visitors' ETAs are this machine's
        log.info("warm-up request on %s: %.1f s (%.1f CPU s, %s s per step)", out["target"], out["seconds"],
                 out["cpu_seconds"], out.get("timings", {}).get("seconds_per_step"))  # fmt: skip
    return out


def gpu_state(rt: Runtime, sess: Session, upto: int | None = None) -> zerogpu.ChainState:
    """The session's chain (its first ``upto`` requests; default all) as a ZeroGPU call's input. The loaded
    model is registered as the process's base, so an in-process job (and a ZeroGPU worker forked from this
    process) uses it instead of loading it again."""
    chain = ensure_chain(rt, sess)
    zerogpu.register_base(chain.base_vlm)
    return zerogpu.chain_state(chain, upto)


def base_state(rt: Runtime, model: str | None = None) -> zerogpu.ChainState:
    """The base model ``model`` (a ModelChoice key; None: the default) alone, no session, as a call's input (who
    the images show, before any training)."""
    h = rt.holder(model)
    vlm = h.get()
    zerogpu.register_base(vlm)
    cls = type(vlm)
    cache_dir = None if h.cache is None or h.cache.directory is None else str(h.cache.directory)
    return zerogpu.ChainState(vlm.source, vlm.fingerprint, float(cls.step_seconds), float(cls.fixed_seconds),
                              cache_dir=cache_dir)  # fmt: skip


def gpu_call(kind: str, state: zerogpu.ChainState, request, job: Job | None = None):
    """One GPU job of ``kind`` (:func:`nscvf.zerogpu.run`): its progress goes to ``job``, the job's cancel
    flag (Cancel, the time limit) closes it at its next step boundary (:class:`~nscvf.errors.Cancelled`)."""
    if job is None:
        return zerogpu.run(kind, state, request, gpu=GPU)
    return zerogpu.run(kind, state, request, progress=job.update, cancel=job.cancel, gpu=GPU)


@contextmanager
def turn(rt: Runtime, sess: Session, job: Job, seconds: float, progress, expected=None):
    """This session's training in a fair turn between visitors (:mod:`webapp.state.turns`; ``seconds`` at
    most, ``expected`` its cost for the ETAs, which the job's pace refines while it runs): while it waits,
    the page says how many are ahead and when its turn comes; Cancel drops it. Yields the seconds waited.
    A turn is at least 1.5x a request at the default Steps, so an ordinary request is never long, however
    slow this machine's estimate has become."""

    def waiting(place):
        lane = "long requests" if place.long else "requests"
        progress(0.0, desc=f"waiting for a turn: {place.ahead} of other visitors' {lane} ahead, your turn in about "
                           f"{place.eta_s:.0f} s")  # fmt: skip

    ordinary = 1.5 * rt.estimate.seconds(UnlearnConfig().steps)
    with rt.turns.turn(sess.sid, seconds, job.cancel, waiting, turn_s=ordinary, expected=expected, pace=job.pace) as waited:
        if waited:
            log.info("%s waited %.1f s for a turn (%.0f s estimated)", sess.sid[:8], waited, seconds)
        yield waited


def check_cancel(job: Job) -> None:
    if job.cancel.is_set():
        raise Cancelled("cancelled; the model is unchanged")


def applied_record(chain, out: zerogpu.StepOutcome, images, job: Job, umap, t0: float) -> RequestRecord:
    """The record of the request a GPU call returned (``out``: its result, adapter weights and retained
    answers), its plots drawn here, then appended to the session's ``chain``. Cancelled before it is
    appended, the chain is as it was."""
    r = UnlearnResult(**out.result)
    job.update("drawing plots", 0, 1)
    check_cancel(job)
    tp = time.time()
    figures = draw_figures(r.embeddings, umap)
    plots_s = round(time.time() - tp, 3)
    check_cancel(job)
    chain.restore(r, out.adapter_state, list(images))
    return RequestRecord(r, out.adapter_state, out.extra or [], figures, round(time.time() - t0, 3), plots_s, time.time())


def restore(chain, rec: RequestRecord, images) -> None:
    """Append a finished request to ``chain`` from its record (no retraining)."""
    chain.restore(rec.result, rec.adapter_state, images)


def store(rt: Runtime, rec: RequestRecord, sess: Session | None = None) -> None:
    """Keep a finished record in the result cache of the session's model under its key (a failure is logged,
    never raised)."""
    try:
        rt.holder_of(sess).cache.set(rec.key, rec.to_dict())
    except Exception:  # noqa: BLE001  (a full disk must not lose the shown result)
        log.warning("could not store the result:\n%s", traceback.format_exc())


_STAGE_SPAN = {
    "reading images": (0.0, 0.02),
    "base answers": (0.02, 0.12),
    "evaluating (before)": (0.12, 0.3),
    "null space": (0.12, 0.35),
    "step": (0.35, 0.85),
    "evaluating": (0.85, 0.96),
    "retained characters": (0.96, 0.98),
    "drawing plots": (0.98, 1.0),
    "evaluating before": (0.0, 0.5),
    "evaluating after": (0.5, 1.0),
}


def fraction(job: Job) -> float:
    key = "step" if job.stage.startswith("step ") or "ing step " in job.stage else job.stage  # teaching/relearning
    lo, hi = _STAGE_SPAN.get(key, (0.0, 0.0))
    return min(1.0, lo + (hi - lo) * min(1.0, job.step / job.total))


def run_job(job: Job, fn, progress, time_limit: float, name: str, margin: float | None = None):
    """Run ``fn`` in a worker thread; meanwhile refresh the progress (stage, fraction, seconds) every
    POLL_S. The job's cancel flag is set at ``time_limit`` (plus ``margin``: a Forget's call stops training
    by itself ``margin`` before the limit, ``ForgetJob.stop_after_s``, and is still measured and kept). Returns fn's value or raises its error."""
    ctx = contextvars.copy_context()  # carries the request context (ZeroGPU's spaces.GPU reads it)
    out: dict = {}

    def work():
        try:
            out["value"] = ctx.run(fn)
        except BaseException as e:  # noqa: BLE001  (re-raised below, in the caller's thread)
            out["error"] = e
        finally:
            finished.set()

    finished = threading.Event()
    t0 = time.time()
    threading.Thread(target=work, name=name, daemon=True).start()
    shown, last = None, 0.0
    while not finished.wait(0.1):  # a new stage at once, and the same one again every POLL_S
        elapsed = time.time() - t0
        if elapsed > time_limit + (margin or 0) and not job.cancel.is_set():
            job.timed_out = True
            job.cancel.set()
        if job.stage != shown or elapsed - last >= POLL_S:
            shown, last = job.stage, elapsed
            progress(fraction(job), desc=f"{job.stage} · {elapsed:.0f} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


def shown_images(rec: RequestRecord | None) -> tuple[list, list[str]]:
    """The images and paths of a record's forget set, as uploaded (empty when the files are gone)."""
    paths = [p for p in (rec.paths if rec is not None else ()) if p]
    try:
        return [load_image(p) for p in paths], paths
    except (InputError, OSError):
        return [], []
