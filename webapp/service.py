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
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from nscvf import world
from nscvf.errors import Cancelled, InputError
from nscvf.images import load_image
from webapp.records import Evaluation, RequestRecord, result_key
from webapp.runtime import Runtime, gpu
from webapp.sessions import Job, Session
from webapp.settings import ADVANCED, MAX_NAME, MAX_QUESTION, UMAP_WAIT_S, config_fields

log = logging.getLogger("nscvf.app")

NO_IMAGES = "no images: upload one or more images of what to forget, or click an example character"

# ---------------------------------------------------------------------------------------- the form


def image_paths(files, max_files: int, what: str = "images") -> list[str]:
    """The paths of uploaded files (Gradio gives paths, dicts or file objects); InputError when none or too many."""
    if not files:
        raise InputError(NO_IMAGES)
    if not isinstance(files, (list, tuple)):
        files = [files]
    paths = []
    for f in files:
        p = f if isinstance(f, (str, os.PathLike)) else (f.get("path") if isinstance(f, dict) else getattr(f, "name", None))
        if p:
            paths.append(str(p))
    if not paths:
        raise InputError(NO_IMAGES)
    if len(paths) > max_files:
        raise InputError(f"{len(paths)} {what} is too many: upload at most {max_files}")
    return paths


def number(name: str, value, integer: bool):
    """A number field of the form, or InputError naming the field and its range."""
    meta = config_fields()[name]
    if value is None or value == "":
        raise InputError(f"{name} is empty; enter a number from {meta['lo']:g} to {meta['hi']:g}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{name}={value!r} is not a number")
    if integer:
        if v != int(v):
            raise InputError(f"{name}={value:g} must be a whole number")
        return int(v)
    return v


def make_config(form: dict):
    """UnlearnConfig from the form (``method``, the Advanced fields, ``evaluation``), validated, with what its
    method fixes. The evaluation runs after the answers are shown (:func:`evaluate`): the engine gets none."""
    from nscvf.method.config import UnlearnConfig
    from nscvf.method.methods import method_config

    changes = {f: number(f, form.get(f), integer) for f, _, integer in ADVANCED}
    changes["method"] = (form.get("method") or "nscvf").strip()
    choices = config_fields()["evaluate"]["choices"]
    if (form.get("evaluation") or "quick") not in choices:
        raise InputError(f"evaluation={form.get('evaluation')!r} is not valid; choose one of {', '.join(choices)}")
    changes["evaluate"] = "none"
    return method_config(UnlearnConfig().replace(**changes).validate())


@dataclass(frozen=True)
class ForgetRequest:
    """A parsed Forget form."""

    images: list
    paths: list[str]
    cfg: object  # UnlearnConfig
    evaluation: str
    name: str
    retain: list | None

    @property
    def names(self) -> tuple:
        return tuple(Path(p).name for p in self.paths)


def parse_forget(form: dict, max_files: int) -> ForgetRequest:
    """Read the Forget form: ``files``, ``name``, ``method``, the Advanced fields, ``evaluation``,
    ``retain_files``. Every image is decoded (one clear error naming the file, never a server path)."""
    paths = image_paths(form.get("files"), max_files)
    images = [load_image(p) for p in paths]
    cfg = make_config(form)
    retain = None
    if form.get("retain_files"):
        retain = [load_image(p) for p in image_paths(form["retain_files"], max_files, what="images to keep")]
    name = (form.get("name") or "").strip()
    if len(name) > MAX_NAME:
        raise InputError(f"the name is too long (at most {MAX_NAME} characters)")
    return ForgetRequest(images, paths, cfg, form.get("evaluation") or "quick", name, retain)


# ------------------------------------------------------------------------------------ the session


def ensure_chain(rt: Runtime, sess: Session):
    """The session's chain (made on first use: adapters on the shared base, no model copy)."""
    if sess.chain is None:
        from nscvf.method.chain import UnlearningChain

        sess.chain = UnlearningChain(rt.model.get(), rt.model.cache)
    return sess.chain


def retained_characters(target: str | None, forgotten: list[str]) -> list:
    """A few characters that must not change: those sharing the target's shape or colour first."""
    out = [c for c in world.CHARACTERS if c.name not in forgotten]
    if target:
        t = world.get_character(target)
        out.sort(key=lambda c: (c.shape != t.shape and c.colour != t.colour, world.CHARACTERS.index(c)))
    return out[:3]


def retain_rows(chain, target: str | None, retain=None) -> list[list[str]]:
    """Before/after answers on what must not change: held-out renders of a few other characters (the
    embedded world), else the first uploaded images to keep."""
    if chain.domain.is_world:
        chars = retained_characters(target, chain.forgotten_targets + ([target] if target else []))
        qs = ["Who is this?", world.IMAGE_FACT_TEMPLATES["town"]["train"][0]]
        seeds = world.heldout_seeds(len(chars), world.SEEDS["showcase"])
        imgs = [world.render(c, s) for c, s in zip(chars, seeds)]
        labels = [f"{c.name} (held-out render)" for c in chars]
    else:
        imgs = list(retain or [])[:3]
        qs = chain.domain.probe_questions()
        labels = [f"kept image #{i + 1}" for i in range(len(imgs))]
    if not imgs:
        return []
    flat_q = [q for _ in imgs for q in qs]
    flat_i = [im for im in imgs for _ in qs]
    before = chain.base_vlm.generate(flat_q, flat_i)
    after = chain.vlm.generate(flat_q, flat_i)
    flat_l = [label for label in labels for _ in qs]
    return [[flat_l[k], q, before[k], after[k], "same" if before[k] == after[k] else "CHANGED"] for k, q in enumerate(flat_q)]


def draw_figures(emb: dict, warmup) -> dict:
    """The two embedding figures (plotly JSON). UMAP once warmed up; while UMAP is still compiling (the
    first ~30-60 s after start on a small CPU) PCA, labelled as such and redrawn on a later view."""
    import numpy as np

    from nscvf import plots

    if not emb or not emb.get("before"):
        return {"before": None, "after": None, "method": "none"}
    small = len(emb["before"]) < plots.MIN_UMAP_POINTS
    warm = small or warmup.wait(UMAP_WAIT_S)
    fb, fa, method = plots.embedding_figures(
        np.asarray(emb["before"]), np.asarray(emb["after"]), emb["groups"], emb["labels"], method="auto" if warm else "pca"
    )
    if not warm:
        for title, fig in (("Before", fb), ("After", fa)):
            fig.update_layout(title=f"{title} (PCA: UMAP is still warming up)")
    return {"before": fb.to_json(), "after": fa.to_json(), "method": method, "warming_up": not warm}


def refresh_figures(rt: Runtime, rec: RequestRecord) -> RequestRecord:
    """The record with its plots redrawn with UMAP when they were drawn with PCA during the warm-up."""
    if rec.figures.get("warming_up") and rt.warmup.done.is_set():
        return rec.replace(figures=draw_figures(rec.result.get("embeddings") or {}, rt.warmup))
    return rec


def _check(job: Job) -> None:
    if job.cancel.is_set():
        raise Cancelled("cancelled; the model is unchanged")


@gpu
def compute(chain, req: ForgetRequest, target: str | None, job: Job, warmup) -> RequestRecord:
    """One request, start to finish (the function ZeroGPU would give a GPU): train, probe, draw."""
    t0 = time.time()
    r = chain.forget(req.images, req.retain, req.cfg, progress=job.update, cancel=job.cancel, target=target)
    try:
        job.update("retained characters", 0, 1)
        _check(job)
        rows = retain_rows(chain, r.target, req.retain)
        job.update("drawing plots", 0, 1)
        _check(job)
        tp = time.time()
        figures = draw_figures(r.embeddings, warmup)
        plots_s = round(time.time() - tp, 3)
    except BaseException:
        chain.undo()  # cancelled (or failed) after training: leave the chain as it was
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
    key = "step" if job.stage.startswith("step ") else job.stage
    lo, hi = _STAGE_SPAN.get(key, (0.0, 0.0))
    return min(1.0, lo + (hi - lo) * min(1.0, job.step / job.total))


def run_job(job: Job, fn, progress, time_limit: float, name: str):
    """Run ``fn`` in a worker thread; meanwhile refresh the progress (stage, fraction, seconds) every
    POLL_S and enforce the time limit through the job's cancel flag. Returns fn's value or raises its error."""
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
    while not finished.wait(POLL_S):
        elapsed = time.time() - t0
        if elapsed > time_limit and not job.cancel.is_set():
            job.timed_out = True
            job.cancel.set()
        progress(fraction(job), desc=f"{job.stage} · {elapsed:.0f} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


# ------------------------------------------------------------------------------------ operations


@dataclass(frozen=True)
class ForgetOutcome:
    """What a Forget did: ``record`` (None when it stopped), the number of requests ``k`` of the chain after
    it, the seconds it took, whether it was restored from the cache, and why it stopped (``stopped``:
    "queued" when Cancel dropped it before it started, "cancelled", "time limit")."""

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


def forget(rt: Runtime, sess: Session, form: dict, progress=lambda *a, **k: None) -> ForgetOutcome:
    """One Forget of this session: parse the form, restore the identical request from the cache or run it."""
    t0 = time.time()
    if not sess.dequeued():
        return ForgetOutcome(None, len(sess.chain) if sess.chain else 0, 0.0, stopped="queued")
    with sess.exclusive("request") as job:
        progress(0.0, desc="reading images")
        req = parse_forget(form, rt.settings.max_files)
        progress(0.01, desc="waiting for the model to load" if not rt.model.ready else "preparing")
        chain = ensure_chain(rt, sess)
        target = chain.domain.resolve_target(req.name or None, []) if req.name else None
        key = result_key(chain.state_fingerprint, req.images, req.cfg, target, req.retain)
        sess.numbers_due = False
        rec = RequestRecord.from_dict(rt.model.cache.get(key))
        if rec is not None:
            progress(0.5, desc="restoring the finished request from the cache")
            restore(chain, rec, req.images)
            restored = True
        else:
            n_before = len(chain)
            try:
                rec = run_job(job, lambda: compute(chain, req, target, job, rt.warmup), progress,
                              rt.settings.time_limit, f"forget-{sess.sid[:8]}")  # fmt: skip
            except Cancelled:
                why = "time limit" if job.timed_out else "cancelled"
                return ForgetOutcome(None, n_before, time.time() - t0, stopped=why, request=req)
            if len(chain) == n_before:  # the compute ran elsewhere (ZeroGPU): apply its adapter here
                restore(chain, rec, req.images)
            rec = rec.replace(key=key)
            _store(rt, rec)
            restored = False
        rec = rec.replace(names=req.names, evaluation=req.evaluation, evaluable=chain.domain.can_evaluate(rec.target))
        sess.records.append(rec)
        sess.numbers_due = True
        return ForgetOutcome(rec, len(chain), time.time() - t0, restored, request=req)


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
        rec = sess.records[-1] = refresh_figures(rt, sess.records[-1])
        return rec


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
    with sess.exclusive("question"):
        chain = ensure_chain(rt, sess)
        base = chain.base_vlm.generate([q], imgs, max_new_tokens=24)[0]
        current = chain.vlm.generate([q], imgs, max_new_tokens=24)[0] if len(chain) else base
        return Answers(base, current, len(chain))
