"""Forget targets of the photo model (issue 17): forget a concept from 8 images, measure what went and what stayed.

    python scripts/photo_forget.py [--model assets/photo_model] [--out runs/photo_forget.json] [--targets ...]

For each target, a fresh chain on the base model forgets it from 8 images with the default request (crops of a
bundled photograph, or views of the concept's emoji renders), then :mod:`nscvf.photo_eval` measures held-out
views and the concept's other images (not named: >= 95%), the other concepts' images (answers kept: >= 95%),
its look-alike siblings' (>= 90%) and the text answers (bit-identical). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nscvf import photo_eval, photo_images
from nscvf.method import UnlearningChain
from nscvf.method.photo_domain import bundled
from nscvf.models import load_model
from nscvf.source import PHOTO_MODEL_DIR


def _emoji_of(label: str) -> str | None:
    """The emoji of an evaluation-set label ("emoji:X" or "view:emoji:X:k"), else None."""
    parts = label.split(":")
    if parts[0] == "emoji":
        return parts[1]
    return parts[2] if parts[0] == "view" and len(parts) > 2 and parts[1] == "emoji" else None


def teach_row(vlm, photo: str, labels, images, name: str = "Zorblat") -> dict:
    """Teach ``name`` on 8 crops of a bundled photo; held-out crops of it named (>= 90%), crops of the other
    bundled photos and the pool's other images called by it (<= 5%)."""
    ims = {f[len("photo_") : -len(".jpg")]: im for _, f, im in bundled() if f.startswith("photo_")}
    chain = UnlearningChain(vlm)
    t1 = time.time()
    chain.teach(photo_images.crops(ims[photo], 8, seed=1), name)
    seconds = round(time.time() - t1, 1)
    taught = chain.model_at(len(chain))
    held = photo_eval.ask_names(taught, photo_images.crops(ims[photo], 8, seed=99))
    rest = [(lab, im) for lab, im in zip(labels, images) if not lab.startswith(f"crop:{photo}:")]
    others = [im for _, im in rest]
    held_emoji = {ch for ch, _ in photo_images.emoji_split("heldout")}  # never among teaching's images to keep
    unseen = [_emoji_of(lab) in held_emoji for lab, _ in rest]
    crops = [(p, c) for p, im in ims.items() if p != photo for c in photo_images.crops(im, 6, seed=99)]
    other_names, other_photos = [p for p, _ in crops], [c for _, c in crops]
    called = photo_eval.ask_names(taught, other_photos + others)
    chain.close()
    named = [name.lower() in a.lower() for a in called]
    row = {"photo": photo, "name": name, "teach_seconds": seconds,
           "heldout_named": round(sum(name.lower() in a.lower() for a in held) / len(held), 4), "heldout_n": len(held),
           "other_photo_crops_called": round(sum(named[: len(other_photos)]) / len(other_photos), 4),
           "other_photo_crops_n": len(other_photos),
           "other_photo_crops_called_by_photo": {p: sum(c for q, c in zip(other_names, named) if q == p) for p in ims if p != photo},
           "other_images_called": round(sum(named[len(other_photos) :]) / max(1, len(others)), 4),
           "other_images_n": len(others),
           "heldout_emoji_called": round(sum(n for n, u in zip(named[len(other_photos) :], unseen) if u) / max(1, sum(unseen)), 4),
           "heldout_emoji_n": sum(unseen), "targets": {"heldout_named": 0.9, "other_photo_crops_called": 0.05}}  # fmt: skip
    print(json.dumps({k: v for k, v in row.items() if k != "targets"}), flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(PHOTO_MODEL_DIR))
    p.add_argument("--out", default="runs/photo_forget.json")
    p.add_argument("--targets", nargs="*", default=[*photo_eval.PHOTO_TARGETS, *photo_eval.EMOJI_TARGETS])
    p.add_argument(
        "--teach",
        nargs="*",
        default=["rocket", "astronaut", "chelsea"],
        help="bundled photos to teach a new name on (8 crops each), then measure the name's reach",
    )
    args = p.parse_args(argv)
    t0 = time.time()
    vlm = load_model(args.model, device="cpu")
    labels, images, before = photo_eval.evaluation_set(vlm)
    teach_rows = [teach_row(vlm, photo, labels, images) for photo in args.teach]
    text_before = photo_eval.text_answers(vlm)
    rows = []
    for target in args.targets:
        forget, held = photo_eval.forget_and_heldout(target, labels, images, before, vlm=vlm)
        chain = UnlearningChain(vlm)
        t1 = time.time()
        result = chain.forget(forget, progress=lambda m, *a, t=target: print(f"  {t}: {m} {a}", file=sys.stderr, flush=True))
        seconds = round(time.time() - t1, 1)
        after_vlm = chain.model_at(len(chain))
        row = photo_eval.forget_report(
            before, photo_eval.ask_names(after_vlm, images),
            photo_eval.ask_names(chain.model_at(0), held), photo_eval.ask_names(after_vlm, held),
            result.target or target, text_before, photo_eval.text_answers(after_vlm),
        )  # fmt: skip
        row.update(request_seconds=seconds, steps=result.steps_run, resolved_target=result.target, timings=result.timings)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("target", "forgotten", "others_kept", "siblings_kept", "siblings_n",
                                              "text_identical", "request_seconds")}), flush=True)  # fmt: skip
        chain.close()
    out = {"command": "python scripts/photo_forget.py " + " ".join(argv or sys.argv[1:]), "pool_n": len(images),
           "teach": teach_rows,
           "pool": dict(zip(labels, before)),
           "rows": rows, "wall_seconds": round(time.time() - t0, 1)}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("| target | forgotten | others kept | siblings kept (n) | text identical | s |")
    for r in rows:
        print(f"| {r['target']} | {r['forgotten']} | {r['others_kept']} | {r['siblings_kept']} ({r['siblings_n']}) "
              f"| {r['text_identical']} | {r['request_seconds']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
