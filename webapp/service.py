"""The app's operations on a session, without Gradio: forget, restore, evaluate, undo/reset, ask.

The only code that touches both a session and the engine, and only through the engine's public API
(``UnlearningChain.forget/restore/undo/reset/evaluate/adapter_state``, ``chain.domain``, ``chain.vlm``).
Each operation runs inside ``session.exclusive(...)``; a Forget or an evaluation runs in a worker thread so
that ``progress(fraction, desc=...)`` names the stage at least every :data:`~webapp.settings.POLL_S` and
the time limit / Cancel stop it through the job's cancel flag.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from dataclasses import dataclass

from nscvf.errors import Cancelled, InputError
from nscvf.images import load_image
from webapp.form import ForgetRequest, check_time, image_paths, make_config, page_target, parse_forget  # noqa: F401
from webapp.records import Evaluation, RequestRecord, result_key
from webapp.runtime import Runtime, gpu
from webapp.sessions import Job, Session
from webapp.settings import MAX_QUESTION
from webapp.showcase import draw_figures, refresh_figures, retain_rows

log = logging.getLogger("nscvf.app")

# ------------------------------------------------------------------------------------ the session


def ensure_chain(rt: Runtime, sess: Session):
    """The session's chain (made on first use: adapters on the shared base, no model copy)."""
    if sess.chain is None:
        from nscvf.method.chain import UnlearningChain

        sess.chain = UnlearningChain(rt.model.get(), rt.model.cache)
    return sess.chain


def _check(job: Job) -> None:
    if job.cancel.is_set():
        raise Cancelled("cancelled; the model is unchanged")


@gpu
def compute(chain, req: ForgetRequest, target: str | None, job: Job, projector) -> RequestRecord:
    """One request, start to finish (the function ZeroGPU would give a GPU): train, probe, draw. The job's
    ``stop`` (set before the time limit) ends training and keeps what it learned as a partial request."""
    t0 = time.time()
    r = chain.forget(req.images, req.retain, req.cfg, progress=job.update, cancel=job.cancel, target=target, stop=job.stop)
    return shown_record(chain, r, job, projector, t0, req.retain)


def shown_record(chain, r, job: Job, projector, t0: float, retain=None) -> RequestRecord:
    """The record of the request ``r`` just added to ``chain``: the retained characters' answers and the
    plots; cancelled (or failed) meanwhile, the request is undone and the chain is as it was."""
    try:
        job.update("retained characters", 0, 1)
        _check(job)
        rows = retain_rows(chain, r.target, retain)
        job.update("drawing plots", 0, 1)
        _check(job)
        tp = time.time()
        figures = draw_figures(r.embeddings, projector)
        plots_s = round(time.time() - tp, 3)
    except BaseException:
        chain.undo()
        raise
    state = {k: v.detach().cpu().clone() for k, v in chain.adapter_state().items()}
    return RequestRecord(r.to_dict(), state, rows, figures, round(time.time() - t0, 3), plots_s, time.time())


def restore(chain, rec: RequestRecord, images) -> None:
    """Append a finished request to ``chain`` from its record (no retraining)."""
    chain.restore(rec.result, rec.adapter_state, images)


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
    from webapp.settings import POLL_S

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


# ------------------------------------------------------------------------------------ operations


@dataclass(frozen=True)
class ForgetOutcome:
    """What a Forget did: ``record`` (None when it stopped), the number of requests ``k`` of the chain after
    it, the seconds it took since the click (queue included), whether it was restored from the cache, and
    why it stopped (``stopped``: "queued" when Cancel dropped it before it started, "cancelled", "time limit")."""

    record: RequestRecord | None
    k: int
    seconds: float
    restored: bool = False
    stopped: str | None = None
    request: ForgetRequest | None = None  # the parsed form (its images and file names, for the gallery)


def _store(rt: Runtime, rec: RequestRecord) -> None:
    try:
        rt.model.cache.set(rec.key, rec.to_dict())
    except Exception:  # noqa: BLE001  (a full disk must not lose the shown result)
        log.warning("could not store the result:\n%s", traceback.format_exc())


def _train(rt: Runtime, sess: Session, job: Job, req: ForgetRequest, target: str | None) -> RequestRecord:
    """Run the request (Cancelled when cancelled, or stopped at the time limit before anything was learned)."""
    chain = sess.chain
    n_before = len(chain)
    margin = rt.estimate.stop_margin()
    rec = run_job(job, lambda: compute(chain, req, target, job, rt.warmup), progress=job.progress,
                  time_limit=rt.settings.time_limit, name=f"forget-{sess.sid[:8]}", margin=margin)  # fmt: skip
    if len(chain) == n_before:  # the compute ran elsewhere (ZeroGPU): apply its adapter here
        restore(chain, rec, req.images)
    rt.estimate.update(rec.result.get("timings"), rec.job_s)
    return rec


def forget(rt: Runtime, sess: Session, form: dict, progress=lambda *a, **k: None) -> ForgetOutcome:
    """One Forget of this session: parse the form, restore the identical request from the cache or run it."""
    t0 = sess.clicked_at() or time.time()
    if not sess.dequeued():
        return ForgetOutcome(None, len(sess.chain) if sess.chain else 0, time.time() - t0, stopped="queued")
    with sess.exclusive("request") as job:
        job.progress = progress
        progress(0.0, desc="reading images")
        req = parse_forget(form, rt.settings.max_files)
        check_time(req.cfg, rt.estimate, rt.settings.time_limit)
        progress(0.01, desc="waiting for the model to load" if not rt.model.ready else "preparing")
        chain = ensure_chain(rt, sess)
        target = page_target(chain.domain, req.name, chain.taught)
        key = result_key(chain.state_fingerprint, req.images, req.cfg, target, req.retain)
        sess.numbers_due = False
        rec = RequestRecord.from_dict(rt.model.cache.get(key))
        restored = rec is not None
        if restored:
            progress(0.5, desc="restoring the finished request from the cache")
            restore(chain, rec, req.images)
        else:
            n_before = len(chain)
            try:
                rec = _train(rt, sess, job, req, target).replace(key=key)
            except Cancelled:
                why = "time limit" if job.timed_out else "cancelled"
                return ForgetOutcome(None, n_before, time.time() - t0, stopped=why, request=req)
            if not rec.result.get("partial"):  # a partial request is kept, not reused for the full one
                _store(rt, rec)
        seconds = round(time.time() - t0, 2)
        rec = rec.replace(names=req.names, paths=tuple(req.paths), evaluation=req.evaluation, shown_s=seconds,
                          restored=restored, retain=tuple(req.retain or ()), evaluable=chain.domain.can_evaluate(rec.target) and rec.target not in chain.taught,
                          world=chain.domain.is_world)  # fmt: skip
        sess.records.append(rec)
        sess.numbers_due = True
        return ForgetOutcome(rec, len(chain), seconds, restored, request=req)


@gpu
def _evaluate_states(chain, target, mode: str, job: Job) -> Evaluation:
    """The engine's evaluation of the states before and after the last request (cached by the engine under
    the state's fingerprint: request k's *before* is request k-1's *after*)."""
    n, seconds, out = len(chain), {}, {}
    for which, k in (("before", n - 1), ("after", n)):

        def cb(done, total, which=which):
            if job.cancel.is_set():
                raise Cancelled("evaluation cancelled")
            job.update(f"evaluating {which}", done, total)

        cb(0, 1)
        t = time.time()
        out[which] = chain.evaluate(target, mode, k=k, progress=cb)
        seconds[which] = round(time.time() - t, 2)
    return Evaluation(mode, out["before"], out["after"], seconds["before"], seconds["after"])


@dataclass(frozen=True)
class NumbersOutcome:
    """The last record after an evaluation (None: nothing to evaluate yet), and whether it was cancelled."""

    record: RequestRecord | None
    cancelled: bool = False


def evaluate(rt: Runtime, sess: Session, mode: str | None, progress=lambda *a, **k: None) -> NumbersOutcome:
    """Accuracies before and after the last request, run after its answers are shown (skipped when
    ``mode`` is "none", when they are there already, or when the model's domain has no questions)."""
    mode = mode or "quick"
    with sess.exclusive("evaluation") as job:
        if not sess.records or sess.chain is None:
            return NumbersOutcome(None)
        rec = sess.records[-1] = sess.records[-1].replace(evaluation=mode)
        sess.numbers_due = False
        if mode == "none" or (rec.evals and rec.evals.mode == mode) or not rec.evaluable:
            return NumbersOutcome(rec)
        chain = sess.chain
        try:
            ev = run_job(job, lambda: _evaluate_states(chain, rec.target, mode, job), progress, rt.settings.time_limit,
                         f"numbers-{sess.sid[:8]}")  # fmt: skip
        except Cancelled:
            return NumbersOutcome(rec, cancelled=True)
        rec = sess.records[-1] = rec.replace(evals=ev)
        if rec.key is not None:  # a repeat (also after a restart) shows the numbers at once
            stored = RequestRecord.from_dict(rt.model.cache.get(rec.key))
            if stored is not None:
                _store(rt, stored.replace(evals=ev))
        return NumbersOutcome(rec)


def rewind(rt: Runtime, sess: Session, reset: bool = False) -> RequestRecord | None | bool:
    """Undo the last request (or every one): the record now shown (None: the base model), or False when
    there was nothing to undo."""
    with sess.exclusive("undo"):
        chain = sess.chain
        if chain is None or len(chain) == 0:
            return False
        if reset:
            chain.reset()
            sess.records.clear()
        else:
            chain.undo()
            sess.records.pop()
        if not sess.records:
            return None
        rec = sess.records[-1] = refresh_figures(rt.warmup, sess.records[-1])
        return rec


def shown_images(rec: RequestRecord | None) -> tuple[list, list[str]]:
    """The images and paths of a record's forget set, as uploaded (empty when the files are gone)."""
    paths = [p for p in (rec.paths if rec is not None else ()) if p]
    try:
        return [load_image(p) for p in paths], paths
    except (InputError, OSError):
        return [], []


def identify(rt: Runtime, files, given: str | None = None, wait_s: float = 60.0):
    """Who the base model says the uploaded images show (before training): an
    :class:`nscvf.method.outcome.Identification` with its warnings, or None (no readable image, or the model
    is not loaded yet)."""
    from nscvf.method.domain import domain_for
    from nscvf.method.outcome import identify as identify_images

    if not files or not rt.model.wait(wait_s) or not rt.model.ready:
        return None
    images = []
    for p in image_paths(files, rt.settings.max_files):
        try:
            images.append(load_image(p))
        except InputError:
            pass  # the preview names the bad file
    if not images:
        return None
    vlm = rt.model.vlm
    return identify_images(vlm, domain_for(vlm), images, (given or "").strip() or None)


@dataclass(frozen=True)
class Answers:
    base: str
    current: str
    k: int  # requests in the session's chain (0: the current model is the base model)


def ask(rt: Runtime, sess: Session, question: str | None, image_file=None) -> Answers:
    """The base model's and this session's model's answers to one question (about an image, or text only)."""
    q = (question or "").strip()
    if not q:
        raise InputError("the question is empty: type a question")
    if len(q) > MAX_QUESTION:
        raise InputError(f"the question is {len(q)} characters long; use at most {MAX_QUESTION}")
    imgs = [load_image(image_paths(image_file, 1)[0])] if image_file else None
    with sess.reading("question"):
        chain = ensure_chain(rt, sess)
        base = chain.base_vlm.generate([q], imgs, max_new_tokens=24)[0]
        current = chain.vlm.generate([q], imgs, max_new_tokens=24)[0] if len(chain) else base
        return Answers(base, current, len(chain))
