"""The photo model's examples on the page (issue 17): 8 images of each example concept, and one held-out image
for "Ask both models", written under ``assets/photo_examples`` with an ``index.json`` that says what each is.

    python scripts/bundle_photo_examples.py [--model assets/photo_model] [--out assets/photo_examples]

The images are the ones ``scripts/photo_forget.py`` forgets and measures (:func:`nscvf.photo_eval.forget_and_heldout`):
crops of a bundled public-domain / CC0 photograph, or views of the Noto Color Emoji renders the base model names
as the concept. Needs the emoji font (Debian ``fonts-noto-color-emoji``) for the emoji examples.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from nscvf import photo_eval
from nscvf.method.photo_domain import named_concept
from nscvf.models import load_model
from nscvf.source import ASSETS_DIR, PHOTO_MODEL_DIR

# The examples, first the one a presenter clicks (forgotten 100%, others kept, scripts/photo_forget.py).
# (A taxi was tried: the base model names 1 of its 8 emoji views a taxi, so it is not an example.)
EXAMPLES = ["a cat", "an espresso", "a guitar", "a violin", "a tripod"]
PHOTO_SOURCES = {  # as scikit-image states them (assets/photos/README.md)
    "chelsea": "scikit-image `chelsea` (CC0, Stefan van der Walt)",
    "coffee": "scikit-image `coffee` (CC0, Rachel Michetti)",
    "camera": "scikit-image `camera` (CC0, Lav Varshney)",
}
EMOJI_SOURCE = "Noto Color Emoji (Google, SIL Open Font License 1.1), views drawn by nscvf.photo_images.view"


def slug(concept: str) -> str:
    return concept.split(" ", 1)[-1].replace(" ", "_")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(PHOTO_MODEL_DIR))
    p.add_argument("--out", default=str(ASSETS_DIR / "photo_examples"))
    args = p.parse_args(argv)
    vlm = load_model(args.model, device="cpu")
    labels, images = photo_eval.pool()
    before = photo_eval.ask_names(vlm, images)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "heldout").mkdir(parents=True)
    rows = []
    for concept in EXAMPLES:
        forget, held = photo_eval.forget_and_heldout(concept, labels, images, before, vlm=vlm)
        key = slug(concept)
        (out / key).mkdir()
        photo = photo_eval.PHOTO_TARGETS.get(concept)
        ext = ".jpg" if photo else ".png"  # photo crops as JPEG (small), emoji views lossless
        files = []
        for i, im in enumerate(forget):
            f = out / key / f"{i:02d}{ext}"
            im.save(f, quality=92) if photo else im.save(f)
            files.append(f"{key}/{f.name}")
        held[0].save(out / "heldout" / f"{key}{ext}", **({"quality": 92} if photo else {}))
        emoji = sorted({lab.split(":", 1)[1] for lab, a in zip(labels, before) if lab.startswith("emoji:") and named_concept(a) == concept})
        source = PHOTO_SOURCES[photo] if photo else f"{EMOJI_SOURCE}: {' '.join(f'U+{ord(c[0]):04X}' for c in emoji)}"
        named = photo_eval.ask_names(vlm, forget)
        rows.append({"concept": concept, "key": key, "files": files, "heldout": f"heldout/{key}{ext}", "source": source,
                     "base_named": sum(named_concept(a) == concept for a in named)})  # fmt: skip
        print(f"{concept}: {len(files)} images, named {rows[-1]['base_named']}/8 by the base model; {source}")
    (out / "index.json").write_text(json.dumps({"examples": rows, "command": "python scripts/bundle_photo_examples.py"},
                                               indent=1, ensure_ascii=False) + "\n")  # fmt: skip
    lines = ["# The photo model's examples", "", "Written by `python scripts/bundle_photo_examples.py`; each example is 8 "
             "images the page's Forget uses and one held-out image (`heldout/`) for Ask.", "",
             "| concept | images | source and licence |", "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {r['concept']} | {len(r['files'])} | {r['source']} |" for r in rows]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
