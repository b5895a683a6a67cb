"""Ship teaching's hard-negative candidates with the photo model: the emoji renders of its training split tiled
into ``assets/photo_model/negatives.png`` (lossless; the characters in ``negatives.json``), so that a machine
without the emoji font (a Space, the Docker image, CI) keeps the same images when a name is taught (issue 17).
Needs ``apt-get install -y fonts-noto-color-emoji``; deterministic.

    python scripts/bundle_photo_negatives.py
"""

from __future__ import annotations

import json

from nscvf import photo_images
from nscvf.method.photo_domain import NEGATIVES


def main() -> None:
    items = photo_images.emoji_split("train")
    index = photo_images.write_sheet(items, NEGATIVES)
    index["source"] = ("Noto Color Emoji (Google; SIL Open Font License 1.1; Debian fonts-noto-color-emoji), rendered "
                       "with PIL by nscvf.photo_images.emoji: the training split (every emoji but each fifth)")  # fmt: skip
    index["command"] = "python scripts/bundle_photo_negatives.py"
    NEGATIVES.with_suffix(".json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    back = photo_images.read_sheet(NEGATIVES, index)
    same = all(a.tobytes() == b.tobytes() for (_, a), (_, b) in zip(items, back))
    print(f"{len(items)} renders -> {NEGATIVES} ({NEGATIVES.stat().st_size / 1e6:.2f} MB); read back identical: {same}")
    if not same:
        raise SystemExit("the sheet does not read back the renders pixel for pixel")


if __name__ == "__main__":
    main()
