"""Compare the two checkouts' bench result files (numbers, not timings): issue 20, BENCHMARKS.md."""
import json

TIME = {"seconds", "seconds_per_step", "projection_seconds", "seconds_warm", "cache", "peak_rss_mb"}
for name in ("base.json", "cell-nscvf-Mirel-s0.json"):
    a = json.load(open(f"/tmp/ab/cell_main/jobs/{name}"))["result"]
    b = json.load(open(f"/tmp/ab/cell_fast/jobs/{name}"))["result"]
    keys = sorted(set(a) | set(b))
    diff = [k for k in keys if k not in TIME and a.get(k) != b.get(k)]
    same = [k for k in keys if k not in TIME and a.get(k) == b.get(k)]
    print(name, "differing:", diff, "| identical fields:", len(same), "| seconds", a.get("seconds"), b.get("seconds"))
