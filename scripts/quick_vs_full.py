"""Did the quick mode's stated error bounds hold? The quick benchmark (4 gold targets) states, per method and
number, how far its mean over 4 targets may be from the mean over all 24 (``quick_vs_full`` in BENCHMARKS.json:
2 standard errors of a mean of 4 targets drawn from 24, from the spread across its targets). The full run
measures the 24-target mean; this compares the two, and checks that the full run's cells on the quick targets
reproduce the committed quick run's (same seeds, same images: the same numbers when the model and engine did
not change).

    python scripts/quick_vs_full.py [--full benchmarks/full] [--quick BENCHMARKS.json] [--json OUT] [--md OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from nscvf.bench.jobs import assemble

KEYS = ("forget_acc_heldout", "retain_acc", "neighbour_retain_acc")


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def compare(full: dict, quick: dict) -> dict:
    """Per method and number: the committed quick mean, the full mean, their difference and the stated bound."""
    qt = set(quick["targets"])
    rows, same, differ = [], 0, []
    for m, full_rows in full["per_target"].items():
        quick_rows = quick["per_target"].get(m)
        bounds = (quick.get("quick_vs_full") or {}).get(m) or {}
        if not quick_rows:
            continue
        for key in KEYS:
            q, f = _mean(quick_rows, key), _mean(full_rows, key)
            sub = _mean([r for r in full_rows if r["target"] in qt], key)
            b = bounds.get(key)
            held = None if q is None or f is None or b is None else abs(q - f) <= b + 1e-9
            rows.append({"method": m, "number": key, "quick": q, "full_on_quick_targets": sub, "full": f,
                         "difference": None if q is None or f is None else round(q - f, 4), "bound": b, "held": held})  # fmt: skip
        by_cell = {(r["target"], r.get("seed", 0)): r for r in full_rows}
        for r in quick_rows:
            other = by_cell.get((r["target"], r.get("seed", 0)))
            if other is None:
                continue
            if all(other.get(k) == r.get(k) for k in KEYS):
                same += 1
            else:
                differ.append(f"{m}/{r['target']}/s{r.get('seed', 0)}")
    judged = [r for r in rows if r["held"] is not None]
    return {"rows": rows, "held": sum(r["held"] for r in judged), "judged": len(judged),
            "quick_cells_reproduced": same, "quick_cells_differing": differ,
            "full_targets": len(full["targets"]), "quick_targets": sorted(qt)}  # fmt: skip


def markdown(out: dict) -> str:
    lines = [f"| method | number | quick (4 targets, committed) | full on the same 4 | full ({out['full_targets']} targets) "
             "| quick - full | stated bound | held |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    f = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    for r in out["rows"]:
        held = "-" if r["held"] is None else ("yes" if r["held"] else "**no**")
        lines.append(f"| {r['method']} | {r['number']} | {f(r['quick'])} | {f(r['full_on_quick_targets'])} | {f(r['full'])} "
                     f"| {f(r['difference'])} | {f(r['bound'])} | {held} |")  # fmt: skip
    lines.append("")
    lines.append(f"Held: {out['held']} of {out['judged']}. The full run's cells on the quick targets reproduce the committed "
                 f"quick run's numbers in {out['quick_cells_reproduced']} cells, differ in {len(out['quick_cells_differing'])}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", default="benchmarks/full")
    p.add_argument("--quick", default="BENCHMARKS.json")
    p.add_argument("--json")
    p.add_argument("--md")
    args = p.parse_args(argv)
    out = compare(assemble(args.full), json.loads(Path(args.quick).read_text()))
    md = markdown(out)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
