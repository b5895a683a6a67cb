"""Null-space overhead per optimisation step, and seconds per request (cold and warm cache), on an idle
machine: nscvf and cvf (the same loss without the null space) alternate on the same target with a fixed
number of steps (early stopping off), through the engine the app and the CLI use.

    python scripts/bench_overhead.py --json runs/overhead.json [--target Mirel] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nscvf import world
from nscvf.cache import Cache
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True)
    p.add_argument("--target", default="Mirel")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    vlm = load_model()
    images = world.forget_examples(args.target)  # the benchmark's forget images (seed 0)
    per_step: dict[str, list[float]] = {"nscvf": [], "cvf": []}
    projection: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(d)
        for i in range(args.repeats):
            for m in ("nscvf", "cvf"):
                cfg = UnlearnConfig(method=m, steps=args.steps, stop_when_forgotten=False, evaluate="none")
                r = UnlearningChain(vlm, cache).forget(images, config=cfg, target=args.target)
                per_step[m].append(r.timings["seconds_per_step"])
                if m == "nscvf":
                    projection.append(r.timings["projection"] / r.steps_run)
                print(f"repeat {i + 1} {m}: {r.timings['seconds_per_step']:.4f} s/step", flush=True)
        # Seconds per request with the defaults (early stopping on): cold cache, then the same request warm.
        requests = {}
        with tempfile.TemporaryDirectory() as d2:
            c2 = Cache(d2)
            for label in ("cold", "warm"):
                t = time.time()
                r = UnlearningChain(vlm, c2).forget(images, config=UnlearnConfig(evaluate="none"), target=args.target)
                requests[label] = {"seconds": round(time.time() - t, 2), "steps_run": r.steps_run, "cache": r.cache}
                print(f"request ({label} cache): {requests[label]['seconds']} s, {r.steps_run} steps", flush=True)
    med = {m: statistics.median(v) for m, v in per_step.items()}
    out = {
        "target": args.target,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "seconds_per_step": per_step,
        "median_seconds_per_step": med,
        "overhead_per_step": round(med["nscvf"] / med["cvf"] - 1, 4),
        "projection_seconds_per_step": round(statistics.median(projection), 5),
        "requests": requests,
    }
    print(json.dumps({k: out[k] for k in ("median_seconds_per_step", "overhead_per_step", "projection_seconds_per_step")}))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
