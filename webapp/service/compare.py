"""Method A/B (issue 12 item 4): the session's last forget request run again with a second method, on the
same images, target and settings, from the state the session's chain was in before that request. Without
Gradio; the side-by-side table is :mod:`webapp.views.compare`.

The second run is one GPU call (:func:`webapp.service.jobs.gpu_call`) on the session's chain as it was
before that request (its earlier requests replayed by the call, no retraining); the call's chain is closed
again (its adapters freed) and the session's chain is never changed.
"""

from __future__ import annotations

import time

from nscvf import zerogpu
from nscvf.errors import Cancelled, InputError
from nscvf.method.config import UnlearnConfig
from nscvf.method.methods import all_methods, method_config
from nscvf.method.result import UnlearnResult
from webapp.service.jobs import check_cancel, gpu_call, gpu_state, run_job, shown_images, turn
from webapp.service.showcase import draw_figures
from webapp.state.records import Comparison, RequestRecord, Side
from webapp.state.runtime import Runtime
from webapp.state.sessions import Job, Session

NOTHING_YET = "nothing to compare yet: press Forget first, then run the same request with another method"


def _last_forget(sess: Session) -> int | None:
    """The index (0-based) of the session's last forget request (not a teach request), or None."""
    return next((i for i in range(len(sess.records) - 1, -1, -1) if not sess.records[i].is_teach), None)


def _second_config(rec: RequestRecord, method: str):
    if method not in all_methods():
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(all_methods())}")
    cfg = UnlearnConfig.from_dict(rec.result.config).replace(method=method, evaluate="none")
    return method_config(cfg)


def _run_other(rt: Runtime, sess: Session, i: int, images: list, rec: RequestRecord, cfg, job: Job) -> Side:
    """Request ``i`` again with ``cfg``, on the session's state before it (one GPU call), and its plot."""
    t0 = time.time()
    request = zerogpu.ForgetJob(tuple(images), cfg, tuple(rec.retain) or None, rec.target)
    out = gpu_call("compare", gpu_state(rt, sess, upto=i), request, job)
    r = UnlearnResult(**out.result)
    job.update("drawing plots", 0, 1)
    check_cancel(job)
    fig = draw_figures(r.embeddings, rt.warmup).get("after")
    return Side(cfg.method, r, fig, round(time.time() - t0, 2))


def compare_methods(rt: Runtime, sess: Session, method, progress=lambda *a, **k: None, cancel=None) -> Comparison | None:
    """Run the session's last forget request again with ``method`` (see the module). None when cancelled
    (Cancel, the time limit or the ``cancel`` Event); InputError when there is nothing to compare."""
    method = (method or "").strip() or "gd"
    with sess.exclusive("comparison") as job:
        i = _last_forget(sess)
        if i is None or sess.chain is None:
            raise InputError(NOTHING_YET)
        rec = sess.records[i]
        images = shown_images(rec)[0]
        if not images:
            raise InputError("the images of that request are gone (an imported timeline): forget them again to compare")
        cfg = _second_config(rec, method)
        chain = sess.chain
        if cancel is not None:
            job.cancel = cancel
        try:
            with turn(rt, sess, job, rt.estimate.seconds(cfg.steps), progress, rt.estimate.cost(cfg, sess.model)):
                second = run_job(job, lambda: _run_other(rt, sess, i, images, rec, cfg, job), progress,
                                 rt.settings.time_limit, f"compare-{sess.sid[:8]}")  # fmt: skip
        except Cancelled:
            return None
        first = Side(rec.result.method or rec.result.config["method"], rec.result, rec.figures.get("after"), rec.job_s)
        return Comparison(first, second, rec.target, len(images), chain.domain.names_things)
