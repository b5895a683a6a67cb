"""Images per pass through the photo model's frozen tower prefix (issue 17: teach and forget speed on 2 cores).

    python benchmarks/issue17/prefix_batch.py [--json runs/prefix_batch.json] [--images 64] [--repeats 3]

Runs ``--images`` random 224 px images through the frozen prefix (the stem and the blocks no LoRA reaches) of
``assets/photo_model``'s tower in passes of 1, 2, 4, 8, 16 and all the images, at torch's thread count, and
prints the median milliseconds per image of ``--repeats`` runs, the load average, and whether every setting's
output is bit-identical to one pass of all the images (the setting must change nothing but time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from nscvf.models import efficientnet, load_model
from nscvf.source import PHOTO_MODEL_DIR


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    tower = load_model(str(PHOTO_MODEL_DIR)).model.model.vision_tower
    x = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows, ref = [], None
    with torch.no_grad():
        for size in (args.images, 1, 2, 4, 8, 16):
            efficientnet.PREFIX_BATCH = size
            tower._prefix(x[: min(size, 4)])  # first-call warm-up at this shape
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = tower._prefix(x)
                times.append(time.perf_counter() - t)
            ref = out if ref is None else ref
            row = {"images_per_pass": size, "ms_per_image": round(1000 * statistics.median(times) / args.images, 1),
                   "identical_to_one_pass": bool(torch.equal(out, ref)), "load": round(os.getloadavg()[0], 2)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"threads": torch.get_num_threads(), "images": args.images, "repeats": args.repeats, "rows": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
