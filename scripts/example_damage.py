"""Which example character shows damage a person can see after a default Forget (issue 19 item 1): for each
candidate (its bundled example renders, as the app's example click gives them) and each variant of the
request, the outcome the app would show: the headline, the collateral-damage warnings (the same
:func:`nscvf.method.outcome.assess` the page calls, with the Retained table's rows from the same
:func:`webapp.service.showcase.retain_rows`), the target's held-out accuracy and the look-alike sibling's
quiz items before/after (quick evaluation).

    nice -n 10 python scripts/example_damage.py --targets Mirel,Tobbin --variants default,projector \
        --json runs/example_damage.json

Variants: ``default`` (the app's defaults), ``projector`` (LoRA on the projector only), ``neighbour16`` (16
extra retain renders of the sibling), ``known`` (the retained images' original features as negatives too).
The load average is printed beside every row (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from nscvf import world

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": ({}, {}),
    "projector": ({"modules": "projector"}, {}),
    "neighbour16": ({}, {"retain_per_neighbour": 16}),
    "known": ({"negatives": "known"}, {}),
}


def measure(vlm, target: str, variant: str) -> dict:
    from nscvf.images import load_image
    from nscvf.method import UnlearnConfig, UnlearningChain
    from nscvf.method.domain import WorldDomain
    from nscvf.method.outcome import assess
    from webapp.service.showcase import retain_rows

    changes, domain = VARIANTS[variant]
    c = world.get_character(target)
    images = [load_image(p) for p in sorted((ROOT / "assets" / "examples" / c.key).glob("*.png"))]
    chain = UnlearningChain(vlm, domain=WorldDomain(**domain))
    t0, load0 = time.time(), os.getloadavg()[0]
    result = chain.forget(images, config=UnlearnConfig(**changes), target=c.name).to_dict()
    rows = retain_rows(chain, c.name)
    outcome = assess(result, True, rows)
    by_b, by_a = result["eval_before"]["retain_by_character"], result["eval_after"]["retain_by_character"]
    per = {n: f"{by_b[n][0]}/{by_b[n][1]} -> {by_a[n][0]}/{by_a[n][1]}" for n in sorted(by_b) if by_b[n] != by_a.get(n)}
    out = {
        "target": c.name, "variant": variant, "sibling": c.neighbour, "headline": outcome.headline(),
        "warnings": outcome.warnings, "steps": result["steps_run"], "seconds": round(time.time() - t0, 1),
        "heldout_named": result["eval_after"]["summary"].get("target_name_acc_heldout"),
        "retain_acc": [result["eval_before"]["summary"]["retain_acc"], result["eval_after"]["summary"]["retain_acc"]],
        "changed_characters": per, "retained_rows_changed": sum(r[4] == "CHANGED" for r in rows),
        "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip
    chain.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="Mirel,Tobbin,Quessa,Dravik")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from nscvf.models import load_model

    vlm = load_model("world")
    rows = []
    for t in args.targets.split(","):
        for v in args.variants.split(","):
            rows.append(measure(vlm, t.strip(), v.strip()))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
