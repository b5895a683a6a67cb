"""The frozen encoder's view of the photo model's image sets, computed once (``nscvf train-base --photo``).

Every image becomes its 49 x 1280 tokens (float16) and the ImageNet head's mean logits (the teacher). The sets:
``train`` (training emoji, one random view of each, mixtures of two, unknown images) and ``heldout`` (held-out
emoji, scikit-image's and scikit-learn's photos and crops of them, held-out unknown images): nothing in
``heldout`` is trained on.
"""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass

import torch

from nscvf import photo_images as pi

HELDOUT_UNKNOWN_SEED = 100_000  # unknown images with seeds from here on are never trained on


@dataclass
class ImageSet:
    tokens: torch.Tensor  # (N, T, C) float16
    logits: torch.Tensor  # (N, 1000) float32, the head on the mean token
    labels: list[str]  # what each image is ("emoji:🐱", "view:🐱", "mix:🐱+🚗", "unknown:17", "photo:chelsea", ...)

    def save(self, path) -> None:
        torch.save({"tokens": self.tokens, "logits": self.logits, "labels": self.labels}, path)

    @classmethod
    def load(cls, path) -> ImageSet:
        d = torch.load(path, weights_only=True)
        return cls(d["tokens"], d["logits"], list(d["labels"]))


def train_images(seed: int = 0, views: int = 250, mixtures: int = 120, unknown: int = 240) -> tuple[list, list[str]]:
    """Every training emoji, ``views`` random views and ``mixtures`` mixtures of them, and ``unknown`` unknown images."""
    rng = random.Random(seed)
    items = pi.emoji_split("train")
    ims = [im for _, im in items]
    labels = [f"emoji:{ch}" for ch, _ in items]
    for _ in range(views):
        ch, im = rng.choice(items)
        ims.append(pi.view(im, rng))
        labels.append(f"view:{ch}")
    for _ in range(mixtures):
        (a, ia), (b, ib) = rng.sample(items, 2)
        ims.append(pi.mixture(ia, ib, rng))
        labels.append(f"mix:{a}+{b}")
    for s in range(unknown):
        ims.append(pi.unknown_image(s))
        labels.append(f"unknown:{s}")
    return ims, labels


def heldout_images(crops_per_photo: int = 6, unknown: int = 120) -> tuple[list, list[str]]:
    ims, labels = [], []
    for ch, im in pi.emoji_split("heldout"):
        ims.append(im)
        labels.append(f"emoji:{ch}")
    for name, im in pi.real_photos().items():
        ims.append(im)
        labels.append(f"photo:{name}")
        for i, c in enumerate(pi.crops(im, crops_per_photo, seed=zlib.crc32(name.encode()))):
            ims.append(c)
            labels.append(f"crop:{name}:{i}")
    for s in range(HELDOUT_UNKNOWN_SEED, HELDOUT_UNKNOWN_SEED + unknown):
        ims.append(pi.unknown_image(s))
        labels.append(f"unknown:{s}")
    return ims, labels


@torch.no_grad()
def encode(tower, image_processor, images, labels, batch: int = 32, progress=None) -> ImageSet:
    """The tower's tokens and the head's logits for every image (in the model's own preprocessing)."""
    tokens, logits = [], []
    t0 = time.time()
    for i in range(0, len(images), batch):
        pv = image_processor(images=images[i : i + batch], return_tensors="pt")["pixel_values"]
        tok = tower(pv).hidden_states[-1]
        tokens.append(tok.half())
        logits.append(tower.class_logits(tok).float())
        if progress is not None:
            progress(f"encoded {min(i + batch, len(images))}/{len(images)} images ({time.time() - t0:.0f} s)")
    return ImageSet(torch.cat(tokens), torch.cat(logits), list(labels))
