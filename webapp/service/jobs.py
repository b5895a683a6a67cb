"""What every operation on a session shares, without Gradio: the session's chain (:func:`ensure_chain`),
a job run in a worker thread with its progress, time limit and Cancel (:func:`run_job`), the record of a
request just added to the chain (:func:`shown_record`), restoring one (:func:`restore`), storing one
(:func:`store`) and a record's images as uploaded (:func:`shown_images`).

A Forget, a Teach, an evaluation or a comparison runs in a worker thread so that ``progress(fraction,
desc=...)`` names the stage at least every :data:`~webapp.state.settings.POLL_S` and the time limit /
Cancel stop it through the job's cancel flag. Only the engine's public API is used
(``UnlearningChain.forget/restore/undo/reset/evaluate/adapter_state``, ``chain.domain``, ``chain.vlm``).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback

from nscvf.errors import Cancelled, InputError
from nscvf.images import load_image
from nscvf.method.chain import UnlearningChain
from webapp.service.showcase import draw_figures, retain_rows
from webapp.state.records import RequestRecord
from webapp.state.runtime import Runtime
from webapp.state.sessions import Job, Session
from webapp.state.settings import POLL_S

log = logging.getLogger("nscvf.app")


def ensure_chain(rt: Runtime, sess: Session) -> UnlearningChain:
    """The session's chain (made on first use: adapters on the shared base, no model copy)."""
    if sess.chain is None:
        sess.chain = UnlearningChain(rt.model.get(), rt.model.cache)
    return sess.chain


def check_cancel(job: Job) -> None:
    if job.cancel.is_set():
        raise Cancelled("cancelled; the model is unchanged")


def shown_record(chain, r, job: Job, umap, t0: float, retain=None) -> RequestRecord:
    """The record of the request ``r`` just added to ``chain``: the retained characters' answers and the
    plots; cancelled (or failed) meanwhile, the request is undone and the chain is as it was."""
    try:
        job.update("retained characters", 0, 1)
        check_cancel(job)
        rows = retain_rows(chain, r.target, retain)
        job.update("drawing plots", 0, 1)
        check_cancel(job)
        tp = time.time()
        figures = draw_figures(r.embeddings, umap)
        plots_s = round(time.time() - tp, 3)
    except BaseException:
        chain.undo()
        raise
    state = {k: v.detach().cpu().clone() for k, v in chain.adapter_state().items()}
    return RequestRecord(r, state, rows, figures, round(time.time() - t0, 3), plots_s, time.time())


def restore(chain, rec: RequestRecord, images) -> None:
    """Append a finished request to ``chain`` from its record (no retraining)."""
    chain.restore(rec.result, rec.adapter_state, images)


def store(rt: Runtime, rec: RequestRecord) -> None:
    """Keep a finished record in the result cache under its key (a failure is logged, never raised)."""
    try:
        rt.model.cache.set(rec.key, rec.to_dict())
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
    POLL_S. With ``margin``: at ``time_limit - margin`` the job's ``stop`` is set (training ends, what it
    learned is measured and kept) and only at ``time_limit + margin`` its cancel flag; without, the cancel
    flag at the limit. Returns fn's value or raises its error."""
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
        if margin is not None and elapsed > time_limit - margin and not job.stop.is_set():
            job.stop.set()
            log.info("%s: stopping training %.0f s before the time limit (kept as a partial request)", name, margin)
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
