"""Summarising the benchmark grid: a number is the mean over targets for each seed, reported as
{"mean", "std", "n"} over seeds (:func:`spread`); plus how far the quick mode's means may be from the full
mode's, and the null-space overhead. Pure functions of the per-target rows (``--from-json`` reruns them)."""

from __future__ import annotations

import math
import statistics

from nscvf.bench.evidence import SPLITS

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


def spread(values: list[float | None]) -> dict:
    """{"mean", "std" (sample standard deviation; 0 for one value), "n"} of the values that are not None."""
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": round(statistics.fmean(v), 4), "std": round(statistics.stdev(v), 4) if len(v) > 1 else 0.0, "n": len(v)}


def mean(rows: list[dict], key: str) -> float | None:
    """Mean of ``row[key]`` over the rows that have it (rounded to 4 digits)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def per_seed(rows: list[dict], base: dict) -> dict:
    """One seed's numbers: the mean over its targets (a target without a sibling or gold has None there)."""
    s = {k: mean(rows, k) for k in MEAN_KEYS}
    for k in SPLIT_KEYS:
        dicts = [r[k] for r in rows if r.get(k)]
        s[k] = {sp: mean(dicts, sp) for sp in SPLITS} if dicts else None
    s["retain_drop"] = None if s["retain_acc"] is None else round(base["retain_acc"] - s["retain_acc"], 4)
    f = s["forget_acc_heldout"]
    r = s["neighbour_retain_acc"] if s["neighbour_retain_acc"] is not None else s["retain_acc"]
    s["harmonic_mean"] = round(2 * (1 - f) * r / ((1 - f) + r), 4) if f is not None and r and (1 - f) + r > 0 else None
    return s


def summarise(run: dict, base: dict) -> dict:
    """Every number of one method's run as {"mean", "std", "n"} over seeds (each seed: the mean over its targets)."""
    rows = run["per_target"]
    seeds = sorted({r.get("seed", 0) for r in rows})
    seed_means = [per_seed([r for r in rows if r.get("seed", 0) == sd], base) for sd in seeds]
    s = {k: spread([p[k] for p in seed_means]) for k in (*MEAN_KEYS, "retain_drop", "harmonic_mean")}
    for k in SPLIT_KEYS:
        have = [p[k] for p in seed_means if p[k]]
        s[k] = {sp: spread([h[sp] for h in have]) for sp in SPLITS} if have else None
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
    s["per_gold_target"] = per_gold_target(rows)
    return s


def per_gold_target(rows: list[dict]) -> dict:
    """For each target with a gold record: KS p-value, agreement and relearning steps over seeds."""
    out = {}
    for name in dict.fromkeys(r["target"] for r in rows if r.get("ks_p") is not None):
        mine = [r for r in rows if r["target"] == name]
        out[name] = {
            "ks_p": spread([r["ks_p"] for r in mine]),
            "ks_stat": spread([r["ks_stat"] for r in mine]),
            "forget_acc_heldout": spread([r["forget_acc_heldout"] for r in mine]),
            "neighbour_retain_acc": spread([r["neighbour_retain_acc"] for r in mine]),
            "gold_gap": {sp: spread([r["gold_gap"][sp] for r in mine]) for sp in SPLITS},
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


def overhead(summaries: dict) -> float | None:
    """Seconds per step of nscvf over cvf (same run), minus 1."""
    a, b = (summaries.get(m, {}).get("seconds_per_step", {}).get("mean") for m in ("nscvf", "cvf"))
    if a and b:
        return round(a / b - 1, 4)
    return None


def resummarise(res: dict) -> dict:
    """The summaries of a saved run recomputed from its per-target rows (after a change to the summary)."""
    runs = {m: {"per_target": rows, "peak_rss_mb": res["methods"][m]["peak_rss_mb"]} for m, rows in res["per_target"].items()}
    res["methods"] = {m: summarise(run, res["base"]) for m, run in runs.items()}
    res["null_space_overhead_per_step"] = overhead(res["methods"])
    return res
