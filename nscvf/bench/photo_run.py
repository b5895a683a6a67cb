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


def cell(worker, settings, method: str, target: str, seed: int) -> dict:
    """Forget ``target`` from 8 images (seed ``seed``) with ``method``, then measure (photo_eval.forget_report)."""
    ev = evaluation_set(worker)
    key = ("photo forget images", target, seed)  # the same images for every method of a (target, seed)
    if key not in worker.originals:
        worker.originals[key] = photo_eval.forget_and_heldout(target, ev.labels, ev.images, ev.before, seed=seed, vlm=worker.vlm)
    forget, held = worker.originals[key]
    chain = UnlearningChain(worker.vlm, worker.cache)
    try:
        t = time.time()
        r = chain.forget(forget, None, settings.config(method, seed), target=target)
        seconds = time.time() - t
        after = chain.vlm
        row = photo_eval.forget_report(
            ev.before, photo_eval.ask_names(after, ev.images), photo_eval.ask_names(chain.model_at(0), held),
            photo_eval.ask_names(after, held), r.target or target, ev.text_before, photo_eval.text_answers(after),
        )  # fmt: skip
    finally:
        chain.close()
    row.pop("targets", None)
    return row | {"seed": seed, "resolved_target": r.target, "seconds": round(seconds, 2), "steps_run": r.steps_run,
                  "stopped_early": r.stopped_early, "seconds_per_step": r.timings.get("seconds_per_step")}  # fmt: skip
