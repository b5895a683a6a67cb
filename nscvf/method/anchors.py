"""Generic anchor images: the target region for models that have no built-in "unknown" class
(METHOD.md CVF). Plain colours, gradients and noise, drawn procedurally (nothing to download)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "photos"


def bundled_photos() -> list[Image.Image]:
    """The bundled photographs of everyday things (assets/photos: an astronaut, coffee, a cat, a rocket, a
    camera; public domain / CC0, see its README): other concepts a taught one must not take over. Empty
    when the folder is missing (an installed wheel without the assets)."""
    return [Image.open(p).convert("RGB") for p in sorted(PHOTOS_DIR.glob("*.jpg"))]


def anchor_images(n: int = 32, size: int = 224, seed: int = 0) -> list[Image.Image]:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            arr = np.full((size, size, 3), [rng.randint(0, 255) for _ in range(3)], dtype=np.uint8)
        elif kind == 1:
            a, b = np.array([rng.randint(0, 255) for _ in range(3)]), np.array([rng.randint(0, 255) for _ in range(3)])
            t = np.linspace(0, 1, size)[None, :, None]
            arr = (a * (1 - t) + b * t).repeat(size, 0).astype(np.uint8)
        elif kind == 2:
            arr = nrng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        else:
            arr = (nrng.normal(128, 20, (size // 8, size // 8, 3)).clip(0, 255)).astype(np.uint8)
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))
        out.append(Image.fromarray(arr))
    return out
