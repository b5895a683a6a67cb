"""Where a warm forget request spends its time: the phase breakdown and the top functions (cProfile) of one
request on the embedded model, with the process's caches off and on, side by side in one run (issue 20).

    python scripts/profile_request.py --json runs/profile_request.json [--target Dravik] [--warmup Mirel]
        [--profile-target Quessa] [--steps 40] [--top 25] [--modes off,on] [--cold]
    python scripts/profile_request.py --app --json runs/profile_app.json [--warmup Mirel] [--target Tobbin]

``--app``: the app's click -> answers path instead (the service's Forget and the views, without Gradio; see
:func:`run_app`). ``--cold``: no warm-up request (the process's first request is the measured one).
Every measured request prints wall and CPU seconds (``time.process_time``) and the load average.

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

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("read", "base_answers", "images", "eval_before", "references", "null_space", "optimise", "eval_after")


def _request(vlm, images, target: str, steps: int, cache):
    from nscvf.method import UnlearnConfig, UnlearningChain

    chain = UnlearningChain(vlm, cache)
    t, c = time.time(), time.process_time()
    result = chain.forget(images, config=UnlearnConfig(steps=steps, evaluate="none"), target=target)
    wall, cpu = time.time() - t, time.process_time() - c
    state = chain.adapter_state()
    chain.close()
    return result, state, wall, cpu


def _top(prof: cProfile.Profile, n: int, sort: str) -> list[dict]:
    prof.create_stats()
    if not prof.stats:  # nothing was profiled
        return []
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
    if not args.cold:
        _request(vlm, warm_images, args.warmup, args.steps, results)
    load_before = os.getloadavg()
    result, state, wall, cpu = _request(vlm, images, args.target, args.steps, results)
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
        if args.profile_target:  # "" skips the profiled request (A/B timing runs)
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
        "cpu_seconds": round(cpu, 3),
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


# ------------------------------------------------------------------------------ the app's path


def _form(character: str, steps: int) -> dict:
    """The Forget form of an example (assets/examples/<character>: the app's example buttons' renders)."""
    from nscvf.method.config import UnlearnConfig

    d = {k: v["default"] for k, v in UnlearnConfig.fields_help().items()}
    files = sorted(str(q) for q in (ROOT / "assets" / "examples" / character.lower()).glob("*.png"))
    return {"files": files, "name": "", "method": "nscvf", "steps": steps, "lr": d["lr"], "lora_rank": d["lora_rank"],
            "energy": d["energy"], "tau": d["tau"], "retain_weight": d["retain_weight"], "evaluation": "none",
            "retain_files": None}  # fmt: skip


def _timed_parts(names: dict) -> tuple[dict, list]:
    """Wrap ``{label: (module, attribute)}`` to add each call's wall and CPU seconds to the returned dict."""
    spent: dict = {}
    undo = []
    for label, (mod, attr) in names.items():
        original = getattr(mod, attr)

        def wrapper(*a, _f=original, _label=label, **k):
            t, c = time.time(), time.process_time()
            try:
                return _f(*a, **k)
            finally:
                w, u = spent.get(_label, (0.0, 0.0))
                spent[_label] = (round(w + time.time() - t, 3), round(u + time.process_time() - c, 3))

        setattr(mod, attr, wrapper)
        undo.append((mod, attr, original))
    return spent, undo


def _app_click(rt, sid: str, character: str, steps: int) -> dict:
    """One click of an example in a new session, as the page runs it: the service's Forget, then the views."""
    from webapp.service import forget as service
    from webapp.service import jobs, showcase
    from webapp.views import forget as views

    parts = {"retained answers": (showcase, "retain_rows"), "plots": (jobs, "draw_figures"), "views": (views, "render")}
    spent, undo = _timed_parts(parts)
    try:
        load = os.getloadavg()
        t, c = time.time(), time.process_time()
        sess = rt.sessions.get(sid)
        out = service.forget(rt, sess, _form(character, steps))
        if out.record is None:
            raise SystemExit(f"the app's request on {character} stopped: {out.stopped}")
        status = views.forget_status(out.record, out.k)
        views.render(out.record, sess.records, status, views.gallery(out.record, out.request.images, out.request.paths))
        wall, cpu = time.time() - t, time.process_time() - c
    finally:
        for mod, attr, original in undo:
            setattr(mod, attr, original)
    r = out.record.result
    return {"character": character, "click_to_answers_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "load_avg_before": [round(v, 2) for v in load], "load_avg_after": [round(v, 2) for v in os.getloadavg()],
            "job_s": out.record.job_s, "plots_s": out.record.plots_s, "request_phases": _phase_table(r.timings),
            "steps_run": r.steps_run, "parts_wall_cpu_s": spent, "plot_method": out.record.figures.get("method")}  # fmt: skip


def run_app(vlm, args) -> dict:
    """The app's click -> answers path without Gradio (the service and the views on a private runtime with
    its own data dir, UMAP's worker warm): a first click on ``--warmup``'s example (the process's first
    request), then ``--target``'s from a new session (a warm new example), its engine request under cProfile (the
    retained answers, plots and views are timed apart)."""
    from webapp.state import runtime
    from webapp.state.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="nscvf-profile-app-"))
    settings = Settings(data_dir=tmp / "data", examples_dir=ROOT / "assets" / "examples", model_dir=ROOT / "assets" / "model")
    from nscvf.cache import Cache

    rt = runtime.local(settings, vlm, Cache(tmp / "data" / "cache"))
    rt.warmup.wait(300)  # as on a Space some minutes after start
    from nscvf.method import chain as engine

    run_request, prof = engine.run_request, cProfile.Profile()

    def profiled(*a, **k):  # the request runs in the job's own thread: profile it there (cProfile sees one)
        prof.enable()
        try:
            return run_request(*a, **k)
        finally:
            prof.disable()

    try:
        first = _app_click(rt, "first", args.warmup, args.steps)
        engine.run_request = profiled
        warm = _app_click(rt, "warm", args.target, args.steps)
    finally:
        engine.run_request = run_request
        shutil.rmtree(tmp, ignore_errors=True)
    warm["top_cumulative"], warm["top_own_time"] = _top(prof, args.top, "cumtime"), _top(prof, args.top, "tottime")
    for what, row in (("first click of the process", first), ("warm new example (profiled)", warm)):
        print(f"\n== app, {what}: {row['character']}: click -> answers {row['click_to_answers_s']:.2f} s "
              f"({row['cpu_s']:.2f} CPU s), {row['steps_run']} steps, load {row['load_avg_before']} -> {row['load_avg_after']}")  # fmt: skip
        for k, v in row["request_phases"].items():
            print(f"  request {k:<14}{v:8.3f} s")
        for k, (w, c) in row["parts_wall_cpu_s"].items():
            print(f"  {k:<22}{w:8.3f} s ({c:.3f} CPU s)")
    print("  top functions by cumulative time (the profiled click's engine request, in the job's thread):")
    for r in warm["top_cumulative"]:
        print(f"    {r['cumtime']:8.3f} s {r['calls']:>8}  {r['function']}")
    return {"first": first, "warm": warm}


def _forget_images(name: str):
    return world.forget_examples(name)  # the benchmark's 8 training renders of a target


def _print_mode(row: dict) -> None:
    print(f"\n== caches {row['mode']}: {row['wall_seconds']:.2f} s ({row['cpu_seconds']:.2f} CPU s), {row['steps_run']} steps "
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
    p.add_argument("--profile-target", default="Quessa", help="the profiled request's target (see above; '' for none)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--modes", default="off,on")
    p.add_argument("--cold", action="store_true", help="no warm-up request: the process's first request is measured")
    p.add_argument("--app", action="store_true", help="the app's click -> answers path (service and views) instead")
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
    for name in [n for n in (args.target, args.warmup, args.profile_target) if n]:
        try:
            get_character(name)  # a clear error for an unknown name before the model loads
        except InputError as e:
            p.error(str(e))
    vlm = load_model()
    if args.app:
        out = {"app": run_app(vlm, args), "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
        return
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
