"""Teach a session's model something new from the visitor's own images, and try to bring a forgotten
concept back (issue 12 items 1 and 3), without Gradio.

Teach is one more request of the session's chain (``chain.teach``: a RequestRecord of kind "teach", so
History, Undo/Reset, the status line and the plots show it like a Forget), exclusive and cancellable like
a Forget. The relearning probe (``nscvf.method.relearn.relearn``) runs a temporary adapter on top of the
chain's state and never changes the chain.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from nscvf import zerogpu
from nscvf.bench.evidence import RELEARN_STEPS, gold_relearn_steps
from nscvf.errors import Cancelled, InputError
from nscvf.images import load_image
from nscvf.method.domain import RelearnSets
from nscvf.method.teach import TeachConfig, check_name, heldout_view
from webapp.service.form import image_paths
from webapp.service.jobs import applied_record, ensure_chain, gpu_call, gpu_state, run_job, shown_images, turn
from webapp.service.showcase import retained_answers
from webapp.state.records import RelearnProbe, RequestRecord
from webapp.state.runtime import Runtime
from webapp.state.sessions import Job, Session

FACTS = ("town", "job", "food")
MIN_IMAGES = 3
PROBE_K = (1, 2, 4)
PROBE_STEPS = 20
PROBE_HELDOUT = 6
NO_TEACH_IMAGES = f"no images: upload at least {MIN_IMAGES} images of what to teach"


@dataclass(frozen=True)
class TeachRequest:
    """A parsed Teach form."""

    images: list
    paths: list[str]
    name: str
    facts: dict

    @property
    def names(self) -> tuple:
        return tuple(Path(p).name for p in self.paths)


def parse_teach(form: dict, max_files: int) -> TeachRequest:
    """Read the Teach form: ``files`` (>= 3, each decoded: one clear error naming a bad file), ``name``
    and the optional facts ``town``, ``job``, ``food``."""
    if not form.get("files"):
        raise InputError(NO_TEACH_IMAGES)
    paths = image_paths(form.get("files"), max_files)
    if len(paths) < MIN_IMAGES:
        raise InputError(f"{len(paths)} image(s): upload at least {MIN_IMAGES} images of what to teach")
    facts = {f: str(form.get(f)).strip() for f in FACTS if str(form.get(f) or "").strip()}
    name = check_name(form.get("name") or "", facts)
    images = [load_image(p) for p in paths]
    return TeachRequest(images, paths, name, facts)


def compute_teach(rt: Runtime, sess: Session, req: TeachRequest, job: Job) -> RequestRecord:
    """Teach and the retained characters' answers in one GPU call, then the plots (the new cluster appears)
    and the new adapter appended to the session's chain."""
    t0 = time.time()
    request = zerogpu.TeachJob(tuple(req.images), req.name, req.facts or None, TeachConfig(), then=retained_answers)
    out = gpu_call("teach", gpu_state(rt, sess), request, job)
    return applied_record(sess.chain, out, req.images, job, rt.warmup, t0)


@dataclass(frozen=True)
class TeachOutcome:
    """What a Teach did: ``record`` (None when it stopped: ``stopped`` says why), the chain's length after
    it and the seconds since the click."""

    record: RequestRecord | None
    k: int
    seconds: float
    stopped: str | None = None
    request: TeachRequest | None = None


def teach(rt: Runtime, sess: Session, form: dict, progress=lambda *a, **k: None) -> TeachOutcome:
    """One Teach of this session (exclusive; Cancel and the time limit stop it and leave the chain as it was)."""
    t0 = time.time()

    def waiting():
        progress(0.0, desc="waiting for the accuracies of the last request (they are being computed)")

    with sess.exclusive("teach", evaluation="wait", waiting=waiting) as job:
        if sess.dropped():  # Cancel pressed while it waited for the accuracies
            return TeachOutcome(None, len(sess.chain) if sess.chain else 0, round(time.time() - t0, 2), stopped="cancelled")
        job.progress = progress
        progress(0.0, desc="reading images")
        req = parse_teach(form, rt.settings.max_files)
        progress(0.01, desc="waiting for the model to load" if not rt.holder_of(sess).ready else "preparing")
        chain = ensure_chain(rt, sess)
        n_before = len(chain)
        sess.numbers_due = False
        try:
            with turn(rt, sess, job, rt.estimate.seconds(TeachConfig().steps), progress):
                rec = run_job(job, lambda: compute_teach(rt, sess, req, job), progress, rt.settings.time_limit,
                              f"teach-{sess.sid[:8]}")  # fmt: skip
        except Cancelled:
            why = "time limit" if job.timed_out else "cancelled"
            return TeachOutcome(None, n_before, round(time.time() - t0, 2), stopped=why, request=req)
        seconds = round(time.time() - t0, 2)
        rec = rec.replace(names=req.names, paths=tuple(req.paths), evaluation="none", evaluable=False, shown_s=seconds,
                          world=chain.domain.names_things)  # fmt: skip
        sess.records.append(rec)
        return TeachOutcome(rec, len(chain), seconds, request=req)


# ------------------------------------------------------------------------------ relearning probe


def _probe_sets(chain, rec: RequestRecord, k: int) -> RelearnSets:
    """Training images (k of the request's forget images), held-out images, and the reference's: rendered
    by the Domain where it can (a world character), else views of the uploaded images themselves."""
    images = shown_images(rec)[0]
    sets = chain.domain.relearn_sets(rec.target, images, k, PROBE_HELDOUT, chain.taught)
    if sets is not None:
        return sets
    if not images:
        raise InputError("the images of that request are gone (an imported timeline): forget them again to probe")
    held = [heldout_view(images[i % len(images)], random.Random(7000 + i)) for i in range(PROBE_HELDOUT)]
    train = images[:k]
    # the base model never knew these images: taught the same name on them, the reference
    reference = f"the base model taught {rec.target!r} on the same {len(train)} image(s) (it never knew them)"
    return RelearnSets(train, held, train, held, reference)


def _relearn_both(rt: Runtime, sess: Session, rec: RequestRecord, sets: RelearnSets, job: Job) -> RelearnProbe:
    """The probe on this session's model and the reference on the base model, in one GPU call."""
    name = rec.target
    request = zerogpu.RelearnJob(tuple(sets.train), tuple(sets.held), name, PROBE_STEPS, tuple(sets.ref_train),
                                 tuple(sets.ref_held))  # fmt: skip
    out = gpu_call("relearn", gpu_state(rt, sess), request, job)
    gold = gold_relearn_steps(name)  # the benchmark's yardstick: a model that never learned the target
    at = (gold or {}).get(str(len(sets.train)), "none") if gold else "none"
    limit = RELEARN_STEPS if at != "none" else None
    steps = None if limit is None else (RELEARN_STEPS + 1 if at is None else at)
    return RelearnProbe(name, len(sets.train), PROBE_STEPS, out["chain"], out["reference"], len(sets.held), sets.reference,
                        steps, limit)  # fmt: skip


def last_forgotten(sess: Session) -> RequestRecord | None:
    """The session's last forget request with a target (not a teach request)."""
    return next((r for r in reversed(sess.records) if not r.is_teach and r.target), None)


def relearn_probe(rt: Runtime, sess: Session, k, progress=lambda *a, **k: None) -> RelearnProbe | None:
    """ "Try to bring it back": relearn the last forgotten target from ``k`` of its images on this session's
    model and, as the reference, on the base model (never changes the chain). None when cancelled."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        k = 0
    if k not in PROBE_K:
        raise InputError(f"k={k} is not offered; use one of {', '.join(map(str, PROBE_K))} images")
    with sess.exclusive("relearning probe") as job:
        rec = last_forgotten(sess)
        if rec is None or sess.chain is None:
            raise InputError("nothing forgotten yet in this session: press Forget first, then try to bring it back")
        sets = _probe_sets(sess.chain, rec, k)
        try:
            with turn(rt, sess, job, rt.estimate.seconds(2 * PROBE_STEPS), progress):
                return run_job(job, lambda: _relearn_both(rt, sess, rec, sets, job), progress, rt.settings.time_limit,
                           f"relearn-{sess.sid[:8]}")  # fmt: skip
        except Cancelled:
            return None
