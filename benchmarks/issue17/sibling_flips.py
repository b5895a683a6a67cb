"""Which images a photo forget request changes (issue 17's siblings-kept and forgotten targets): for each target and
seed, the bench cell's request (the same forget images, UnlearnConfig's defaults), then every sibling image whose
answer changed and every target image still named, with the answers before and after.

    python benchmarks/issue17/sibling_flips.py --targets "a bottle" "a guitar" --seeds 0 1 2 [--out runs/flips.json]
"""

from __future__ import annotations

import argparse
import json
import time

from nscvf import photo_eval
from nscvf.method.chain import UnlearningChain
from nscvf.method.config import UnlearnConfig
from nscvf.method.photo_domain import PhotoDomain, named_concept
from nscvf.models import load_model
from nscvf.source import PHOTO_MODEL_DIR


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=["a bottle", "a guitar", "a clock"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="runs/sibling_flips.json")
    p.add_argument("--set", nargs="*", default=[], help="UnlearnConfig changes, e.g. min_steps=8")
    p.add_argument("--domain", nargs="*", default=[], help="PhotoDomain changes, e.g. sibling_retain_views=0")
    args = p.parse_args(argv)
    vlm = load_model(str(PHOTO_MODEL_DIR), device="cpu")
    labels, images, before = photo_eval.evaluation_set(vlm)
    changes = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)}
    domain = PhotoDomain(**{k: json.loads(v) for k, v in (a.split("=", 1) for a in args.domain)})
    rows = []
    for target in args.targets:
        for seed in args.seeds:
            forget, held = photo_eval.forget_and_heldout(target, labels, images, before, seed=seed, vlm=vlm)
            chain = UnlearningChain(vlm, domain=domain)
            t = time.time()
            r = chain.forget(forget, None, UnlearnConfig().replace(evaluate="none", seed=seed, **changes), target=target)
            after = photo_eval.ask_names(chain.vlm, images)
            held_after = photo_eval.ask_names(chain.vlm, held)
            rep = photo_eval.forget_report(before, after, photo_eval.ask_names(vlm, held), held_after, target, {}, {})
            chain.close()
            sib = set(rep["siblings"])
            flips = [(lab, b, a) for lab, b, a in zip(labels, before, after) if named_concept(b) in sib and a != b]
            kept_t = [
                (lab, a) for lab, b, a in zip(labels, before, after) if named_concept(b) == target and named_concept(a) == target
            ]
            other = [(lab, b, a) for lab, b, a in zip(labels, before, after)
                     if named_concept(b) not in sib and named_concept(b) != target and a != b]  # fmt: skip
            row = {"target": target, "seed": seed, "seconds": round(time.time() - t, 1), "steps": r.steps_run,
                   **{k: rep[k] for k in ("forgotten", "others_kept", "siblings_kept", "siblings_n")},
                   "sibling_flips": flips, "target_still_named": kept_t,
                   "held_still_named": sum(named_concept(a) == target for a in held_after),
                   "other_flips": other[:40], "other_flips_n": len(other)}  # fmt: skip
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "other_flips"}), flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
