"""Running the benchmark grid: every method on the same targets, data and step budget, through the same
engine and the same evaluation as the app and the CLI; plus a continual run of sequential requests.

Each cell runs with a fresh disk cache; the process memo (:data:`nscvf.cache.memo`: renders, features,
covariance chunks) carries over between the jobs of one worker, as between the requests of the app, so a
cell's seconds depend on what its worker ran before (its numbers do not: the same on every backend). A
second request on the first target then measures the warm cache. :mod:`nscvf.bench.grid` runs the jobs
(:func:`run_job`) on a process pool or a Ray cluster.

Every request is repeated for each seed (``BenchSettings.seeds``): seed s changes the forget images
(:func:`nscvf.world.forget_examples`) and the optimisation seed. One cell of the grid is one request
(:func:`run_cell`: settings, method, target, seed); :mod:`nscvf.bench.summary` turns the cells into means
over targets and spreads over seeds, :mod:`nscvf.bench.report` into Markdown.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch

from nscvf import world
from nscvf.bench import evidence, photo_run
from nscvf.bench.settings import BenchSettings
from nscvf.bench.summary import mean
from nscvf.cache import Cache
from nscvf.eval import evaluate
from nscvf.method.chain import UnlearningChain
from nscvf.models import load_model
from nscvf.rates import rate


@dataclass
class Worker:
    """What the cells of one process share: the base model, a cache, the original model's feature profiles."""

    vlm: object
    cache: Cache
    originals: dict = field(default_factory=dict)  # target -> evidence.relational_profile of the base model


def target_metrics(rows: list[dict]) -> dict:
    """Forget/retain numbers of one evaluation's answer rows, as fractions (unrounded)."""
    vis = ("name", "fact_image")

    def r(metric, **where):
        return rate(rows, metric, digits=None, **where)

    return {
        "forget_acc": r("correct", group="target", kind=vis, render_split="train", template_split="train"),
        "forget_acc_heldout": r("correct", group="target", kind=vis, render_split="heldout"),
        "forget_name_acc_heldout": r("correct", group="target", kind="name", render_split="heldout"),
        "unknown_rate": r("unknown", group="target", kind=vis),
        "wrong_name_rate": r("wrong_name", group="target", kind=vis),
        "retain_acc": r("correct", group="others", kind=vis),
        "distractor_unknown_rate": r("unknown", group="distractors"),
        "text_acc": r("correct", kind="fact_text"),
    }


def request_evidence(worker: Worker, after, settings: BenchSettings, name: str, rows: list[dict]) -> dict:
    """Neighbour, gold and relearning measurements of one request (``after``: the unlearned model)."""
    vlm = worker.vlm
    out = {
        "neighbour": world.get_character(name).neighbour,
        "neighbour_retain_acc": evidence.neighbour_eval(after, name),
        "neighbour_retain_acc_eval": evidence.neighbour_retain_acc(rows, name),
        **{f"target12_{k}": v for k, v in evidence.target_identity(after, name).items()},
        "neighbour_drift": evidence.neighbour_drift(vlm, after, name),
    }
    gold = evidence.load_gold(name, settings.renders)
    if gold is not None:
        if name not in worker.originals:
            worker.originals[name] = evidence.relational_profile(vlm, name)
        p_unk = evidence.p_unknown(after, name)
        profile = evidence.relational_profile(after, name)
        out |= evidence.gold_comparison(rows, gold, name, p_unk, profile, worker.originals[name])
        out["p_unknown_mean"] = round(statistics.fmean(p_unk), 4)
        out["gold_relearn_steps"] = gold["relearn_steps"]
        if gold.get("neighbour_acc") is not None and out["neighbour_retain_acc"] is not None:
            out["neighbour_gap_gold"] = round(out["neighbour_retain_acc"] - gold["neighbour_acc"], 4)
    if settings.relearn:
        out["relearn_steps_k"] = evidence.relearn_steps(after, name)
        out["relearn_steps"] = evidence.censored_mean(out["relearn_steps_k"])
    return out


def run_cell(worker: Worker, settings: BenchSettings, method: str, target: str, seed: int) -> dict:
    """One cell of the grid: forget ``target`` with ``method`` at ``seed``, then measure. One per-target row."""
    cfg = settings.config(method, seed)
    chain = UnlearningChain(worker.vlm, worker.cache)
    t = time.time()
    r = chain.forget(world.forget_examples(target, seed=seed), None, cfg, target=target)
    seconds = time.time() - t
    rows = evaluate(chain.vlm, target, renders=settings.renders, mc=False, keep_answers=True)["answers"]
    row = {
        "target": target,
        "seed": seed,
        "seconds": round(seconds, 2),
        "steps_run": r.steps_run,
        "stopped_early": r.stopped_early,
        "seconds_per_step": r.timings.get("seconds_per_step"),
        "projection_seconds": r.timings.get("projection"),
        "retain_drift": r.retain_drift["mean"],
        "retain_drift_max": r.retain_drift["max"],
        "text_identical": r.text_identical and r.text_logits_identical,
        "null_space": r.null_space["summary"],
        "cache": r.cache,
        **target_metrics(rows),
        **request_evidence(worker, chain.vlm, settings, target, rows),
    }
    if settings.measures_warm(target, seed):
        # The same request again: covariances and base answers now come from the cache.
        t = time.time()
        UnlearningChain(worker.vlm, worker.cache).forget(world.forget_examples(target, seed=seed), None, cfg, target=target)
        row["seconds_warm"] = round(time.time() - t, 2)
    chain.close()
    return row


def continual(vlm, settings: BenchSettings) -> dict:
    """Sequential NSCVF requests on one chain (seed 0): each target forgotten in turn, the earlier ones kept
    forgotten and the rest retained."""
    targets = settings.continual_targets
    out = []
    with tempfile.TemporaryDirectory() as d:
        chain = UnlearningChain(vlm, Cache(d))
        cfg = settings.config()
        for i, name in enumerate(targets):
            t = time.time()
            r = chain.forget(world.forget_examples(name), None, cfg, target=name)
            seconds = time.time() - t
            rows = evaluate(chain.vlm, None, renders=settings.renders, mc=False, keep_answers=True)["answers"]

            def acc(char_names, rows=rows):
                keys = tuple(world.get_character(n).key for n in char_names)
                return rate(rows, "correct", character=keys, kind=("name", "fact_image"), render_split="heldout")

            forgotten = targets[: i + 1]
            kept = [c.name for c in world.CHARACTERS if c.name not in forgotten]
            out.append(
                {
                    "step": i + 1,
                    "target": name,
                    "seconds": round(seconds, 2),
                    "steps_run": r.steps_run,
                    "current_target_acc": acc([name]),
                    "earlier_targets_acc": {n: acc([n]) for n in targets[:i]},
                    "earlier_targets_max_acc": max((acc([n]) for n in targets[:i]), default=None),
                    "retain_acc": acc(kept),
                    "text_acc": rate(rows, "correct", kind="fact_text"),
                    "text_identical": r.text_identical and r.text_logits_identical,
                    "retain_drift": (r.retain_drift_base or r.retain_drift)["mean"],  # cumulative, vs the original
                }
            )
        chain.close()
    return {"targets": targets, "steps": out}


def base_numbers(vlm, targets: list[str], renders: int) -> dict:
    """The original model's numbers (mean over targets) and, per gold target, how it compares with gold
    (the KS test must be able to tell a model that still knows the target from gold)."""
    rows, gold = [], {}
    for name in targets:
        ans = evaluate(vlm, name, renders=renders, mc=False, keep_answers=True)["answers"]
        rows.append(target_metrics(ans) | {"neighbour_retain_acc": evidence.neighbour_eval(vlm, name)})
        g = evidence.load_gold(name, renders)
        if g is not None:
            profile = evidence.relational_profile(vlm, name)
            cmp = evidence.gold_comparison(ans, g, name, evidence.p_unknown(vlm, name), profile, profile)
            gold[name] = {
                "gold_split_accuracy": g["split_accuracy"],
                "gold_neighbour_acc": g.get("neighbour_acc"),
                "gold_relearn_steps": g["relearn_steps"],
                "gold_training": g["training"],
                "original_vs_gold": cmp,
            }
    return {k: mean(rows, k) for k in rows[0]} | {"gold": gold}


def machine(vlm=None) -> dict:
    """Where a job ran; ``threads``: torch's count in the worker, ``model_threads``: the count every call on
    ``vlm`` runs with where its domain names one (:func:`nscvf.method.shared.cpu_threads`)."""
    from nscvf.method.shared import cpu_threads  # the method package: only where a worker reports its model

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model_threads": None if vlm is None else cpu_threads(vlm),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_job(worker: Worker, settings: BenchSettings, job) -> dict:
    """One job of the grid (:class:`nscvf.bench.jobs.Job`) on this worker's model. A cell gets a fresh disk
    cache, so its numbers do not depend on which jobs the worker ran before. The photo model's grid runs its
    own jobs (:mod:`nscvf.bench.photo_run`)."""
    if settings.model == "photo":
        if job.kind == "base":
            return photo_run.base(worker, settings)
        with tempfile.TemporaryDirectory() as d:
            return photo_run.cell(Worker(worker.vlm, Cache(d), worker.originals), settings, job.method, job.target, job.seed)
    if job.kind == "base":
        return base_numbers(worker.vlm, settings.target_names, settings.renders)
    if job.kind == "continual":
        return continual(worker.vlm, settings)
    with tempfile.TemporaryDirectory() as d:
        return run_cell(Worker(worker.vlm, Cache(d), worker.originals), settings, job.method, job.target, job.seed)


def new_worker(source: str | None = None) -> Worker:
    """A worker's state: the base model (``source``; None: the default one), loaded once and shared by every job
    the worker runs."""
    return Worker(load_model(source), Cache(None, enabled=False))


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
