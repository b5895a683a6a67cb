"""Writing a benchmark result for people: the Markdown tables of BENCHMARKS.md (methods, gold
comparison, quick vs full, continual, GPU) and the JSON/Markdown files. Pure: a result dict in, text out."""

from __future__ import annotations

import json
from pathlib import Path

from nscvf import world
from nscvf.bench import photo
from nscvf.bench.settings import METHOD_ORDER
from nscvf.rates import pct


def _pm(d: dict | None, percent: bool = True, digits: int = 3) -> str:
    """A spread as "mean +- std" (percent for rates)."""
    if not d or d.get("mean") is None:
        return "-"
    if percent:
        return f"{pct(d['mean'])} ± {pct(d['std'])}"
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
            f"| {name} | {' / '.join(pct(acc[k]) for k in ('target', 'neighbour', 'retain', 'text'))} | "
            f"{pct(g.get('gold_neighbour_acc'))} | "
            f"{', '.join('>20' if v is None else str(v) for v in g['gold_relearn_steps'].values())} | {o['ks_stat']}, {o['ks_p']}; "
            f"{pct(o['gold_agreement']['target'])} | {tr.get('wall_seconds', {}).get('total', '-')} s |"
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


def to_markdown(res: dict) -> str:
    if str(res.get("mode", "")).startswith("photo"):
        return photo.to_markdown(res)
    base = res["base"]
    lines = [
        f"# Benchmark ({res['mode']} mode)",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']['platform']}, {res['machine']['cpus']} CPUs, "
        f"torch {res['machine']['torch']} ({_threads(res['machine'])}), CUDA: {res['machine']['cuda'] or 'none'}  ",
        f"Model: `{res['model']}`; targets: {', '.join(res['targets'])}; {res.get('seeds', 1)} seed(s); "
        f"{res.get('renders', '?')} evaluation renders per character and split; wall time {res['wall_seconds']} s",
        "",
        f"_{res['note']}_",
        "",
        *_grid_note(res.get("grid")),
        "Base model (before unlearning), mean over targets: "
        f"target accuracy {pct(base['forget_acc_heldout'])}% (held-out renders), retain accuracy {pct(base['retain_acc'])}%, "
        f"neighbour accuracy {pct(base.get('neighbour_retain_acc'))}%.",
        "",
        *_method_table(res),
    ]
    share = res["methods"].get("nscvf", {}).get("projection_share")
    lines += [
        "",
        f"Null-space overhead per step (nscvf vs cvf, same run): {pct(res['null_space_overhead_per_step'])}% "
        f"(seconds per step include the stop checks every 2 steps); re-projecting A after each step took "
        f"{pct(share)}% of nscvf's step time.",
        "",
    ]
    top = max(((s["harmonic_mean"]["mean"] or 0) for s in res["methods"].values()), default=None)
    best = [m for m, s in res["methods"].items() if (s["harmonic_mean"]["mean"] or 0) == top]
    tie = " (a tie)" if len(best) > 1 else ""
    lines.append(
        f"Best harmonic mean of (1 - held-out forget accuracy) and neighbour retain accuracy (retain accuracy where the "
        f"target has no sibling){tie}: **{', '.join(best) or '-'}**."
    )
    lines += _gold_table(res)
    lines += _quick_note(res) + _continual_table(res.get("continual"))
    lines += _gpu_section(res.get("gpu"))
    for note in res.get("notes") or []:  # hand-written sections kept in the JSON (each names its command)
        lines += ["", note.rstrip()]
    return "\n".join(lines) + "\n"


def _grid_note(grid: dict | None) -> list[str]:
    """Which of the grid's jobs have results (a run folder's benchmark, :func:`nscvf.bench.jobs.assemble`)."""
    if not grid:
        return []
    line = (
        f"Grid: {grid['done']} of {grid['jobs']} jobs have results ({grid['engine']}; commits {', '.join(grid['commits'])}; "
        f"{grid['sessions']} session(s)). A method's numbers use its complete seeds only (n below)."
    )
    if grid["missing"]:
        shown = ", ".join(grid["missing"][:8]) + (f" and {len(grid['missing']) - 8} more" if len(grid["missing"]) > 8 else "")
        line += f" **Incomplete**: no result yet for {shown}."
    for name, err in grid["failed"].items():
        line += f" Failed: {name} ({err})."
    return [line, ""]


def _quick_note(res: dict) -> list[str]:
    """How far a quick run's means may be from the full run's (quick mode only)."""
    lines: list[str] = []
    q = res.get("quick_vs_full")
    if q and res["mode"] == "quick":
        lines += [
            "",
            f"**Quick vs full mode.** This run covers {len(res['targets'])} of {len(world.NAMES)} targets and "
            f"{len(res['methods'])} of {len(METHOD_ORDER)} methods. From the spread across its targets, a mean over all "
            "targets may differ from the quick mean by about (2 standard errors, points): "
            + "; ".join(
                f"{m}: forget {pct(v['forget_acc_heldout'])}, retain {pct(v['retain_acc'])}, neighbour {pct(v['neighbour_retain_acc'])}"
                for m, v in q.items()
            )
            + ". Methods not in the quick run are only in the full run.",
        ]
    return lines


def _continual_table(c: dict | None) -> list[str]:
    """The continual run's table, one row per sequential request."""
    lines: list[str] = []
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
                f"| {s['step']} | {s['target']} | {pct(s['current_target_acc'])} | {pct(s['earlier_targets_max_acc'])} | "
                f"{pct(s['retain_acc'])} | {pct(s['text_acc'])} | {'yes' if s['text_identical'] else 'NO'} | {s['retain_drift']} | {s['seconds']} |"
            )
    return lines


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


def _threads(m: dict) -> str:
    """The torch threads a run's model calls used (its domain's count where it names one)."""
    if m.get("model_threads"):
        return f"{m['model_threads']} thread(s) per model call; torch's default {m['threads']}"
    return f"{m['threads']} threads"
