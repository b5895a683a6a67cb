"""The grid's backends measured on one small grid: local with 1 and 2 workers, and Ray (local, 2 CPUs).

Each configuration runs the same jobs (same seeds, 1 torch thread per job) into its own run folder; the script
reports the wall time, the jobs' own compute time, the model loads, the per-job overhead of the backend
((wall x parallel slots - compute) / jobs: pool or Ray start-up, imports, model loads, scheduling, idle
slots at the end) and whether every result file holds the same numbers (timings aside) in every folder.

    nice -n 10 python scripts/bench_grid.py --out runs/grid_scaling [--backends local1,local2,ray]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nscvf import bench  # noqa: E402
from nscvf.bench.grid import GridOptions, run_grid  # noqa: E402
from nscvf.bench.jobs import git_commit  # noqa: E402
from nscvf.bench.jobs import without_machine as numbers  # noqa: E402

CONFIGS = {
    "local1": GridOptions(backend="local", workers=1, threads=1),
    "local2": GridOptions(backend="local", workers=2, threads=1),
    "ray": GridOptions(backend="ray", num_cpus=1, threads=1),
}


def measure(name: str, settings, out: Path) -> dict:
    opts = CONFIGS[name]
    t = time.time()
    rep = run_grid(settings, out, opts, progress=lambda m: print(f"{name}: {m}", file=sys.stderr, flush=True))
    wall = time.time() - t
    recs = [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.json")) if not p.name.endswith(".error.json")]
    loads = sum(r["worker"]["load_seconds"] for r in recs)
    compute = sum(r["seconds"] for r in recs) - loads
    slots = opts.workers if opts.backend == "local" else 2
    return {
        "jobs": len(rep.ran),
        "failed": len(rep.failed),
        "wall_seconds": round(wall, 1),
        "job_compute_seconds": round(compute, 1),
        "model_load_seconds": round(loads, 1),
        "workers_seen": len({(r["worker"]["host"], r["worker"]["pid"]) for r in recs}),
        "slots": slots,
        "overhead_per_job_seconds": round((wall * slots - compute) / max(1, len(rep.ran)), 2),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/grid_scaling")
    ap.add_argument("--backends", default="local1,local2,ray")
    args = ap.parse_args()
    settings = bench.BenchSettings(
        targets=("Mirel", "Dravik"), methods=("nscvf", "ga"), steps=4, renders=1, seeds=2, relearn=False, continual_n=0
    )
    root = Path(args.out)
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} exists: pick a new --out (the measurement needs empty run folders)")
    res = {
        "command": "nice -n 10 python scripts/bench_grid.py " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "grid": "targets Mirel, Dravik x methods nscvf, ga x 2 seeds (+ base) = 9 jobs; 4 steps, 1 render, no relearning",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
    }
    for name in args.backends.split(","):
        res[name] = measure(name, settings, root / name)
        print(name, json.dumps(res[name]), flush=True)
    names = args.backends.split(",")
    files = {
        n: {p.name: json.loads(p.read_text())["result"] for p in (root / n / "jobs").glob("*.json") if ".error" not in p.name}
        for n in names
    }
    first = files[names[0]]
    res["identical_results"] = all(
        sorted(f) == sorted(first) and all(numbers(f[k]) == numbers(first[k]) for k in first) for f in files.values()
    )
    res["differing_files"] = sorted(
        {k for f in files.values() for k in first if k not in f or numbers(f[k]) != numbers(first[k])}
    )
    (root / "scaling.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
