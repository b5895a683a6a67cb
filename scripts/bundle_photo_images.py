"""Bundle the photo model's example and retain images, ``assets/photo_model/images`` (issue 17; deterministic).

Up to 3 emoji renders per concept that the encoder's ImageNet head places confidently (p >= 0.5, the
concept's classes summed), and scikit-image's public-domain / CC0 photos with their attribution. Reads the head's logits
that ``nscvf train-base --photo`` computed (``runs/photo/{train,heldout}.pt``). Needs the [photo-build] extra.

    python scripts/bundle_photo_images.py
"""

from __future__ import annotations

import json
import shutil

import torch

from nscvf import photo_features as pf
from nscvf import photo_images as pi
from nscvf.concepts import table
from nscvf.method.photo_domain import IMAGES_DIR

PER_CONCEPT = 3
PHOTOS = {  # scikit-image's notes on each photo
    "chelsea": "scikit-image data.chelsea: CC0, photographer Stefan van der Walt",
    "coffee": "scikit-image data.coffee: CC0, photographer Rachel Michetti",
    "camera": "scikit-image data.camera: CC0, photographer Lav Varshney",
    "rocket": "scikit-image data.rocket: SpaceX, released into the public domain",
    "astronaut": "scikit-image data.astronaut: NASA (Eileen Collins), public domain",
}


def main() -> None:
    emoji = dict(pi.emoji())
    rows, per = [], {}
    if IMAGES_DIR.exists():
        shutil.rmtree(IMAGES_DIR)
    IMAGES_DIR.mkdir(parents=True)
    for split in ("train", "heldout"):
        s = pf.ImageSet.load(f"runs/photo/{split}.pt")
        for label, lg in zip(s.labels, s.logits):
            kind, _, what = label.partition(":")
            p = lg.softmax(-1)
            best, c = max((float(p[list(c.classes)].sum()), c.name) for c in table().concepts)
            concept = c if best >= 0.5 else None
            if kind == "emoji" and concept and per.get(concept, 0) < PER_CONCEPT:
                per[concept] = per.get(concept, 0) + 1
                f = f"emoji_{ord(what):x}.png"
                emoji[what].save(IMAGES_DIR / f)
                rows.append({"file": f, "concept": concept, "source": f"Noto Color Emoji U+{ord(what):X} (SIL OFL 1.1), "
                             "rendered with PIL", "split": split, "concept_p": round(best, 3)})  # fmt: skip
            if kind == "photo" and what in PHOTOS:
                f = f"photo_{what}.jpg"
                im = pi.real_photos()[what]
                im.thumbnail((320, 320))
                im.save(IMAGES_DIR / f, quality=88)
                rows.append({"file": f, "concept": concept, "source": PHOTOS[what], "split": split,
                             "concept_p": round(best, 3)})  # fmt: skip
    rows.sort(key=lambda r: r["file"])
    (IMAGES_DIR / "index.json").write_text(json.dumps({"images": rows}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(rows)} images, {len(per)} concepts -> {IMAGES_DIR}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
