"""The photo benchmark's forget images (issue 17): images the base model names as the target, over its renders."""

import numpy as np
from PIL import Image

from nscvf import photo_eval
from nscvf.method.photo_domain import named_concept


class _Namer:
    """A stand-in base model: "This is a clock." on bright images, "I don't know" on the rest."""

    def __init__(self):
        self.asked = 0

    def generate(self, questions, images, max_new_tokens=16):
        self.asked += len(images)
        return ["This is a clock." if np.asarray(im).mean() > 120 else "I don't know what this is." for im in images]


def _pool(n=12):
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((160, 160, 3)) * 80 + 60 + 8 * i).astype("uint8")) for i in range(n)]
    return [f"emoji:{chr(0x1F550 + i)}" for i in range(n)], images, ["This is a clock."] * n


def test_forget_images_are_ones_the_base_model_names_and_span_the_renders():
    labels, images, before = _pool()
    namer = _Namer()
    forget, held = photo_eval.forget_and_heldout("a clock", labels, images, before, seed=0, vlm=namer)
    assert len(forget) == 8 and len(held) == 6
    assert all(named_concept(a) == "a clock" for a in namer.generate([""] * 14, forget + held))
    again = photo_eval.forget_and_heldout("a clock", labels, images, before, seed=0, vlm=_Namer())
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(forget + held, again[0] + again[1]))
    other = photo_eval.forget_and_heldout("a clock", labels, images, before, seed=1, vlm=_Namer())[0]
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(forget, other))
    # without a model: views of the first renders, as before, named or not
    plain, _ = photo_eval.forget_and_heldout("a clock", labels, images, before, seed=0)
    names = _Namer().generate([""] * 8, plain)
    assert len(plain) == 8 and any(named_concept(a) != "a clock" for a in names)


def test_too_few_named_images_are_filled_with_unnamed_ones():
    labels, images, before = _pool()
    dark = [Image.fromarray(np.full((160, 160, 3), 30, "uint8")) for _ in images]
    forget, held = photo_eval.forget_and_heldout("a clock", labels, dark, before, vlm=_Namer())
    assert len(forget) == 8 and len(held) == 6
