"""Photo-like test images drawn with PIL and numpy (textures, gradients, a drawn object), at camera
sizes; never seen by any training. Deterministic by seed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def mug_photo(seed: int, size=(1600, 1200)) -> Image.Image:
    """A red mug with a white handle on a wooden-looking table, seen from slightly different places."""
    rng = np.random.default_rng(seed)
    w, h = size
    y = np.linspace(0, 1, h)[:, None, None]
    wall = np.array([200, 205, 215]) * (1 - 0.3 * y) + rng.normal(0, 4, (h, w, 3))
    img = Image.fromarray(wall.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    table_top = int(h * rng.uniform(0.55, 0.65))
    for i in range(table_top, h, 6):  # wood grain
        shade = int(120 + 25 * np.sin(i / 9.0 + seed))
        d.line([(0, i), (w, i + int(rng.integers(-8, 8)))], fill=(shade, int(shade * 0.7), int(shade * 0.45)), width=6)
    cx, cy = int(w * rng.uniform(0.4, 0.6)), table_top - int(h * 0.02)
    mw, mh = int(w * rng.uniform(0.16, 0.2)), int(h * rng.uniform(0.28, 0.34))
    d.ellipse([cx + mw // 2 - 20, cy - mh * 0.8, cx + mw // 2 + mw * 0.45, cy - mh * 0.25], outline=(245, 245, 240), width=28)
    d.rectangle([cx - mw // 2, cy - mh, cx + mw // 2, cy], fill=(190 + int(rng.integers(0, 30)), 30, 35))
    d.ellipse([cx - mw // 2, cy - mh - 25, cx + mw // 2, cy - mh + 25], fill=(120, 20, 25))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))


def texture_photo(seed: int, size=(1024, 768)) -> Image.Image:
    """A noisy gradient texture (not any concept): a background-like photo."""
    rng = np.random.default_rng(1000 + seed)
    w, h = size
    a, b = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    arr = a * (1 - t) + b * t + rng.normal(0, 18, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def save_mug_jpegs(folder, n: int = 8) -> list[str]:
    """``n`` mug photographs saved as camera-like JPEGs (quality 88) in ``folder``; their paths."""
    paths = []
    for i in range(n):
        p = folder / f"mug_{i}.jpg"
        mug_photo(i).save(p, quality=88)
        paths.append(str(p))
    return paths
