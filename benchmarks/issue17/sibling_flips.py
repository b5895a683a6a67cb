"""Which images a photo forget request changes (issue 17's siblings-kept and forgotten targets): for each target and
seed, the photo grid's request (``nscvf.bench.photo_run.forget``: the same forget images, UnlearnConfig's defaults),
then every sibling image whose answer changed and every target image still named, with the answers before and after.

    python benchmarks/issue17/sibling_flips.py --targets "a bottle" "a guitar" --seeds 0 1 2 [--out runs/flips.json]
"""

from __future__ import annotations

import argparse
import json

from nscvf import photo_eval
from nscvf.bench import photo_run
from nscvf.bench.run import Worker
from nscvf.method.config import UnlearnConfig
from nscvf.method.photo_domain import PhotoDomain, named_concept
from nscvf.models import load_model
from nscvf.source import PHOTO_MODEL_DIR


def _settings(pairs: list[str]) -> dict:
    """``key=json`` pairs (``min_steps=8``) as a dict."""
    return {k: json.loads(v) for k, v in (a.split("=", 1) for a in pairs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=["a bottle", "a guitar", "a clock"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="runs/sibling_flips.json")
    p.add_argument("--set", nargs="*", default=[], help="UnlearnConfig changes, e.g. min_steps=8")
    p.add_argument("--domain", nargs="*", default=[], help="PhotoDomain changes, e.g. sibling_views=16")
    args = p.parse_args(argv)
    worker = Worker(load_model(str(PHOTO_MODEL_DIR), device="cpu"), None)
    ev = photo_run.evaluation_set(worker)
    domain = PhotoDomain(**_settings(args.domain))
    rows = []
    for target in args.targets:
        for seed in args.seeds:
            cfg = UnlearnConfig().replace(evaluate="none", seed=seed, **_settings(args.set))
            f = photo_run.forget(worker, cfg, target, seed, domain=domain)
            rep = photo_eval.forget_report(ev.before, f.after, f.held_before, f.held_after, target, {}, {})
            sib = set(rep["siblings"])
            answers = [(lab, b, a, named_concept(b)) for lab, b, a in zip(ev.labels, ev.before, f.after)]
            other = [(lab, b, a) for lab, b, a, n in answers if n not in sib and n != target and a != b]
            row = {"target": target, "seed": seed, "seconds": f.seconds, "steps": f.result.steps_run,
                   **{k: rep[k] for k in ("forgotten", "others_kept", "siblings_kept", "siblings_n")},
                   "sibling_flips": [(lab, b, a) for lab, b, a, n in answers if n in sib and a != b],
                   "target_still_named": [(lab, a) for lab, _, a, n in answers if n == target and named_concept(a) == target],
                   "held_still_named": sum(named_concept(a) == target for a in f.held_after),
                   "other_flips": other[:40], "other_flips_n": len(other)}  # fmt: skip
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "other_flips"}), flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
