"""Ship teaching's hard-negative candidates with the photo model: the emoji renders of its training split tiled
into ``assets/photo_model/negatives.png`` (lossless; the characters in ``negatives.json``), so that a machine
without the emoji font (a Space, the Docker image, CI) keeps the same images when a name is taught (issue 17);
and the base model's pooled features of them (``negatives.npz``, with the memo key they were made under), so that
a process's first teach does not spend ~10 s computing them. Needs ``apt-get install -y fonts-noto-color-emoji``;
deterministic (the features up to the last bits of the machine's float arithmetic).

    python scripts/bundle_photo_negatives.py
"""

from __future__ import annotations

import json

import numpy as np
import torch

from nscvf import photo_images
from nscvf.method import UnlearningChain
from nscvf.method.photo_domain import NEGATIVES, PhotoDomain
from nscvf.method.teach import negatives_key
from nscvf.models import load_model
from nscvf.source import PHOTO_MODEL_DIR


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
    vlm = load_model(str(PHOTO_MODEL_DIR), device="cpu")
    candidates = PhotoDomain().negative_candidates()  # read back from the sheet, as teaching reads them
    chain = UnlearningChain(vlm)
    key = json.dumps(list(negatives_key(vlm, candidates, chain.state_fingerprint)))
    with torch.no_grad():
        features = vlm.image_features(candidates)[1].cpu().numpy()
    chain.close()
    np.savez_compressed(NEGATIVES.with_suffix(".npz"), key=np.array(key), features=features)
    print(f"features {features.shape} -> {NEGATIVES.with_suffix('.npz')} under {key}")


if __name__ == "__main__":
    main()
