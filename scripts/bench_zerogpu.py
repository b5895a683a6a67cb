"""Seconds a call adds when every GPU job runs in a fresh process (the ZeroGPU shape: nscvf.zerogpu's jobs
through ProcessPerCall, spawn), against the same work in this process, on the embedded model.

Per kind of call, each repeated ``--repeats`` times on the same session state:
- ask: the base model's and the chain's answer to one question (short: almost all of it is overhead);
- forget: one request with ``--steps`` steps (early stopping and evaluation off, a cold cache each time).
Three paths: ``direct`` (the engine's own calls on the session's chain), ``job`` (the job function in this
process: the chain rebuilt from its state, what a CPU Space or a dedicated GPU run) and ``process`` (one
spawned process per call). ``added_s`` = process - direct, and job - direct.

    python scripts/bench_zerogpu.py --json runs/zerogpu_overhead.json [--repeats 2] [--steps 4]

On a real ZeroGPU worker the process is forked with the weights already loaded, so the spawn path's
imports and model load are an upper bound of what ZeroGPU adds; its own scheduling is not measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    # As app.py: idle OpenMP threads sleep (spinning ones made the main thread's steps several times slower on
    # a loaded 2-core machine); the spawned processes inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import torch

    from nscvf import world, zerogpu
    from nscvf.cache import Cache
    from nscvf.method import UnlearnConfig, UnlearningChain
    from nscvf.models import load_model

    vlm = load_model()
    zerogpu.register_base(vlm)
    c = world.get_character("Mirel")
    images = [world.render(c, s) for s in world.train_seeds(4, world.SEEDS["forget_example"])]
    question_image = world.render(world.get_character("Dravik"), 5)
    cfg = UnlearnConfig(steps=args.steps, evaluate="none", stop_when_forgotten=False)
    gpu = zerogpu.ProcessPerCall()
    times: dict[str, dict[str, list[float]]] = {k: {"direct": [], "job": [], "process": []} for k in ("ask", "forget")}
    startup: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        sess = UnlearningChain(vlm, Cache(Path(d) / "session"))
        sess.forget(images, None, cfg)  # one request in the session: every call rebuilds it
        state = zerogpu.chain_state(sess)
        ask = zerogpu.AskJob("Who is this?", question_image)
        for i in range(args.repeats):
            t = time.time()
            sess.base_vlm.generate([ask.question], [question_image], max_new_tokens=24)
            sess.vlm.generate([ask.question], [question_image], max_new_tokens=24)
            times["ask"]["direct"].append(time.time() - t)
            for path, g in (("job", None), ("process", gpu)):
                t = time.time()
                zerogpu.run("ask", state, ask, gpu=g)
                times["ask"][path].append(time.time() - t)
            for path in ("direct", "job", "process"):
                job = zerogpu.ForgetJob(tuple(images), cfg.replace(seed=100 + i))
                state_i = dataclasses.replace(state, cache_dir=str(Path(d) / f"{path}{i}"))
                t = time.time()
                if path == "direct":
                    other = UnlearningChain(vlm, Cache(Path(d) / f"{path}{i}"))
                    for s in sess.steps:
                        other.restore(s.result, s.adapter_state, s.protect_images)
                    t = time.time()  # the session's own chain exists already: only the request counts
                    other.forget(list(job.images), None, job.config)
                    times["forget"][path].append(time.time() - t)
                    other.close()
                else:
                    zerogpu.run("forget", state_i, job, gpu=gpu if path == "process" else None)
                    times["forget"][path].append(time.time() - t)
            startup += [x["first_item_s"] for x in gpu.calls[-2:] if x.get("first_item_s") is not None]

    def med(v):
        return round(statistics.median(v), 3)

    summary = {
        kind: {
            **{f"{path}_s": med(v) for path, v in paths.items()},
            "added_s_process": round(med(paths["process"]) - med(paths["direct"]), 3),
            "added_s_job": round(med(paths["job"]) - med(paths["direct"]), 3),
        }
        for kind, paths in times.items()
    }
    out = {
        "what": "seconds per call: direct (engine in this process), job (nscvf.zerogpu job in this process), "
        "process (one spawned process per call, ProcessPerCall); added = path - direct",
        "model": vlm.source,
        "steps": args.steps,
        "repeats": args.repeats,
        "summary": summary,
        "process_first_item_s_median": med(startup) if startup else None,
        "raw": {k: {p: [round(x, 3) for x in v] for p, v in paths.items()} for k, paths in times.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },  # fmt: skip
    }
    for kind, s in summary.items():
        print(f"{kind:7s} direct {s['direct_s']:7.2f} s  job {s['job_s']:7.2f} s  process {s['process_s']:7.2f} s  "
              f"-> added per call: process {s['added_s_process']:+.2f} s, job {s['added_s_job']:+.2f} s")  # fmt: skip
    print(f"process start-up to its first reply (median): {out['process_first_item_s_median']} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
