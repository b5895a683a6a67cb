"""``nscvf bench``: every method on the same targets, data and step budget, through the same engine
and the same evaluation as the app and the CLI; plus a continual run of sequential requests.

Each method runs in its own process (so its peak RSS and cold-cache time are its own) with a fresh
cache directory; a second request on the first target then measures the warm cache.

Every request is repeated for each seed (``--seeds``): seed s changes the forget images (8 other training
renders of the target) and the optimisation seed. A summary number is the mean over targets for each
seed, reported as mean +- std over seeds with n. Beside the target and the retained characters it
measures the target's look-alike sibling (``neighbour``), and, for targets with a committed gold
reference (:mod:`nscvf.evidence`), the agreement with gold, the KS test of P("I don't know") against gold,
feature-profile distances and the relearning attack.
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

from nscvf.evidence import GOLD_TARGETS, spread

QUICK_TARGETS = GOLD_TARGETS
QUICK_METHODS = ["nscvf", "cvf", "gd", "npo"]
METHOD_ORDER = ["nscvf", "nscvf_feature", "cvf", "nscvf_projector", "ga", "gd", "kl", "npo"]
SEED_STRIDE = 16  # seed s takes the forget renders train_seeds(8, SEEDS["forget_example"] + 16 s)


def _forget_images(name: str, n: int = 8, seed: int = 0):
    from nscvf import world

    offset = world.SEEDS["forget_example"] + SEED_STRIDE * seed
    return [world.render(world.get_character(name), s) for s in world.train_seeds(n, offset)]


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


def _evidence(vlm, after, name: str, rows: list[dict], renders: int, relearn: bool, originals: dict) -> dict:
    """Neighbour, gold and relearning measurements of one request (``after``: the unlearned model)."""
    from nscvf import evidence

    out = {
        "neighbour": evidence.world.get_character(name).neighbour,
        "neighbour_retain_acc": evidence.neighbour_eval(after, name),
        "neighbour_retain_acc_eval": evidence.neighbour_retain_acc(rows, name),
        **{f"target12_{k}": v for k, v in evidence.target_identity(after, name).items()},
        "neighbour_drift": evidence.neighbour_drift(vlm, after, name),
    }
    gold = evidence.load_gold(name, renders)
    if gold is not None:
        if name not in originals:
            originals[name] = evidence.relational_profile(vlm, name)
        p_unk = evidence.p_unknown(after, name)
        out |= evidence.gold_comparison(rows, gold, name, p_unk, evidence.relational_profile(after, name), originals[name])
        out["p_unknown_mean"] = round(statistics.fmean(p_unk), 4)
        out["gold_relearn_steps"] = gold["relearn_steps"]
        if gold.get("neighbour_acc") is not None and out["neighbour_retain_acc"] is not None:
            out["neighbour_gap_gold"] = round(out["neighbour_retain_acc"] - gold["neighbour_acc"], 4)
    if relearn:
        out["relearn_steps_k"] = evidence.relearn_steps(after, name)
        out["relearn_steps"] = evidence.censored_mean(out["relearn_steps_k"])
    return out


def _run_method(method: str, targets: list[str], steps: int | None, renders: int, seeds=(0,), relearn: bool = True) -> dict:
    import torch

    from nscvf.cache import Cache
    from nscvf.method import UnlearnConfig
    from nscvf.models import load_model

    torch.set_num_threads(int(os.environ.get("NSCVF_BENCH_THREADS", torch.get_num_threads())))
    vlm = load_model()
    per_target = []
    originals: dict = {}
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d)
        for seed in seeds:
            cfg = UnlearnConfig(method=method, evaluate="none", seed=seed)
            if steps:
                cfg = cfg.replace(steps=steps)
            for i, name in enumerate(targets):
                per_target.append(
                    _one_request(vlm, cache, cfg, name, seed, renders, relearn, originals, warm=i == 0 and seed == seeds[0])
                )
    return {
        "method": method,
        "per_target": per_target,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _one_request(vlm, cache, cfg, name: str, seed: int, renders: int, relearn: bool, originals: dict, warm: bool) -> dict:
    from nscvf.eval import evaluate
    from nscvf.method import UnlearningChain

    chain = UnlearningChain(vlm, cache)
    t = time.time()
    r = chain.forget(_forget_images(name, seed=seed), None, cfg, target=name)
    seconds = time.time() - t
    ev = evaluate(chain.vlm, name, renders=renders, mc=False, keep_answers=True)
    row = {
        "target": name,
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
        **_target_metrics(ev),
        **_evidence(vlm, chain.vlm, name, ev["answers"], renders, relearn, originals),
    }
    if warm:
        # The same request again: covariances and base answers now come from the cache.
        t = time.time()
        UnlearningChain(vlm, cache).forget(_forget_images(name, seed=seed), None, cfg, target=name)
        row["seconds_warm"] = round(time.time() - t, 2)
    chain.close()
    return row


def _mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.fmean(vals), 4) if vals else None


MEAN_KEYS = (
    "forget_acc",
    "forget_acc_heldout",
    "forget_name_acc_heldout",
    "unknown_rate",
    "wrong_name_rate",
    "retain_acc",
    "neighbour_retain_acc",
    "neighbour_retain_acc_eval",
    "target12_unknown",
    "target12_named",
    "target12_sibling_named",
    "neighbour_gap_gold",
    "neighbour_drift",
    "text_acc",
    "retain_drift",
    "seconds_per_step",
    "seconds",
    "steps_run",
    "ks_stat",
    "ks_p",
    "p_unknown_mean",
    "feature_distance_gold",
    "feature_distance_original",
    "relearn_steps",
)
SPLIT_KEYS = ("gold_agreement", "gold_gap")


def _per_seed(rows: list[dict], base: dict) -> dict:
    """One seed's numbers: the mean over its targets (a target without a sibling or gold has None there)."""
    s = {k: _mean(rows, k) for k in MEAN_KEYS}
    for k in SPLIT_KEYS:
        dicts = [r[k] for r in rows if r.get(k)]
        s[k] = {sp: _mean(dicts, sp) for sp in ("target", "neighbour", "retain", "text")} if dicts else None
    s["retain_drop"] = None if s["retain_acc"] is None else round(base["retain_acc"] - s["retain_acc"], 4)
    f = s["forget_acc_heldout"]
    r = s["neighbour_retain_acc"] if s["neighbour_retain_acc"] is not None else s["retain_acc"]
    s["harmonic_mean"] = round(2 * (1 - f) * r / ((1 - f) + r), 4) if f is not None and r and (1 - f) + r > 0 else None
    return s


def _summarise(run: dict, base: dict) -> dict:
    """Every number as {"mean", "std", "n"} over seeds (each seed: the mean over its targets)."""
    rows = run["per_target"]
    seeds = sorted({r.get("seed", 0) for r in rows})
    per_seed = [_per_seed([r for r in rows if r.get("seed", 0) == sd], base) for sd in seeds]
    s = {k: spread([p[k] for p in per_seed]) for k in (*MEAN_KEYS, "retain_drop", "harmonic_mean")}
    for k in SPLIT_KEYS:
        have = [p[k] for p in per_seed if p[k]]
        s[k] = {sp: spread([h[sp] for h in have]) for sp in ("target", "neighbour", "retain", "text")} if have else None
    s["seeds"] = seeds
    s["retain_drift_max"] = max((r["retain_drift_max"] for r in rows), default=None)
    # Time spent re-projecting LoRA A after each step, as a share of the optimisation steps' time.
    opt = sum((r.get("seconds_per_step") or 0) * r["steps_run"] for r in rows)
    proj = sum(r.get("projection_seconds") or 0 for r in rows)
    s["projection_share"] = round(proj / (opt - proj), 4) if opt > proj else None
    s["text_identical"] = all(r["text_identical"] for r in rows)
    s["seconds_per_request"] = s["seconds"]
    s["seconds_per_request_cold"] = rows[0]["seconds"]
    s["seconds_per_request_warm"] = rows[0].get("seconds_warm")
    s["peak_rss_mb"] = run["peak_rss_mb"]
    s["per_gold_target"] = _per_gold_target(rows)
    return s


def _per_gold_target(rows: list[dict]) -> dict:
    """For each target with a gold record: KS p-value, agreement and relearning steps over seeds."""
    out = {}
    for name in dict.fromkeys(r["target"] for r in rows if r.get("ks_p") is not None):
        mine = [r for r in rows if r["target"] == name]
        out[name] = {
            "ks_p": spread([r["ks_p"] for r in mine]),
            "ks_stat": spread([r["ks_stat"] for r in mine]),
            "forget_acc_heldout": spread([r["forget_acc_heldout"] for r in mine]),
            "neighbour_retain_acc": spread([r["neighbour_retain_acc"] for r in mine]),
            "gold_gap": {sp: spread([r["gold_gap"][sp] for r in mine]) for sp in ("target", "neighbour", "retain", "text")},
            "relearn_steps": spread([r.get("relearn_steps") for r in mine]),
            "gold_relearn_steps": mine[0].get("gold_relearn_steps"),
        }
    return out


def quick_vs_full(per_target: dict, n_full: int, n_full_neighbour: int) -> dict:
    """How far a mean over the quick mode's targets may differ from the mean over all targets: 2 standard
    errors of a mean of n targets drawn from n_full without replacement, from the spread across targets."""
    out = {}
    for m, rows in per_target.items():
        out[m] = {}
        for key, full in (("forget_acc_heldout", n_full), ("retain_acc", n_full), ("neighbour_retain_acc", n_full_neighbour)):
            by_target = {}
            for r in rows:
                if r.get(key) is not None:
                    by_target.setdefault(r["target"], []).append(r[key])
            means = [statistics.fmean(v) for v in by_target.values()]
            n = len(means)
            if n < 2 or full <= n:
                out[m][key] = 0.0 if full == n else None
                continue
            se = statistics.stdev(means) / n**0.5 * ((full - n) / (full - 1)) ** 0.5
            out[m][key] = round(2 * se, 4)
    return out


def _overhead(summaries: dict) -> float | None:
    """Seconds per step of nscvf over cvf (same run), minus 1."""
    a, b = (summaries.get(m, {}).get("seconds_per_step", {}).get("mean") for m in ("nscvf", "cvf"))
    if a and b:
        return round(a / b - 1, 4)
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


def _base(vlm, targets: list[str], renders: int) -> dict:
    """The original model's numbers (mean over targets) and, per gold target, how it compares with gold
    (the KS test must be able to tell a model that still knows the target from gold)."""
    from nscvf import evidence
    from nscvf.eval import evaluate

    rows, gold = [], {}
    for name in targets:
        ans = evaluate(vlm, name, renders=renders, mc=False, keep_answers=True)["answers"]
        rows.append(_target_metrics({"answers": ans}) | {"neighbour_retain_acc": evidence.neighbour_eval(vlm, name)})
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
    return {k: _mean(rows, k) for k in rows[0]} | {"gold": gold}


def run_bench(
    quick: bool = False,
    steps: int | None = None,
    methods: list[str] | None = None,
    renders: int = 3,
    continual_n: int = 8,
    progress=print,
    partial=None,
    targets: list[str] | None = None,
    seeds: int = 3,
    relearn: bool = True,
) -> dict:
    """Run the benchmark. ``partial(dict)`` (optional) receives the results so far after every method, so
    that an interrupted run keeps what it finished."""
    from nscvf import world
    from nscvf.models import default_source, load_model

    t0 = time.time()
    targets = targets or (QUICK_TARGETS if quick else [c.name for c in world.CHARACTERS])
    methods = methods or (QUICK_METHODS if quick else METHOD_ORDER)
    vlm = load_model()
    progress("evaluating the base model")
    base = _base(vlm, targets, renders)
    runs = {}
    ctx = get_context("spawn")
    for m in methods:
        progress(f"method {m}: {len(targets)} targets x {seeds} seeds")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            runs[m] = ex.submit(_run_method, m, targets, steps, renders, tuple(range(seeds)), relearn).result()
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
        "seeds": seeds,
        "renders": renders,
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
        "quick_vs_full": quick_vs_full(
            {m: runs[m]["per_target"] for m in methods},
            len(world.CHARACTERS),
            sum(1 for c in world.CHARACTERS if c.neighbour),
        ),
        "wall_seconds": round(time.time() - t0, 1),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _pm(d: dict | None, pct: bool = True, digits: int = 3) -> str:
    """A spread as "mean +- std" (percent for rates)."""
    if not d or d.get("mean") is None:
        return "-"
    if pct:
        return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def _method_table(res: dict) -> list[str]:
    n = res.get("seeds", 1)
    lines = [
        f"Every cell: mean ± std over {n} seed(s) (forget images and optimisation seed); each seed's value is the mean "
        "over the targets. Rates in %. Neighbour: the target's look-alike sibling (targets with one).",
        "",
        '| method | forget acc (train renders) | forget acc (held-out) | target "I don\'t know" | target wrong name '
        "| retain acc | neighbour retain acc | harmonic mean | neighbour drift | retain drift | text identical | steps | s / request | peak RSS MB "
        "| target, 12 renders: \"I don't know\" / named / sibling's name |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, s in res["methods"].items():
        lines.append(
            f"| {m} | {_pm(s['forget_acc'])} | {_pm(s['forget_acc_heldout'])} | {_pm(s['unknown_rate'])} | "
            f"{_pm(s['wrong_name_rate'])} | {_pm(s['retain_acc'])} | {_pm(s['neighbour_retain_acc'])} | "
            f"{_pm(s['harmonic_mean'])} | {_pm(s['neighbour_drift'], False)} | {_pm(s['retain_drift'], False)} | "
            f"{'yes' if s['text_identical'] else 'NO'} | {_pm(s['steps_run'], False, 1)} | {_pm(s['seconds_per_request'], False, 1)} | "
            f"{s['peak_rss_mb']} | {_pm(s['target12_unknown'])} / {_pm(s['target12_named'])} / {_pm(s['target12_sibling_named'])} |"
        )
    return lines


def _gold_table(res: dict) -> list[str]:
    gold = res["base"].get("gold") or {}
    if not gold:
        return ["", "No gold references for these targets (`nscvf gold` builds them; see BENCHMARKS.md)."]
    lines = [
        "",
        "## Against the gold reference (a model that never learned the target visually)",
        "",
        f"Gold targets: {', '.join(gold)}. Agreement: share of identical answers on held-out renders (both question "
        "splits). Gap: method accuracy minus gold accuracy, points. KS: two-sample Kolmogorov-Smirnov test of "
        "P(\"I don't know\") on the target's held-out renders against gold's (p > 0.05: indistinguishable). "
        "Profile distance: the target's relational feature profile vs gold's and vs the original model's.",
        "",
        "| method | agreement target / neighbour / retain / text | gap target / neighbour / retain (pts) | KS stat | KS p "
        "| neighbour acc minus gold's (pts, 12 renders) | targets with KS p > 0.05 | profile dist. to gold | to original "
        "| relearn steps (k=1,2,4 mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, s in res["methods"].items():
        ag, gap = s.get("gold_agreement") or {}, s.get("gold_gap") or {}
        per = s.get("per_gold_target") or {}
        passed = sum(1 for v in per.values() if (v["ks_p"]["mean"] or 0) > 0.05)
        lines.append(
            f"| {m} | {' / '.join(_pm(ag.get(k)) for k in ('target', 'neighbour', 'retain', 'text'))} | "
            f"{' / '.join(_pm(gap.get(k)) for k in ('target', 'neighbour', 'retain'))} | {_pm(s['ks_stat'], False)} | "
            f"{_pm(s['ks_p'], False)} | {_pm(s.get('neighbour_gap_gold'))} | {passed} of {len(per)} | {_pm(s['feature_distance_gold'], False)} | "
            f"{_pm(s['feature_distance_original'], False)} | {_pm(s['relearn_steps'], False, 1)} |"
        )
    lines += ["", "| gold target | gold accuracy target / neighbour / retain / text (evaluation rows) | gold neighbour acc (12 renders) | gold relearn steps (k=1,2,4) "
              "| original model vs gold: KS stat, p; agreement target | gold training |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, g in gold.items():
        acc, o = g["gold_split_accuracy"], g["original_vs_gold"]
        tr = g["gold_training"]
        lines.append(
            f"| {name} | {' / '.join(_pct(acc[k]) for k in ('target', 'neighbour', 'retain', 'text'))} | "
            f"{_pct(g.get('gold_neighbour_acc'))} | "
            f"{', '.join('>20' if v is None else str(v) for v in g['gold_relearn_steps'].values())} | {o['ks_stat']}, {o['ks_p']}; "
            f"{_pct(o['gold_agreement']['target'])} | {tr.get('wall_seconds', {}).get('total', '-')} s |"
        )
    lines += ["", "Per gold target (mean ± std over seeds): KS p-value; relearning steps (21 = not within 20).", "",
              "| method | " + " | ".join(gold) + " |", "|---|" + "---|" * len(gold)]  # fmt: skip
    for m, s in res["methods"].items():
        per = s.get("per_gold_target") or {}
        cells = [
            f"p {_pm(per[n]['ks_p'], False)}; relearn {_pm(per[n]['relearn_steps'], False, 1)}" if n in per else "-" for n in gold
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _all_names() -> list[str]:
    from nscvf import world

    return world.NAMES


def to_markdown(res: dict) -> str:
    base = res["base"]
    lines = [
        f"# Benchmark ({res['mode']} mode)",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']['platform']}, {res['machine']['cpus']} CPUs, "
        f"torch {res['machine']['torch']} ({res['machine']['threads']} threads), CUDA: {res['machine']['cuda'] or 'none'}  ",
        f"Model: `{res['model']}`; targets: {', '.join(res['targets'])}; {res.get('seeds', 1)} seed(s); "
        f"{res.get('renders', '?')} evaluation renders per character and split; wall time {res['wall_seconds']} s",
        "",
        f"_{res['note']}_",
        "",
        "Base model (before unlearning), mean over targets: "
        f"target accuracy {_pct(base['forget_acc_heldout'])}% (held-out renders), retain accuracy {_pct(base['retain_acc'])}%, "
        f"neighbour accuracy {_pct(base.get('neighbour_retain_acc'))}%.",
        "",
        *_method_table(res),
    ]
    share = res["methods"].get("nscvf", {}).get("projection_share")
    lines += [
        "",
        f"Null-space overhead per step (nscvf vs cvf, same run): {_pct(res['null_space_overhead_per_step'])}% "
        f"(seconds per step include the stop checks every 2 steps); re-projecting A after each step took "
        f"{_pct(share)}% of nscvf's step time.",
        "",
    ]
    top = max((s["harmonic_mean"]["mean"] or 0) for s in res["methods"].values())
    best = [m for m, s in res["methods"].items() if (s["harmonic_mean"]["mean"] or 0) == top]
    tie = " (a tie)" if len(best) > 1 else ""
    lines.append(
        f"Best harmonic mean of (1 - held-out forget accuracy) and neighbour retain accuracy (retain accuracy where the "
        f"target has no sibling){tie}: **{', '.join(best)}**."
    )
    lines += _gold_table(res)
    q = res.get("quick_vs_full")
    if q and res["mode"] == "quick":
        lines += [
            "",
            f"**Quick vs full mode.** This run covers {len(res['targets'])} of {len(_all_names())} targets and "
            f"{len(res['methods'])} of {len(METHOD_ORDER)} methods. From the spread across its targets, a mean over all "
            "targets may differ from the quick mean by about (2 standard errors, points): "
            + "; ".join(
                f"{m}: forget {_pct(v['forget_acc_heldout'])}, retain {_pct(v['retain_acc'])}, neighbour {_pct(v['neighbour_retain_acc'])}"
                for m, v in q.items()
            )
            + ". Methods not in the quick run are only in the full run.",
        ]
    c = res.get("continual")
    if c:
        lines += [
            "",
            f"## Continual: {len(c['steps'])} sequential NSCVF requests (one seed)",
            "",
            "| step | target | current target acc | max earlier target acc | retain acc | text acc | text identical | drift | s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in c["steps"]:
            lines.append(
                f"| {s['step']} | {s['target']} | {_pct(s['current_target_acc'])} | {_pct(s['earlier_targets_max_acc'])} | "
                f"{_pct(s['retain_acc'])} | {_pct(s['text_acc'])} | {'yes' if s['text_identical'] else 'NO'} | {s['retain_drift']} | {s['seconds']} |"
            )
    lines += _gpu_section(res.get("gpu"))
    for note in res.get("notes") or []:  # hand-written sections kept in the JSON (each names its command)
        lines += ["", note.rstrip()]
    return "\n".join(lines) + "\n"


def _gpu_section(gpu: dict | None) -> list[str]:
    """The 7B measurements (``scripts/gpu_check.py``), or why there are none."""
    if not gpu:
        return []
    lines = ["", "## GPU: 7B architectures (scripts/gpu_check.py)", "", f"Command: `{gpu.get('command')}`", ""]
    if gpu.get("status"):
        lines += [f"Status: {gpu['status']}", ""]
    keys = [
        "card",
        "dtype",
        "peak_gib",
        "extra_session_gib",
        "null_space_s",
        "s_per_step",
        "reprojection_share",
        "request_s",
        "steps",
    ]
    archs = [a for a in gpu if isinstance(gpu[a], dict)]
    lines += ["| architecture | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for a in archs:
        lines.append(f"| {a} | " + " | ".join("-" if gpu[a].get(k) is None else str(gpu[a][k]) for k in keys) + " |")
    if gpu.get("targets"):
        lines += ["", f"Targets: {gpu['targets']}"]
    return lines


def write(res: dict, json_out: str | None, md_out: str | None) -> None:
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(res, indent=1))
    if md_out:
        Path(md_out).parent.mkdir(parents=True, exist_ok=True)
        Path(md_out).write_text(to_markdown(res))
