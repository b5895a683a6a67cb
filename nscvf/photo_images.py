"""Images for the photo model (issue 17), all made here or shipped in packages, deterministic by seed.

- **Emoji**: Debian's ``fonts-noto-color-emoji`` rendered with PIL (animals, food, vehicles, objects); every fifth
  one (by code point order) is held out of training.
- **Views**: crops, flips, colour jitter and backgrounds of an image; **mixtures** of two.
- **Unknown**: noise, stripes, checkers, gradients and blobs, and the drawn world's characters: what the
  encoder cannot place ("I don't know what this is.").
- **Real photos**: scikit-image's and scikit-learn's bundled photographs (build time, held out).
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from nscvf import world

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
# Code point blocks with pictures of things (animals, plants, food, places, transport, objects).
EMOJI_RANGES = [(0x1F330, 0x1F37F), (0x1F380, 0x1F3FF), (0x1F400, 0x1F4FF), (0x1F680, 0x1F6FF), (0x1F950, 0x1F9FF),
                (0x1FA70, 0x1FAFF), (0x2600, 0x26FF)]  # fmt: skip
HELDOUT_EVERY = 5


@cache
def emoji() -> tuple[tuple[str, Image.Image], ...]:
    """(character, 160x160 RGB render on white) for every code point the font draws."""
    if not EMOJI_FONT.exists():
        raise FileNotFoundError(f"{EMOJI_FONT} is missing: apt-get install -y fonts-noto-color-emoji")
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    out = []
    for lo, hi in EMOJI_RANGES:
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            im = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
            ImageDraw.Draw(im).text((80, 80), ch, font=font, embedded_color=True, anchor="mm")
            a = np.asarray(im)[..., 3]
            if (a > 0).mean() < 0.05:  # nothing drawn (no glyph) or a tiny mark
                continue
            bg = Image.new("RGB", im.size, (255, 255, 255))
            bg.paste(im, mask=im.split()[3])
            out.append((ch, bg))
    return tuple(out)


def write_sheet(items, path: Path, cols: int = 20) -> dict:
    """``items`` ((character, 160x160 RGB image), ...) tiled into one lossless PNG at ``path`` (row-major, ``cols``
    a row); returns its index (tile side, columns, the characters in order), which :func:`read_sheet` reads back."""
    side = items[0][1].size[0]
    rows = -(-len(items) // cols)
    sheet = Image.new("RGB", (cols * side, rows * side), (255, 255, 255))
    for i, (_, im) in enumerate(items):
        sheet.paste(im, (i % cols * side, i // cols * side))
    sheet.save(path, optimize=True)
    return {"tile": side, "cols": cols, "characters": [ch for ch, _ in items]}


def read_sheet(path: Path, index: dict) -> list[tuple[str, Image.Image]]:
    """The (character, image) tiles of a sheet written by :func:`write_sheet`, in order."""
    side, cols = index["tile"], index["cols"]
    with Image.open(path) as sheet:
        sheet = sheet.convert("RGB")
        return [(ch, sheet.crop((i % cols * side, i // cols * side, (i % cols + 1) * side, (i // cols + 1) * side)))
                for i, ch in enumerate(index["characters"])]  # fmt: skip


def emoji_split(split: str) -> list[tuple[str, Image.Image]]:
    """ "train" or "heldout" (every ``HELDOUT_EVERY``-th emoji in code point order)."""
    items = emoji()
    held = [i % HELDOUT_EVERY == HELDOUT_EVERY - 1 for i in range(len(items))]
    return [it for it, h in zip(items, held) if h == (split == "heldout")]


def view(im: Image.Image, rng: random.Random, size: int = 224) -> Image.Image:
    """A random view: crop (60-100% of a side), flip, colour jitter, a coloured background where it was white."""
    im = im.convert("RGB")
    w, h = im.size
    s = rng.uniform(0.6, 1.0)
    cw, ch = max(8, int(w * s)), max(8, int(h * s))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if rng.random() < 0.5:  # replace the white page by a plain colour
        arr = np.asarray(im).copy()
        white = (arr > 245).all(-1)
        arr[white] = [rng.randint(0, 255) for _ in range(3)]
        im = Image.fromarray(arr)
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.75, 1.25))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.75, 1.25))
    if rng.random() < 0.2:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return im.resize((size, size), Image.BICUBIC)


def mixture(a: Image.Image, b: Image.Image, rng: random.Random, size: int = 224) -> Image.Image:
    """Two images blended (a weight in 0.3-0.7) or side by side."""
    a, b = a.convert("RGB").resize((size, size)), b.convert("RGB").resize((size, size))
    if rng.random() < 0.5:
        return Image.blend(a, b, rng.uniform(0.3, 0.7))
    out = Image.new("RGB", (size, size))
    out.paste(a.resize((size // 2, size)), (0, 0))
    out.paste(b.resize((size - size // 2, size)), (size // 2, 0))
    return out


def unknown_image(seed: int, size: int = 224) -> Image.Image:
    """Something the encoder cannot place: noise, stripes, checkers, a gradient, blobs or a drawn character."""
    rng = np.random.default_rng(seed)
    kind = seed % 6
    if kind == 0:
        arr = rng.normal(128, rng.uniform(20, 90), (size, size, 3))
    elif kind == 1:
        period = rng.integers(4, 40)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[:size, :size]
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        arr = np.where(wave > 0, c1, c2)
    elif kind == 2:
        k = int(rng.integers(2, 16))
        cells = rng.integers(0, 256, (k, k, 3))
        arr = np.kron(cells, np.ones((size // k + 1, size // k + 1, 1)))[:size, :size]
    elif kind == 3:
        t = np.linspace(0, 1, size)[None, :, None]
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        arr = np.broadcast_to(c1 * (1 - t) + c2 * t, (size, size, 3))
    elif kind == 4:
        small = rng.uniform(0, 255, (6, 6, 3)).astype("uint8")
        return Image.fromarray(small).resize((size, size), Image.BICUBIC)
    else:
        pool = world.CHARACTERS + world.DISTRACTORS
        c = pool[int(rng.integers(len(pool)))]
        return world.render(c, int(seed)).convert("RGB").resize((size, size), Image.BICUBIC)
    return Image.fromarray(np.clip(arr, 0, 255).astype("uint8"))


def real_photos() -> dict[str, Image.Image]:
    """The photographs bundled with scikit-image and scikit-learn (build time: the [photo-build] extra)."""
    import skimage.data  # build time only (the [photo-build] extra)
    from sklearn.datasets import load_sample_images  # scikit-learn: a dependency of umap-learn

    out = {}
    for name in ("astronaut", "camera", "chelsea", "coffee", "rocket", "clock", "coins", "stereo_motorcycle"):
        a = getattr(skimage.data, name)()
        a = a[0] if isinstance(a, tuple) else a
        out[name] = Image.fromarray(a).convert("RGB")
    sk = load_sample_images()
    for name, a in zip(("china", "flower"), sk.images):
        out[name] = Image.fromarray(a).convert("RGB")
    return out


def crops(im: Image.Image, n: int, seed: int, size: int = 224) -> list[Image.Image]:
    """``n`` random crops (50-90% of the shorter side) of a photo, resized to ``size``."""
    rng = random.Random(seed)
    w, h = im.size
    out = []
    for _ in range(n):
        s = int(min(w, h) * rng.uniform(0.5, 0.9))
        x, y = rng.randint(0, w - s), rng.randint(0, h - s)
        out.append(im.crop((x, y, x + s, y + s)).resize((size, size), Image.BICUBIC))
    return out
