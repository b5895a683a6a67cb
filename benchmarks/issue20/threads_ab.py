"""One torch thread or torch's own count (one per core) for a model's calls, A/B in one warm process (issue 20).

    python benchmarks/issue20/threads_ab.py --json runs/threads_ab.json [--model world|photo] [--targets ...]

A warm-up request (the first target) runs first; then each further target is asked twice from a fresh chain,
alternating which setting goes first: once with every call on the model at one thread, once at torch's own
count (``SharedBase.threads``, which :attr:`nscvf.method.domain.Domain.cpu_threads` sets). A target's second
request finds its covariance chunks in the memo, so the pairs compare seconds per step and CPU seconds; the
null space is compared only on the first of each pair. Prints a line per request with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from nscvf import cache
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.method.shared import SharedBase
from nscvf.models import load_model


def _images(model: str, vlm, name: str):
    if model == "world":
        from nscvf import world

        return world.forget_examples(name), name
    from nscvf import photo_eval

    labels, images, before = photo_eval.evaluation_set(vlm)
    return photo_eval.forget_and_heldout(name, labels, images, before)[0], None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True)
    p.add_argument("--model", choices=("world", "photo"), default="world")
    p.add_argument("--targets", nargs="+", default=None, help="the first is the warm-up request's")
    args = p.parse_args()
    targets = args.targets or (["Mirel", "Dravik", "Wrenna", "Kestrin"] if args.model == "world" else ["an espresso", "a cat", "a tripod"])
    if args.model == "world":
        vlm = load_model()
    else:
        from nscvf.source import PHOTO_MODEL_DIR

        vlm = load_model(str(PHOTO_MODEL_DIR), device="cpu")
    shared, results, rows = SharedBase.of(vlm), cache.Cache(tempfile.mkdtemp(prefix="nscvf-threads-")), []
    default = torch.get_num_threads()

    def request(name: str, threads: int | None, role: str) -> None:
        shared.threads = threads
        images, target = _images(args.model, vlm, name)
        chain = UnlearningChain(vlm, results)
        load = os.getloadavg()[0]
        t, c = time.time(), time.process_time()
        r = chain.forget(images, config=UnlearnConfig(evaluate="none"), target=target)
        wall, cpu = time.time() - t, time.process_time() - c
        chain.close()
        tm = r.timings
        row = {"target": name, "role": role, "threads": threads or default, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
               "steps": r.steps_run, "seconds_per_step": tm["seconds_per_step"], "optimise": tm["optimise"],
               "null_space": tm.get("null_space"), "references": tm["references"], "eval_after": tm["eval_after"],
               "total_over_optimise": round(tm["total"] / tm["optimise"], 3), "load_1min": round(load, 2)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)

    request(targets[0], None, "warm-up")
    for i, name in enumerate(targets[1:]):
        order = (1, None) if i % 2 == 0 else (None, 1)
        for j, threads in enumerate(order):
            request(name, threads, "first" if j == 0 else "second")
    pairs = [r for r in rows if r["role"] != "warm-up"]
    one = [r["seconds_per_step"] for r in pairs if r["threads"] == 1]
    own = [r["seconds_per_step"] for r in pairs if r["threads"] == default]
    summary = {"model": args.model, "torch_default_threads": default, "cpus": os.cpu_count(),
               "seconds_per_step_one_thread": one, "seconds_per_step_default": own,
               "one_thread_faster_in": sum(a < b for a, b in zip(one, own)), "pairs": len(one)}  # fmt: skip
    print(json.dumps(summary))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
