"""Issue 20's A/B helpers (see BENCHMARKS.md, request time, session 7): run from a shell, not imported."""

import json
import os

D = "/work/wt-fast/runs/ab"


def lib_row(m):
    ph = m["modes"][0]["phases"]
    r = m["modes"][0]
    return (r["wall_seconds"], r["cpu_seconds"], r["total_over_optimise"], r["steps_run"], r["load_avg_before"][0],
            "opt", ph["optimise"], "nonopt", round(ph["total"] - ph["optimise"], 2), "ns", ph["null_space"],
            "ev", ph["eval_after"], "refs", ph["references"])


def app_row(d):
    return (round(d["serving_s"], 1), d["serving_cpu_s"], "| cold", round(d["example_request_s"], 2), d["example_request_cpu_s"],
            d["example_load_avg"][0], "| warm", round(d["warm_new_example_s"], 2), d["warm_new_example_cpu_s"],
            d["warm_load_avg"][0], "| rep", round(d["repeat_s"], 2), "| restart", round(d["serving_after_restart_s"], 1),
            "|", d["example_job_line"], "|", d["steps_run"])


for kind, row in (("lib", lib_row), ("lib1t", lib_row), ("app", app_row)):
    print(kind.upper())
    for i in range(1, 6):
        for side in ("main", "fast"):
            f = f"{D}/{kind}_{side}_{i}.json"
            if os.path.exists(f):
                print(i, side, *row(json.load(open(f))))
