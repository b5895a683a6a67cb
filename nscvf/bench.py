"""``nscvf bench``: every method on the same targets, data and step budget, through the same engine
and the same evaluation as the app and the CLI; plus a continual run of sequential requests.

Each method runs in its own process (so its peak RSS and cold-cache time are its own) with a fresh
cache directory; a second request on the first target then measures the warm cache.
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
from multiprocessing import get_context
from pathlib import Path

QUICK_TARGETS = ["Mirel", "Dravik", "Oriel", "Brisa"]
METHOD_ORDER = ["nscvf", "nscvf_feature", "cvf", "nscvf_projector", "ga", "gd", "kl", "npo"]


def _forget_images(name: str, n: int = 8):
    from nscvf import world

    return [world.render(world.get_character(name), s) for s in world.train_seeds(n, world.SEEDS["forget_example"])]


def _target_metrics(ev: dict) -> dict:
    """Forget/retain numbers of one evaluation (nscvf.eval results), as fractions."""
    rows = ev["answers"]

    def rate(metric, **where):
        vals = [r[metric] for r in rows if all(r[k] in (v if isinstance(v, tuple) else (v,)) for k, v in where.items())]
        return sum(vals) / len(vals) if vals else None

    vis = ("name", "fact_image")
    return {
        "forget_acc": rate("correct", group="target", kind=vis, render_split="train", template_split="train"),
        "forget_acc_heldout": rate("correct", group="target", kind=vis, render_split="heldout"),
        "forget_name_acc_heldout": rate("correct", group="target", kind="name", render_split="heldout"),
        "unknown_rate": rate("unknown", group="target", kind=vis),
        "wrong_name_rate": rate("wrong_name", group="target", kind=vis),
        "retain_acc": rate("correct", group="others", kind=vis),
        "distractor_unknown_rate": rate("unknown", group="distractors"),
        "text_acc": rate("correct", kind="fact_text"),
    }


def _run_method(method: str, targets: list[str], steps: int | None, renders: int) -> dict:
    import torch

    from nscvf.cache import Cache
    from nscvf.eval import evaluate
    from nscvf.method import UnlearnConfig, UnlearningChain
    from nscvf.models import load_model

    torch.set_num_threads(int(os.environ.get("NSCVF_BENCH_THREADS", torch.get_num_threads())))
    vlm = load_model()
    per_target = []
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d)
        cfg = UnlearnConfig(method=method, evaluate="none")
        if steps:
            cfg = cfg.replace(steps=steps)
        for i, name in enumerate(targets):
            chain = UnlearningChain(vlm, cache)
            t = time.time()
            r = chain.forget(_forget_images(name), None, cfg, target=name)
            seconds = time.time() - t
            ev = evaluate(chain.vlm, name, renders=renders, mc=False, keep_answers=True)
            row = {
                "target": name,
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
                **_target_metrics(ev),
            }
            if i == 0:
                # The same request again: covariances and base answers now come from the cache.
                t = time.time()
                UnlearningChain(vlm, cache).forget(_forget_images(name), None, cfg, target=name)
                row["seconds_warm"] = round(time.time() - t, 2)
            per_target.append(row)
    return {
        "method": method,
        "per_target": per_target,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def _summarise(run: dict, base: dict) -> dict:
    rows = run["per_target"]
    s = {
        k: _mean(rows, k)
        for k in (
            "forget_acc",
            "forget_acc_heldout",
            "forget_name_acc_heldout",
            "unknown_rate",
            "wrong_name_rate",
            "retain_acc",
            "text_acc",
            "retain_drift",
            "seconds_per_step",
        )
    }
    s["retain_drift_max"] = max((r["retain_drift_max"] for r in rows), default=None)
    # Time spent re-projecting LoRA A after each step, as a share of the optimisation steps' time.
    opt = sum((r.get("seconds_per_step") or 0) * r["steps_run"] for r in rows)
    proj = sum(r.get("projection_seconds") or 0 for r in rows)
    s["projection_share"] = round(proj / (opt - proj), 4) if opt > proj else None
    s["text_identical"] = all(r["text_identical"] for r in rows)
    s["seconds_per_request"] = _mean(rows, "seconds")
    s["seconds_per_request_cold"] = rows[0]["seconds"]
    s["seconds_per_request_warm"] = rows[0].get("seconds_warm")
    s["peak_rss_mb"] = run["peak_rss_mb"]
    s["steps_run"] = _mean(rows, "steps_run")
    s["retain_drop"] = None if s["retain_acc"] is None else round(base["retain_acc"] - s["retain_acc"], 4)
    f, r = s["forget_acc_heldout"], s["retain_acc"]
    s["harmonic_mean"] = round(2 * (1 - f) * r / ((1 - f) + r), 4) if f is not None and r and (1 - f) + r > 0 else None
    return s


def _overhead(summaries: dict) -> float | None:
    """Seconds per step of nscvf over cvf (same run), minus 1."""
    if "nscvf" in summaries and "cvf" in summaries and summaries["cvf"]["seconds_per_step"]:
        return round(summaries["nscvf"]["seconds_per_step"] / summaries["cvf"]["seconds_per_step"] - 1, 4)
    return None


def resummarise(res: dict) -> dict:
    """The summaries of a saved run recomputed from its per-target rows (after a change to the summary)."""
    runs = {m: {"per_target": rows, "peak_rss_mb": res["methods"][m]["peak_rss_mb"]} for m, rows in res["per_target"].items()}
    res["methods"] = {m: _summarise(run, res["base"]) for m, run in runs.items()}
    res["null_space_overhead_per_step"] = _overhead(res["methods"])
    return res


def _continual(targets: list[str], steps: int | None, renders: int) -> dict:
    from nscvf import world
    from nscvf.cache import Cache
    from nscvf.eval import evaluate
    from nscvf.method import UnlearnConfig, UnlearningChain
    from nscvf.models import load_model

    vlm = load_model()
    out = []
    with tempfile.TemporaryDirectory() as d:
        chain = UnlearningChain(vlm, Cache(d))
        cfg = UnlearnConfig(evaluate="none") if not steps else UnlearnConfig(evaluate="none", steps=steps)
        for i, name in enumerate(targets):
            t = time.time()
            r = chain.forget(_forget_images(name), None, cfg, target=name)
            seconds = time.time() - t
            ev = evaluate(chain.vlm, None, renders=renders, mc=False, keep_answers=True)
            rows = ev["answers"]

            def acc(char_names, rows=rows):
                keys = {world.get_character(n).key for n in char_names}
                v = [
                    a["correct"]
                    for a in rows
                    if a["character"] in keys and a["kind"] in ("name", "fact_image") and a["render_split"] == "heldout"
                ]
                return round(sum(v) / len(v), 4) if v else None

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
                    "text_acc": round(statistics.fmean(a["correct"] for a in rows if a["kind"] == "fact_text"), 4),
                    "text_identical": r.text_identical and r.text_logits_identical,
                    "retain_drift": (r.retain_drift_base or r.retain_drift)["mean"],  # cumulative, vs the original
                }
            )
    return {"targets": targets, "steps": out}


def run_bench(
    quick: bool = False,
    steps: int | None = None,
    methods: list[str] | None = None,
    renders: int = 3,
    continual_n: int = 8,
    progress=print,
    partial=None,
    targets: list[str] | None = None,
) -> dict:
    """Run the benchmark. ``partial(dict)`` (optional) receives the results so far after every method, so
    that an interrupted run keeps what it finished."""
    from nscvf import world
    from nscvf.eval import evaluate
    from nscvf.models import default_source, load_model

    t0 = time.time()
    targets = targets or (QUICK_TARGETS if quick else [c.name for c in world.CHARACTERS])
    methods = methods or METHOD_ORDER
    vlm = load_model()
    progress("evaluating the base model")
    base_rows = []
    for name in targets:
        base_rows.append(_target_metrics(evaluate(vlm, name, renders=renders, mc=False, keep_answers=True)))
    base = {k: _mean(base_rows, k) for k in base_rows[0]}
    runs = {}
    ctx = get_context("spawn")
    for m in methods:
        progress(f"method {m}: {len(targets)} targets")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            runs[m] = ex.submit(_run_method, m, targets, steps, renders).result()
        progress(f"  {m}: {json.dumps(_summarise(runs[m], base))}")
        if partial is not None:
            partial({"targets": targets, "base": base, "per_target": dict(runs), "elapsed_seconds": round(time.time() - t0, 1)})
    summaries = {m: _summarise(runs[m], base) for m in methods}
    continual = None
    if continual_n:
        order = [c.name for c in world.CHARACTERS][: continual_n if not quick else min(continual_n, 4)]
        progress(f"continual: {len(order)} sequential requests")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            continual = ex.submit(_continual, order, steps, renders).result()
    import torch

    return {
        "command": None,
        "mode": "quick" if quick else "full",
        "model": default_source(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "note": "every method tunes the visual module only (LoRA on vision tower + projector; projector only for "
        "nscvf_projector); the language model is frozen. Same 8 forget images (training renders), step budget and "
        "early stop (every forget image and 3 augmented views of each answered as unknown). nscvf, cvf and "
        "nscvf_projector use the answer-level term (answer_weight=1); nscvf_feature is nscvf without it.",
        "targets": targets,
        "base": base,
        "methods": summaries,
        "per_target": {m: runs[m]["per_target"] for m in methods},
        "null_space_overhead_per_step": _overhead(summaries),
        "continual": continual,
        "wall_seconds": round(time.time() - t0, 1),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def to_markdown(res: dict) -> str:
    lines = [
        f"# Benchmark ({res['mode']} mode)",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']['platform']}, {res['machine']['cpus']} CPUs, "
        f"torch {res['machine']['torch']} ({res['machine']['threads']} threads), CUDA: {res['machine']['cuda'] or 'none'}  ",
        f"Model: `{res['model']}`; targets: {', '.join(res['targets'])}; wall time {res['wall_seconds']} s",
        "",
        f"_{res['note']}_",
        "",
        "Base model (before unlearning), mean over targets: "
        f"target accuracy {_pct(res['base']['forget_acc_heldout'])}% (held-out renders), retain accuracy {_pct(res['base']['retain_acc'])}%.",
        "",
        '| method | forget acc (train renders) | forget acc (held-out) | target "I don\'t know" | target wrong name | retain acc | retain drop (pts) | harmonic mean | text identical | retain drift (mean / max) | steps | s / request (cold / warm) | s / step | peak RSS MB |',
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, s in res["methods"].items():
        lines.append(
            f"| {m} | {_pct(s['forget_acc'])} | {_pct(s['forget_acc_heldout'])} | {_pct(s['unknown_rate'])} | {_pct(s['wrong_name_rate'])} | "
            f"{_pct(s['retain_acc'])} | {_pct(s['retain_drop'])} | "
            f"{_pct(s['harmonic_mean'])} | {'yes' if s['text_identical'] else 'NO'} | {s['retain_drift']} / {s['retain_drift_max']} | {s['steps_run']} | "
            f"{s['seconds_per_request']} ({s['seconds_per_request_cold']} / {s['seconds_per_request_warm']}) | {s['seconds_per_step']} | {s['peak_rss_mb']} |"
        )
    share = res["methods"].get("nscvf", {}).get("projection_share")
    lines += [
        "",
        f"Null-space overhead per step (nscvf vs cvf, same run): {_pct(res['null_space_overhead_per_step'])}% "
        f"(seconds per step include the stop checks every 2 steps); re-projecting A after each step took "
        f"{_pct(share)}% of nscvf's step time. Computing the null space itself (covariances and eigendecompositions, "
        "cached per model state and protected set) is a per-request cost, included in seconds per request.",
        "",
    ]
    top = max(s["harmonic_mean"] or 0 for s in res["methods"].values())
    best = [m for m, s in res["methods"].items() if (s["harmonic_mean"] or 0) == top]
    tie = " (a tie)" if len(best) > 1 else ""
    lines.append(f"Best harmonic mean of (1 - held-out forget accuracy) and retain accuracy{tie}: **{', '.join(best)}**.")
    c = res.get("continual")
    if c:
        lines += [
            "",
            f"## Continual: {len(c['steps'])} sequential NSCVF requests",
            "",
            "| step | target | current target acc | max earlier target acc | retain acc | text acc | text identical | drift | s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in c["steps"]:
            lines.append(
                f"| {s['step']} | {s['target']} | {_pct(s['current_target_acc'])} | {_pct(s['earlier_targets_max_acc'])} | "
                f"{_pct(s['retain_acc'])} | {_pct(s['text_acc'])} | {'yes' if s['text_identical'] else 'NO'} | {s['retain_drift']} | {s['seconds']} |"
            )
    return "\n".join(lines) + "\n"


def write(res: dict, json_out: str | None, md_out: str | None) -> None:
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(res, indent=1))
    if md_out:
        Path(md_out).parent.mkdir(parents=True, exist_ok=True)
        Path(md_out).write_text(to_markdown(res))
