"""Method A/B (issue 12 item 4): the session's last forget request run again with a second method, on the
same images, target and settings, from the state the session's chain was in before that request; shown
side by side. Without Gradio.

The second run uses a throwaway :class:`~nscvf.method.chain.UnlearningChain` on the shared base: the
session's earlier requests are replayed into it (``restore``, no retraining), the second method trains on
top, and the throwaway chain is closed (its adapters freed). The session's chain is never changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nscvf.errors import Cancelled, InputError
from webapp.records import RequestRecord
from webapp.runtime import Runtime, gpu
from webapp.service import shown_images
from webapp.sessions import Job, Session
from webapp.showcase import draw_figures

NOTHING_YET = "nothing to compare yet: press Forget first, then run the same request with another method"


@dataclass(frozen=True)
class Side:
    """One method's run of the request: its result dict (``UnlearnResult.to_dict()``) and "after" figure."""

    method: str
    result: dict
    figure: str | None  # plotly JSON of the "after" embeddings
    seconds: float | None = None


@dataclass(frozen=True)
class Comparison:
    """The session's request (``first``) and the same request with another method (``second``)."""

    first: Side
    second: Side
    target: str | None
    n_forget: int
    world: bool = True


def _last_forget(sess: Session) -> int | None:
    """The index (0-based) of the session's last forget request (not a teach request), or None."""
    return next((i for i in range(len(sess.records) - 1, -1, -1) if sess.records[i].result.get("kind") != "teach"), None)


def _second_config(rec: RequestRecord, method: str):
    from nscvf.method.config import UnlearnConfig
    from nscvf.method.methods import all_methods, method_config

    if method not in all_methods():
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(all_methods())}")
    cfg = UnlearnConfig(**rec.result["config"]).replace(method=method, evaluate="none")
    return method_config(cfg.validate())


@gpu
def _run_other(chain, earlier: list, images: list, rec: RequestRecord, cfg, job: Job, projector) -> Side:
    """The request with ``cfg`` on a throwaway chain replaying ``earlier`` [(record, images)] (always closed)."""
    from nscvf.method.chain import UnlearningChain

    t0 = time.time()
    other = UnlearningChain(chain.base_vlm, chain.cache)
    try:
        for k, (prev, prev_images) in enumerate(earlier, start=1):
            job.update("replaying earlier requests", k, len(earlier))
            other.restore(prev.result, chain.adapter_state(k), prev_images)
        retain = list(rec.retain) or None
        r = other.forget(images, retain, cfg, progress=job.update, cancel=job.cancel, target=rec.target)
        job.update("drawing plots", 0, 1)
        if job.cancel.is_set():
            raise Cancelled("cancelled")
        fig = draw_figures(r.embeddings, projector).get("after")
        return Side(cfg.method, r.to_dict(), fig, round(time.time() - t0, 2))
    finally:
        other.close()


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
        earlier = []
        for prev in sess.records[:i]:
            prev_images = shown_images(prev)[0]
            if not prev_images:
                raise InputError("the images of an earlier request are gone (an imported timeline): cannot replay it")
            earlier.append((prev, prev_images))
        cfg = _second_config(rec, method)
        chain = sess.chain
        if cancel is not None:
            job.cancel = cancel
        from webapp.service import run_job

        try:
            second = run_job(job, lambda: _run_other(chain, earlier, images, rec, cfg, job, rt.warmup), progress,
                             rt.settings.time_limit, f"compare-{sess.sid[:8]}")  # fmt: skip
        except Cancelled:
            return None
        first = Side(rec.result.get("method") or rec.result["config"]["method"], rec.result, rec.figures.get("after"),
                     rec.job_s)  # fmt: skip
        return Comparison(first, second, rec.target, len(images), chain.domain.is_world)


# ------------------------------------------------------------------------------ pure views


def _answers(result: dict) -> tuple[str, list[str]]:
    q = result["probes_after"]["forget"]["questions"][0]
    return q, list(result["probes_after"]["forget"]["answers"][q])


def _drift(result: dict) -> str:
    d = result.get("retain_drift") or {}
    return f"{d.get('mean', 'n/a')} / {d.get('max', 'n/a')}"


def _outcome(result: dict, world: bool):
    from nscvf.method.outcome import assess

    return assess(result, world)


def comparison_rows(c: Comparison) -> list[list[str]]:
    """The side-by-side table: [what, first method, second method] (pure)."""
    a, b = c.first.result, c.second.result
    oa, ob = _outcome(a, c.world), _outcome(b, c.world)
    rows = [
        ["method", c.first.method, c.second.method],
        ["outcome", oa.headline(), ob.headline()],
        ["warnings", "; ".join(oa.warnings) or "none", "; ".join(ob.warnings) or "none"],
        ["steps run", str(a.get("steps_run")), str(b.get("steps_run"))],
        ["retain drift (mean / max)", _drift(a), _drift(b)],
        ["text-only answers identical", str(a.get("text_identical")), str(b.get("text_identical"))],
    ]
    q, after_a = _answers(a)
    _, after_b = _answers(b)
    for n, (x, y) in enumerate(zip(after_a, after_b), start=1):
        rows.append([f"image #{n}: {q}", x, y])
    return rows


def comparison_note(c: Comparison) -> str:
    """One line over the table: what was compared (pure)."""
    who = c.target or "the concept in the images"
    return (
        f"The same request ({c.n_forget} images, target {who}, the same settings) run with **{c.first.method}** "
        f"(this session) and **{c.second.method}** (a throwaway copy of the session's state before it; this "
        "session's model is unchanged)."
    )


COLUMNS = ["", "A", "B"]
