"""Where a warm forget request spends its time: the phase breakdown and the top functions (cProfile) of one
request on the embedded model, with the process's caches off and on, side by side in one run (issue 20).

    python scripts/profile_request.py --json runs/profile_request.json [--target Dravik] [--warmup Mirel]
        [--profile-target Quessa] [--steps 40] [--top 25] [--modes off,on]

Per mode: the process memo (``nscvf.cache.memo``: renders, image inputs, features, covariances and text
answers of a model state) is switched off or on and emptied, and the mode gets its own disk result cache in a
temporary folder, as the app has one (covariances, base answers). One warm-up request on ``--warmup`` warms
torch and both caches, then the measured request on ``--target`` runs timed. ``--warmup`` a different
character than ``--target`` is a new visitor's new example (nothing of it is on disk); the same character is
the same example clicked again by a new session (its covariances and base answers are on disk). A third
request, on ``--profile-target`` (a character neither asked about: a new example on the warm process), runs
under cProfile for the top functions (the profiler inflates its times; the phases come from the unprofiled
run). The adapter weights of the measured request are compared across modes: the memo must change nothing
but time. The machine may be shared: the load averages are printed and written next to every number; the
ratio total / optimise is the figure load moves least.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from nscvf import world

PHASES = ("read", "base_answers", "images", "eval_before", "references", "null_space", "optimise", "eval_after")


def _request(vlm, images, target: str, steps: int, cache):
    from nscvf.method import UnlearnConfig, UnlearningChain

    chain = UnlearningChain(vlm, cache)
    t = time.time()
    result = chain.forget(images, config=UnlearnConfig(steps=steps, evaluate="none"), target=target)
    wall = time.time() - t
    state = chain.adapter_state()
    chain.close()
    return result, state, wall


def _top(prof: cProfile.Profile, n: int, sort: str) -> list[dict]:
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({name})", "calls": calls, "tottime": round(tottime, 3),
                     "cumtime": round(cumtime, 3)})  # fmt: skip
    return sorted(rows, key=lambda r: -r[sort])[:n]


def _phase_table(timings: dict) -> dict:
    out = {p: timings[p] for p in PHASES if p in timings}
    out["other"] = round(timings["total"] - sum(out.values()), 3)
    out["total"] = timings["total"]
    return out


def run_mode(vlm, mode: str, images, args) -> tuple[dict, dict]:
    from nscvf import cache, world

    cache.memo.configure(enabled=mode == "on")
    cache.memo.clear()
    results = cache.Cache(tempfile.mkdtemp(prefix="nscvf-profile-"))  # the disk cache, as the app has one
    warm_images = images if args.warmup.lower() == args.target.lower() else _forget_images(args.warmup)
    _request(vlm, warm_images, args.warmup, args.steps, results)
    load_before = os.getloadavg()
    result, state, wall = _request(vlm, images, args.target, args.steps, results)
    load_after = os.getloadavg()
    # The same request under cProfile (its own timings are inflated by the profiler; the phases above are not).
    renders = {"n": 0}
    original = world.render

    def counting(*a, **k):
        renders["n"] += 1
        return original(*a, **k)

    prof = cProfile.Profile()
    world.render = counting
    try:
        prof.enable()
        _request(vlm, _forget_images(args.profile_target), args.profile_target, args.steps, results)
        prof.disable()
    finally:
        world.render = original
        shutil.rmtree(results.directory, ignore_errors=True)
    timings = result.timings
    row = {
        "mode": mode,
        "wall_seconds": round(wall, 3),
        "phases": _phase_table(timings),
        "total_over_optimise": round(timings["total"] / timings["optimise"], 3),
        "steps_run": result.steps_run,
        "seconds_per_step": timings.get("seconds_per_step"),
        "stopped_early": result.stopped_early,
        "retain_drift": result.retain_drift["mean"],
        "world_render_calls_profiled": renders["n"],
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in load_after],
        "top_cumulative": _top(prof, args.top, "cumtime"),
        "top_own_time": _top(prof, args.top, "tottime"),
        "memo": cache.memo.stats(),
    }
    return row, state


def _forget_images(name: str):
    return world.forget_examples(name)  # the benchmark's 8 training renders of a target


def _print_mode(row: dict) -> None:
    print(f"\n== caches {row['mode']}: {row['wall_seconds']:.2f} s, {row['steps_run']} steps "
          f"({row['seconds_per_step']} s/step), total/optimise {row['total_over_optimise']}, "
          f"load {row['load_avg_before']} -> {row['load_avg_after']}")  # fmt: skip
    for k, v in row["phases"].items():
        print(f"  {k:<14}{v:8.3f} s")
    print(f"  world.render calls (profiled run): {row['world_render_calls_profiled']}")
    print("  top functions by cumulative time (profiled run):")
    for r in row["top_cumulative"]:
        print(f"    {r['cumtime']:8.3f} s {r['calls']:>8}  {r['function']}")
    print("  top functions by own time:")
    for r in row["top_own_time"][:12]:
        print(f"    {r['tottime']:8.3f} s {r['calls']:>8}  {r['function']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="runs/profile_request.json")
    p.add_argument("--target", default="Dravik")
    p.add_argument("--warmup", default="Mirel", help="the warm-up request's target (the same as --target: a repeat)")
    p.add_argument("--profile-target", default="Quessa", help="the profiled request's target (see above)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--modes", default="off,on")
    args = p.parse_args()

    import torch

    from nscvf.errors import InputError
    from nscvf.models import load_model
    from nscvf.world import get_character

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"off", "on"}:
        p.error("--modes: a comma-separated list of off and on")
    if args.steps < 1:
        p.error("--steps: at least 1")
    for name in (args.target, args.warmup, args.profile_target):
        try:
            get_character(name)  # a clear error for an unknown name before the model loads
        except InputError as e:
            p.error(str(e))
    vlm = load_model()
    images = _forget_images(args.target)
    rows, states = [], {}
    for mode in modes:
        row, states[mode] = run_mode(vlm, mode, images, args)
        rows.append(row)
        _print_mode(row)
    out = {
        "target": args.target,
        "warmup": args.warmup,
        "profile_target": args.profile_target,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "modes": rows,
    }
    if len(states) == 2:
        a, b = states.values()
        out["adapter_weights_identical"] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        out["speedup_total"] = round(rows[0]["phases"]["total"] / rows[1]["phases"]["total"], 3)
        print(f"\nadapter weights identical across modes: {out['adapter_weights_identical']}; "
              f"total {rows[0]['phases']['total']:.2f} s -> {rows[1]['phases']['total']:.2f} s ({out['speedup_total']}x)")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
