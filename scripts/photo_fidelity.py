"""Fidelity benchmark of the photo model (issue 17): prints the numbers and writes JSON.

    python scripts/photo_fidelity.py [--model assets/photo_model] [--out assets/photo_model/fidelity.json]

Needs the build extra (scikit-image's photos): ``pip install -e ".[photo-build]"``. The held-out images and the
head's logits on them are those of ``nscvf train-base --photo`` (``runs/photo/heldout.pt``, made again if missing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nscvf import photo_features as pf
from nscvf.models import load_model
from nscvf.photo_fidelity import fidelity
from nscvf.source import PHOTO_MODEL_DIR


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(PHOTO_MODEL_DIR))
    p.add_argument("--out", default=str(PHOTO_MODEL_DIR / "fidelity.json"))
    p.add_argument("--features", default="runs/photo", help="where train-base --photo left the held-out logits")
    args = p.parse_args(argv)
    t0 = time.time()
    vlm = load_model(args.model, device="cpu")
    images, labels = pf.heldout_images()
    # The teacher: the head's logits computed at training time (runs/photo/heldout.pt), checked against the loaded
    # model's own tower on a few images; made here through that tower when missing.
    cached = Path(args.features) / "heldout.pt"
    if cached.exists() and pf.ImageSet.load(cached).labels == labels:
        ref = pf.ImageSet.load(cached)
        check = pf.encode(vlm.vision_tower(), vlm.processor.image_processor, images[::47], labels[::47])
        gap = float((check.logits.log_softmax(-1) - ref.logits[::47].log_softmax(-1)).abs().max())
        if gap > 1e-2:
            raise SystemExit(f"{cached} is not this model's teacher (log-probabilities differ by {gap:.3g}); delete it")
    else:
        ref = pf.encode(vlm.vision_tower(), vlm.processor.image_processor, images, labels)
    res = fidelity(vlm, images, labels, ref.logits, progress=lambda m: print(m, file=sys.stderr, flush=True))
    res["command"] = "python scripts/photo_fidelity.py --model " + args.model
    res["wall_seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({"summary": res["summary"], "groups": res["groups"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
