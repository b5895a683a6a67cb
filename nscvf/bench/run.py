"""Running the benchmark grid: every method on the same targets, data and step budget, through the same
engine and the same evaluation as the app and the CLI; plus a continual run of sequential requests.

Each method runs in its own process (so its peak RSS and cold-cache time are its own) with a fresh
cache directory; a second request on the first target then measures the warm cache.

Every request is repeated for each seed (``BenchSettings.seeds``): seed s changes the forget images
(:func:`nscvf.world.forget_examples`) and the optimisation seed. One cell of the grid is one request
(:func:`run_cell`: settings, method, target, seed); :mod:`nscvf.bench.summary` turns the cells into means
over targets and spreads over seeds, :mod:`nscvf.bench.report` into Markdown.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

import torch

from nscvf import world
from nscvf.bench import evidence
from nscvf.bench.settings import NOTE, BenchSettings
from nscvf.bench.summary import mean, overhead, quick_vs_full, summarise
from nscvf.cache import Cache
from nscvf.eval import evaluate
from nscvf.method.chain import UnlearningChain
from nscvf.models import default_source, load_model
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


def _set_threads() -> None:
    torch.set_num_threads(int(os.environ.get("NSCVF_BENCH_THREADS", torch.get_num_threads())))


def run_method(settings: BenchSettings, method: str) -> dict:
    """Every cell of one method (seed-major, as the summary expects), in this process with a fresh cache."""
    _set_threads()
    with tempfile.TemporaryDirectory() as d:
        worker = Worker(load_model(), Cache(d))
        rows = [run_cell(worker, settings, method, t, s) for s in range(settings.seeds) for t in settings.target_names]
    return {
        "method": method,
        "per_target": rows,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def continual(settings: BenchSettings) -> dict:
    """Sequential NSCVF requests on one chain (seed 0): each target forgotten in turn, the earlier ones kept
    forgotten and the rest retained."""
    targets = settings.continual_targets
    vlm = load_model()
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


def _in_own_process(fn, *args):
    """``fn(*args)`` in a fresh spawned process (its peak RSS and cold caches are its own)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_bench(settings: BenchSettings, progress=print, partial=None) -> dict:
    """Run the benchmark. ``partial(dict)`` (optional) receives the results so far after every method, so
    that an interrupted run keeps what it finished."""
    t0 = time.time()
    targets, methods = settings.target_names, settings.method_names
    progress("evaluating the base model")
    base = base_numbers(load_model(), targets, settings.renders)
    runs = {}
    for m in methods:
        progress(f"method {m}: {len(targets)} targets x {settings.seeds} seeds")
        runs[m] = _in_own_process(run_method, settings, m)
        progress(f"  {m}: {json.dumps(summarise(runs[m], base))}")
        if partial is not None:
            partial({"targets": targets, "base": base, "per_target": dict(runs), "elapsed_seconds": round(time.time() - t0, 1)})
    summaries = {m: summarise(runs[m], base) for m in methods}
    cont = None
    if settings.continual_n:
        progress(f"continual: {len(settings.continual_targets)} sequential requests")
        cont = _in_own_process(continual, settings)
    per_target = {m: runs[m]["per_target"] for m in methods}
    n_neighbour = sum(1 for c in world.CHARACTERS if c.neighbour)
    return {
        "command": None,
        "mode": "quick" if settings.quick else "full",
        "seeds": settings.seeds,
        "renders": settings.renders,
        "model": default_source(),
        "machine": machine(),
        "note": NOTE,
        "targets": targets,
        "base": base,
        "methods": summaries,
        "per_target": per_target,
        "null_space_overhead_per_step": overhead(summaries),
        "continual": cont,
        "quick_vs_full": quick_vs_full(per_target, len(world.CHARACTERS), n_neighbour),
        "wall_seconds": round(time.time() - t0, 1),
    }
