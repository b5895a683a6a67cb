"""A session's Forget, its evaluation, and Undo/Reset, without Gradio.

Each operation runs inside ``session.exclusive(...)``; a Forget restores the identical request from the
result cache or runs it as one GPU job (:func:`webapp.service.jobs.gpu_call`, in a worker thread:
:func:`webapp.service.jobs.run_job`), as does the evaluation that follows it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from nscvf import zerogpu
from nscvf.errors import Cancelled
from webapp.service.form import ForgetRequest, check_time, page_target, parse_forget
from webapp.service.jobs import applied_record, ensure_chain, gpu_call, gpu_state, restore, run_job, store, turn
from webapp.service.showcase import refresh_figures, retained_answers
from webapp.state.records import Evaluation, RequestRecord, result_key
from webapp.state.runtime import Runtime
from webapp.state.sessions import Job, Session


def compute(rt: Runtime, sess: Session, req: ForgetRequest, target: str | None, job: Job, stop_after_s: float) -> RequestRecord:
    """One request, start to finish: train and probe in one GPU call (the retained characters' answers in
    the same call), then the plots here and the new adapter appended to the session's chain. Training
    stops ``stop_after_s`` after the call starts and keeps what it learned (a partial request)."""
    t0 = time.time()
    retain = tuple(req.retain) if req.retain else None
    request = zerogpu.ForgetJob(tuple(req.images), req.cfg, retain, target, stop_after_s=stop_after_s,
                                then=functools.partial(retained_answers, retain=retain))  # fmt: skip
    out = gpu_call("forget", gpu_state(rt, sess), request, job)
    return applied_record(sess.chain, out, req.images, job, rt.warmup, t0)


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
    margin = rt.estimate.stop_margin()
    stop_after = max(1.0, rt.settings.time_limit - margin)
    rec = run_job(job, lambda: compute(rt, sess, req, target, job, stop_after), progress=job.progress,
                  time_limit=rt.settings.time_limit, name=f"forget-{sess.sid[:8]}", margin=margin)  # fmt: skip
    r = rec.result
    ran_out = r.config.get("stop_when_forgotten") and not r.partial and r.config.get("steps")  # stopped on its own
    rt.estimate.update(r.timings, rec.job_s, r.steps_run / r.config["steps"] if ran_out else None)
    return rec


def forget(rt: Runtime, sess: Session, form: dict, progress=lambda *a, **k: None) -> ForgetOutcome:
    """One Forget of this session: parse the form, restore the identical request from the cache or run it."""
    t0 = sess.clicked_at() or time.time()
    if not sess.dequeued():
        return ForgetOutcome(None, len(sess.chain) if sess.chain else 0, time.time() - t0, stopped="queued")

    def waiting():
        progress(0.0, desc="waiting for the accuracies of the last request (they are being computed)")

    with sess.exclusive("request", evaluation="wait", waiting=waiting) as job:
        if sess.dropped():  # Cancel pressed while it waited for the accuracies
            return ForgetOutcome(None, len(sess.chain) if sess.chain else 0, time.time() - t0, stopped="queued")
        job.progress = progress
        progress(0.0, desc="reading images")
        req = parse_forget(form, rt.settings.max_files)
        check_time(req.cfg, rt.estimate, rt.settings.time_limit, rt.settings.steps_hi)
        progress(0.01, desc="waiting for the model to load" if not rt.holder_of(sess).ready else "preparing")
        chain = ensure_chain(rt, sess)
        target = page_target(chain.domain, req.name, chain.taught)
        key = result_key(chain.state_fingerprint, req.forget_fp, req.cfg, target, req.retain_fp)
        sess.numbers_due = False
        rec = RequestRecord.from_dict(rt.holder_of(sess).cache.get(key))
        restored = rec is not None
        if restored:
            progress(0.5, desc="restoring the finished request from the cache")
            restore(chain, rec, req.images)
        else:
            n_before = len(chain)
            try:
                with turn(rt, sess, job, rt.estimate.seconds(req.cfg.steps), progress, rt.estimate.cost(req.cfg, sess.model)):
                    rec = train(rt, sess, job, req, target).replace(key=key)
            except Cancelled:
                why = "time limit" if job.timed_out else "cancelled"
                return ForgetOutcome(None, n_before, time.time() - t0, stopped=why, request=req)
            if not rec.result.partial:  # a partial request is kept, not reused for the full one
                store(rt, rec, sess)
        seconds = round(time.time() - t0, 2)
        rec = rec.replace(names=req.names, paths=tuple(req.paths), evaluation=req.evaluation, shown_s=seconds,
                          restored=restored, retain=tuple(req.retain or ()), evaluable=chain.domain.can_evaluate(rec.target) and rec.target not in chain.taught,
                          world=chain.domain.names_things)  # fmt: skip
        sess.records.append(rec)
        sess.numbers_due = True
        return ForgetOutcome(rec, len(chain), seconds, restored, request=req)


def evaluate_states(rt: Runtime, sess: Session, target, mode: str, job: Job) -> Evaluation:
    """The engine's evaluation of the states before and after the last request, one GPU call (cached by
    the engine under the state's fingerprint: request k's *before* is request k-1's *after*)."""
    out = gpu_call("evaluate", gpu_state(rt, sess), zerogpu.EvaluateJob(target, mode), job)
    ev, s = out["evaluations"], out["seconds"]
    return Evaluation(mode, ev["before"], ev["after"], s["before"], s["after"])


@dataclass(frozen=True)
class NumbersOutcome:
    """The last record after an evaluation (None: nothing to evaluate yet), and whether it was cancelled."""

    record: RequestRecord | None
    cancelled: bool = False
    superseded: bool = False  # cancelled by an Undo or Reset of the same session (which shows the state now)


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
        try:
            ev = run_job(job, lambda: evaluate_states(rt, sess, rec.target, mode, job), progress, rt.settings.time_limit,
                         f"numbers-{sess.sid[:8]}")  # fmt: skip
        except Cancelled:
            superseded = job.superseded_by is not None  # an Undo/Reset stopped it: its record may be gone
            if not superseded:  # the page says so: no "evaluating..." left behind (issue 19 item 9)
                rec = sess.records[-1] = rec.replace(evaluation="cancelled")
            return NumbersOutcome(rec, cancelled=True, superseded=superseded)
        rec = sess.records[-1] = rec.replace(evals=ev)
        if rec.key is not None:  # a repeat (also after a restart) shows the numbers at once
            stored = RequestRecord.from_dict(rt.holder_of(sess).cache.get(rec.key))
            if stored is not None:
                store(rt, stored.replace(evals=ev), sess)
        return NumbersOutcome(rec)


def rewind(rt: Runtime, sess: Session, reset: bool = False) -> RequestRecord | None | bool:
    """Undo the last request (or every one): the record now shown (None: the base model), or False when
    there was nothing to undo."""
    with sess.exclusive("reset" if reset else "undo", evaluation="cancel"):
        chain = sess.chain
        if chain is None or len(chain) == 0:
            return False
        sess.numbers_due = False  # the undone request's accuracies are not due any more
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
