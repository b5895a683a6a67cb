"""Bad images never crash: each gets an InputError that names the file and says what to do."""

import numpy as np
import pytest
from PIL import Image

from nscvf.errors import InputError
from nscvf.images import WORK_SIZE, load_image


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_missing_empty_folder_and_text_named_png(tmp_path):
    with pytest.raises(InputError, match="nope.png: file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "notes.png").write_text("hello, I am text")
    with pytest.raises(InputError, match="notes.png: not an image"):
        load_image(tmp_path / "notes.png")


def test_corrupt_truncated_image(tmp_path):
    p = _save(Image.new("RGB", (64, 64), "red"), tmp_path / "ok.png")
    data = p.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png: .*(corrupt|cannot read)"):
        load_image(tmp_path / "cut.png")


def test_huge_dimensions_refused_before_decoding(tmp_path):
    # A 9000x9000 PNG of one colour compresses to a few hundred KB; decoding it would take 243 MB.
    p = _save(Image.new("L", (9000, 9000), 0), tmp_path / "huge.png", optimize=True)
    with pytest.raises(InputError, match="9000x9000 pixels.*resize"):
        load_image(p)


def test_modes_become_rgb_and_large_images_are_downscaled(tmp_path):
    cases = {
        "cmyk.jpg": Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
        "grey.png": Image.new("L", (40, 30), 128),
        "rgba.png": Image.new("RGBA", (40, 30), (255, 0, 0, 0)),
        "big.png": Image.new("RGB", (2000, 1000), "blue"),
    }
    for name, img in cases.items():
        out = load_image(_save(img, tmp_path / name))
        assert out.mode == "RGB"
    assert load_image(tmp_path / "big.png").size == (WORK_SIZE, WORK_SIZE // 2)
    # A transparent pixel becomes white, not black.
    assert load_image(tmp_path / "rgba.png").getpixel((0, 0)) == (255, 255, 255)


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    out = load_image(_save(Image.fromarray(arr), tmp_path / "deep.png"))
    px = np.asarray(out)[..., 0]
    assert px.min() == 0 and 200 < px.max() <= 255 and len(np.unique(px)) > 100


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = load_image(p).getpixel((5, 5))
    assert r > 200 and g < 50 and b < 50


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 30), "white")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    p = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(p).size == (30, 60)


def test_tiny_image_refused(tmp_path):
    with pytest.raises(InputError, match="at least 8x8"):
        load_image(_save(Image.new("RGB", (3, 3)), tmp_path / "dot.png"))


def _png_header(path, w: int, h: int) -> None:
    """A PNG that declares ``w`` x ``h`` pixels (its header only: nothing is decoded before the refusal)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_one_clear_error_and_no_pil_warning(tmp_path, recwarn):
    p = tmp_path / "bomb.png"
    _png_header(p, 10_000, 9_500)  # 95 M pixels: above PIL's warning limit (89 M), below its error limit
    with pytest.raises(InputError, match="too large to decode"):
        load_image(p)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
