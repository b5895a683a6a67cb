"""A session's Forget, its evaluation, and Undo/Reset, without Gradio.

Each operation runs inside ``session.exclusive(...)``; a Forget restores the identical request from the
result cache or runs it in a worker thread (:func:`webapp.service.jobs.run_job`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nscvf.errors import Cancelled
from webapp.service.form import ForgetRequest, check_time, page_target, parse_forget
from webapp.service.jobs import ensure_chain, restore, run_job, shown_record, store
from webapp.service.showcase import refresh_figures
from webapp.state.records import Evaluation, RequestRecord, result_key
from webapp.state.runtime import Runtime, gpu
from webapp.state.sessions import Job, Session


@gpu
def compute(chain, req: ForgetRequest, target: str | None, job: Job, umap) -> RequestRecord:
    """One request, start to finish (the function ZeroGPU would give a GPU): train, probe, draw. The job's
    ``stop`` (set before the time limit) ends training and keeps what it learned as a partial request."""
    t0 = time.time()
    r = chain.forget(req.images, req.retain, req.cfg, progress=job.update, cancel=job.cancel, target=target, stop=job.stop)
    return shown_record(chain, r, job, umap, t0, req.retain)


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


def train(rt: Runtime, sess: Session, job: Job, req: ForgetRequest, target: str | None) -> RequestRecord:
    """Run the request (Cancelled when cancelled, or stopped at the time limit before anything was learned)."""
    chain = sess.chain
    n_before = len(chain)
    margin = rt.estimate.stop_margin()
    rec = run_job(job, lambda: compute(chain, req, target, job, rt.warmup), progress=job.progress,
                  time_limit=rt.settings.time_limit, name=f"forget-{sess.sid[:8]}", margin=margin)  # fmt: skip
    if len(chain) == n_before:  # the compute ran elsewhere (ZeroGPU): apply its adapter here
        restore(chain, rec, req.images)
    rt.estimate.update(rec.result.timings, rec.job_s)
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
        key = result_key(chain.state_fingerprint, req.forget_fp, req.cfg, target, req.retain_fp)
        sess.numbers_due = False
        rec = RequestRecord.from_dict(rt.model.cache.get(key))
        restored = rec is not None
        if restored:
            progress(0.5, desc="restoring the finished request from the cache")
            restore(chain, rec, req.images)
        else:
            n_before = len(chain)
            try:
                rec = train(rt, sess, job, req, target).replace(key=key)
            except Cancelled:
                why = "time limit" if job.timed_out else "cancelled"
                return ForgetOutcome(None, n_before, time.time() - t0, stopped=why, request=req)
            if not rec.result.partial:  # a partial request is kept, not reused for the full one
                store(rt, rec)
        seconds = round(time.time() - t0, 2)
        rec = rec.replace(names=req.names, paths=tuple(req.paths), evaluation=req.evaluation, shown_s=seconds,
                          restored=restored, retain=tuple(req.retain or ()), evaluable=chain.domain.can_evaluate(rec.target) and rec.target not in chain.taught,
                          world=chain.domain.is_world)  # fmt: skip
        sess.records.append(rec)
        sess.numbers_due = True
        return ForgetOutcome(rec, len(chain), seconds, restored, request=req)


@gpu
def evaluate_states(chain, target, mode: str, job: Job) -> Evaluation:
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
            ev = run_job(job, lambda: evaluate_states(chain, rec.target, mode, job), progress, rt.settings.time_limit,
                         f"numbers-{sess.sid[:8]}")  # fmt: skip
        except Cancelled:  # the page says so: no "evaluating..." left behind (issue 19 item 9)
            rec = sess.records[-1] = rec.replace(evaluation="cancelled")
            return NumbersOutcome(rec, cancelled=True)
        rec = sess.records[-1] = rec.replace(evals=ev)
        if rec.key is not None:  # a repeat (also after a restart) shows the numbers at once
            stored = RequestRecord.from_dict(rt.model.cache.get(rec.key))
            if stored is not None:
                store(rt, stored.replace(evals=ev))
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
