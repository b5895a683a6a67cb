"""The photo model's benchmark (issue 17: ``nscvf bench --model photo``): the same grid of jobs (method x target
x seed, plus the base model's numbers), the same methods, budget and early stop, measured with the photo
evaluation (:mod:`nscvf.photo_eval`) instead of the drawn world's quiz. Torch-free: the summary and the tables;
the cells run in :mod:`nscvf.bench.photo_run`.

Targets: 8 concepts the base model names on images it can be shown here: three from crops of bundled CC0
photographs (cat, espresso, tripod) and five from views of emoji renders, two pairs of them look-alike siblings
(guitar and violin, teapot and bottle), and the clock (29 different emoji). Seed s draws other forget crops and
views (:func:`nscvf.photo_eval.forget_and_heldout`) and the optimisation seed. Per cell: forgotten (held-out
views and the concept's other images no longer named), others kept (the other concepts' images answered as
before), siblings kept, text answers bit-identical; per method, each the mean over targets, mean +- std over
seeds with n.
"""

from __future__ import annotations

from nscvf.bench.summary import spread as _spread

TARGETS = ["a cat", "an espresso", "a tripod", "a guitar", "a violin", "a teapot", "a bottle", "a clock"]
KEYS = ("forgotten", "others_kept", "others_named_kept", "siblings_kept")  # fractions; text_identical apart
GOALS = {"forgotten": 0.95, "others_kept": 0.95, "siblings_kept": 0.9}
NOTE = (
    "the photo model (assets/photo_model); every method tunes the visual module only, the same 8 forget images "
    "(crops of a bundled photo or views of emoji renders), step budget and early stop; measured on every image the "
    "model can be shown here (nscvf.photo_eval)"
)


def summarise(rows: list[dict]) -> dict:
    """One method's cells: each number the mean over its targets per seed, then mean +- std over seeds."""
    seeds = sorted({r["seed"] for r in rows})
    per_seed = [[r for r in rows if r["seed"] == s] for s in seeds]
    out = {k: _spread([_spread([r.get(k) for r in rs])["mean"] for rs in per_seed]) for k in KEYS}
    out["text_identical"] = {"share": round(sum(bool(r["text_identical"]) for r in rows) / len(rows), 4), "n": len(rows)}
    out["steps_run"] = _spread([r.get("steps_run") for r in rows])
    out["seconds"] = _spread([r.get("seconds") for r in rows])
    out["seeds"] = seeds
    out["goals_met"] = {k: (out[k]["mean"] is not None and out[k]["mean"] >= g) for k, g in GOALS.items()}
    return out


def per_target(rows: list[dict]) -> dict:
    """Per target: each number's mean over seeds."""
    out = {}
    for t in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == t]
        out[t] = {k: _spread([r.get(k) for r in mine])["mean"] for k in KEYS} | {
            "siblings_n": mine[0].get("siblings_n"), "text_identical": all(r["text_identical"] for r in mine)
        }  # fmt: skip
    return out


def assemble(run: dict, settings, done: dict, jobs: list, grid: dict) -> dict:
    """The photo benchmark's result from its finished jobs (``done``: job -> result file), as
    :func:`nscvf.bench.jobs.assemble` does for the drawn world."""
    base = next((rec for j, rec in done.items() if j.kind == "base"), None)
    methods, rows_by_method = {}, {}
    for m in settings.method_names:
        rows = []
        for s in range(settings.seeds):
            cells = [done.get(j) for j in jobs if j.kind == "cell" and j.method == m and j.seed == s]
            if cells and all(cells):
                rows += [c["result"] for c in cells]
        if rows:
            rows_by_method[m] = rows
            methods[m] = summarise(rows)
    return {
        "command": run["command"],
        "mode": "photo quick" if settings.quick else "photo",
        "model": run["model"]["source"],
        "seeds": settings.seeds,
        "targets": settings.target_names,
        "note": NOTE,
        "machine": (base or {}).get("worker", {}).get("machine"),
        "base": (base or {}).get("result"),
        "methods": methods,
        "per_target": {m: per_target(rows) for m, rows in rows_by_method.items()},
        "cells": rows_by_method,
        "wall_seconds": round(sum(s.get("wall_seconds", 0) for s in run.get("sessions", [])), 1),
        "grid": grid,
    }


def _f(x, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:g}"


def to_markdown(res: dict) -> str:
    lines = [
        f"# Benchmark ({res['mode']})",
        "",
        f"Command: `{res['command']}`  ",
        f"Model: `{res['model']}`; targets: {', '.join(res['targets'])}; {res['seeds']} seed(s); wall time "
        f"{res['wall_seconds']} s",
        "",
        f"_{res['note']}_",
        "",
        "| method | forgotten (goal 95%) | others kept (95%) | others named kept | siblings kept (90%) | text identical | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, s in res["methods"].items():
        cell = lambda k, s=s: f"{_f(s[k]['mean'])} ± {_f(s[k]['std'])} (n={s[k]['n']})"  # noqa: E731
        lines.append(f"| {m} | {cell('forgotten')} | {cell('others_kept')} | {cell('others_named_kept')} | "
                     f"{cell('siblings_kept')} | {_f(s['text_identical']['share'])} | {_f(s['steps_run']['mean'], False)} |")  # fmt: skip
    lines += ["", "Per target (mean over seeds):", "",
              "| method | target | forgotten | others kept | siblings kept (n images) | text identical |", "|---|---|---|---|---|---|"]  # fmt: skip
    for m, rows in res["per_target"].items():
        for t, r in rows.items():
            lines.append(f"| {m} | {t} | {_f(r['forgotten'])} | {_f(r['others_kept'])} | {_f(r['siblings_kept'])} "
                         f"({r['siblings_n']}) | {r['text_identical']} |")  # fmt: skip
    g = res["grid"]
    lines += ["", f"Grid: {g['done']} of {g['jobs']} jobs done" + (f"; missing: {', '.join(g['missing'][:8])}" if g["missing"] else "")]
    return "\n".join(lines) + "\n"
