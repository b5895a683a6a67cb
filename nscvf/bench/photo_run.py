"""The photo benchmark's jobs (:mod:`nscvf.bench.photo`): the base model's evaluation set, computed once per
worker, and one cell (forget a concept from 8 images with a method and a seed, then the photo evaluation)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from nscvf import photo_eval
from nscvf.method.chain import UnlearningChain
from nscvf.method.photo_domain import named_concept

STATE = "photo evaluation set"  # the worker's cache key (Worker.originals)


@dataclass(frozen=True)
class EvaluationSet:
    """What every cell of a worker measures on: the pool (labels, images), the base model's answers on it and its
    text answers."""

    labels: list
    images: list
    before: list
    text_before: dict


def evaluation_set(worker) -> EvaluationSet:
    """The base model's evaluation set, made by the worker's first photo job and reused by the rest."""
    if STATE not in worker.originals:
        labels, images, before = photo_eval.evaluation_set(worker.vlm)
        worker.originals[STATE] = EvaluationSet(labels, images, before, photo_eval.text_answers(worker.vlm))
    return worker.originals[STATE]


def base(worker, settings) -> dict:
    """The base model on the evaluation set: how many images it names, and each target's."""
    ev = evaluation_set(worker)
    named = [named_concept(a) for a in ev.before]
    return {
        "pool_n": len(ev.images),
        "named_n": sum(n is not None for n in named),
        "targets_named_n": {t: sum(n == t for n in named) for t in settings.target_names},
        "text_n": len(ev.text_before),
    }


@dataclass(frozen=True)
class Forgotten:
    """One forget request of the photo grid and the answers it is measured on."""

    result: object  # the request's UnlearnResult
    seconds: float  # the request alone
    after: list  # the model's answers after, on the evaluation set's images
    held_before: list  # the base model's and the model's after answers on the held-out views
    held_after: list
    text_after: dict


def forget(worker, config, target: str, seed: int, domain=None) -> Forgotten:
    """Forget ``target`` from the cell's 8 images (seed ``seed``, the same for every method) with ``config``, on a
    fresh chain of the worker's base model (``domain``: the chain's, else the model's), then ask the evaluation set."""
    ev = evaluation_set(worker)
    key = ("photo forget images", target, seed)  # the same images for every method of a (target, seed)
    if key not in worker.originals:
        worker.originals[key] = photo_eval.forget_and_heldout(target, ev.labels, ev.images, ev.before, seed=seed, vlm=worker.vlm)
    images, held = worker.originals[key]
    chain = UnlearningChain(worker.vlm, worker.cache, domain=domain)
    try:
        t = time.time()
        r = chain.forget(images, None, config, target=target)
        seconds = time.time() - t
        after = chain.vlm
        return Forgotten(r, round(seconds, 2), photo_eval.ask_names(after, ev.images), photo_eval.ask_names(chain.model_at(0), held),
                         photo_eval.ask_names(after, held), photo_eval.text_answers(after))  # fmt: skip
    finally:
        chain.close()


def cell(worker, settings, method: str, target: str, seed: int) -> dict:
    """Forget ``target`` from 8 images (seed ``seed``) with ``method``, then measure (photo_eval.forget_report)."""
    ev = evaluation_set(worker)
    f = forget(worker, settings.config(method, seed), target, seed)
    r = f.result
    row = photo_eval.forget_report(
        ev.before, f.after, f.held_before, f.held_after, r.target or target, ev.text_before, f.text_after
    )
    row.pop("targets", None)
    return row | {"seed": seed, "resolved_target": r.target, "seconds": f.seconds, "steps_run": r.steps_run,
                  "stopped_early": r.stopped_early, "seconds_per_step": r.timings.get("seconds_per_step")}  # fmt: skip
