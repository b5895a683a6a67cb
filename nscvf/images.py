"""Reading user images safely: every failure becomes an InputError that says what to do."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from nscvf.errors import InputError

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # refuse before decoding anything larger (a decompression bomb)
WORK_SIZE = 512  # images are downscaled to at most this side on load; models see far less


def _open_checked(source) -> Image.Image:
    try:
        with warnings.catch_warnings():  # PIL's DecompressionBombWarning becomes our one-line refusal, not a print
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
    except UnidentifiedImageError:
        raise InputError("not an image that can be read (use PNG, JPEG, WebP, GIF or BMP)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"image is too large to decode (limit {MAX_PIXELS:,} pixels); resize it first") from None
    except OSError as e:
        raise InputError(f"cannot read the image ({e}); re-save it as PNG or JPEG") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise InputError(f"image is {w}x{h} pixels, above the limit of {MAX_PIXELS:,}; resize it first")
    if w < 8 or h < 8:
        raise InputError(f"image is only {w}x{h} pixels; use an image at least 8x8")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, any mode (CMYK, 16-bit, RGBA, greyscale, palette) to RGB,
    downscaled to at most WORK_SIZE a side."""
    try:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit greyscale: scale to 8 bits rather than clip everything to white.
            import numpy as np

            a = np.asarray(img, dtype=np.float64)
            hi = a.max() or 1.0
            img = Image.fromarray((a / hi * 255).astype("uint8"), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.getchannel("A"))
            img = bg
        img = img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"the image data is corrupt ({e}); re-save it as PNG or JPEG") from None
    if max(img.size) > WORK_SIZE:
        img.thumbnail((WORK_SIZE, WORK_SIZE), Image.LANCZOS)
    return img


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load an image file as RGB, or raise InputError naming the file and the fix."""
    p = Path(path)
    try:
        if not p.exists():
            raise InputError("file not found; check the path")
        if p.is_dir():
            raise InputError("is a folder, not an image file")
        size = p.stat().st_size
        if size == 0:
            raise InputError("file is empty")
        if size > MAX_FILE_BYTES:
            raise InputError(f"file is {size / 2**20:.0f} MB, above the {MAX_FILE_BYTES // 2**20} MB limit; resize it first")
        return to_rgb(_open_checked(p))
    except InputError as e:
        raise InputError(f"{p.name}: {e}") from None


def load_image_bytes(data: bytes, name: str = "image") -> Image.Image:
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{name}: {len(data) / 2**20:.0f} MB, above the {MAX_FILE_BYTES // 2**20} MB limit")
    try:
        return to_rgb(_open_checked(io.BytesIO(data)))
    except InputError as e:
        raise InputError(f"{name}: {e}") from None


def ensure_images(images) -> list[Image.Image]:
    """Accept PIL images or paths; return RGB PIL images."""
    out = []
    for im in images:
        if isinstance(im, Image.Image):
            out.append(to_rgb(im))
        elif isinstance(im, (str, os.PathLike)):
            out.append(load_image(im))
        else:
            raise InputError(f"expected an image or a path, got {type(im).__name__}")
    return out
