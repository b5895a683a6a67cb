"""Write the app's example images: training renders of every named character of the embedded world.

    python scripts/make_examples.py [--out assets/examples] [--n 8]

One folder per character (``assets/examples/<key>/<key>_NN.png``, 128 px). The renders use the same
training seeds as ``nscvf forget --character`` (offset 100), so an example request in the app is the
CLI's request. ``assets/examples/heldout/<key>.png`` is one held-out render per character (a seed never
used in training), which the app puts in its "Ask both models" box.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nscvf import world

ROOT = Path(__file__).resolve().parent.parent
SEED_OFFSET = world.SEEDS["forget_example"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "assets" / "examples"))
    p.add_argument("--n", type=int, default=8, help="renders per character")
    args = p.parse_args(argv)
    out = Path(args.out)
    for c in world.CHARACTERS:
        d = out / c.key
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.png"):
            old.unlink()
        for i, seed in enumerate(world.train_seeds(args.n, SEED_OFFSET)):
            world.render(c, seed).save(d / f"{c.key}_{i + 1:02d}.png", optimize=True)
        held = out / "heldout"
        held.mkdir(parents=True, exist_ok=True)
        world.render(c, world.heldout_seeds(1, world.SEEDS["example_heldout"])[0]).save(held / f"{c.key}.png", optimize=True)
    print(f"wrote {args.n} renders x {len(world.CHARACTERS)} characters to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
