"""What a forget request did to the photo model (issue 17's forget targets), on images it was not trained on.

The pool is every image the photo model can be shown here: the emoji renders (Debian's Noto Color Emoji) and
crops of the bundled photographs (``assets/photo_model/images``). The base model's answer to "What is this?"
on each pool image says what it is *to the model*: images named as the target are "other images of that
concept", images named as one of its look-alike siblings are the siblings', the rest are the other concepts'.
After the request:

- **forgotten**: held-out views of the forget images (crops/views never trained on) and the target's other pool
  images no longer named as the target (target >= 95%);
- **others kept**: the other concepts' pool images answered exactly as before (target >= 95%);
- **siblings kept**: the look-alike siblings' pool images answered exactly as before (target >= 90%);
- **text identical**: every text-only fact question answered bit-identically.
"""

from __future__ import annotations

import random
import zlib

from nscvf import photo_images
from nscvf.concepts import table
from nscvf.method.photo_domain import bundled, named_concept

EVAL_CROP_SEED = 500_000  # crops of the bundled photos in the pool (never a forget or training crop)


# target concept -> bundled photograph to crop (the rest: views of the concept's emoji renders)
PHOTO_TARGETS = {"a cat": "chelsea", "an espresso": "coffee", "a tripod": "camera"}
# concepts the base model names on some emoji render; most with a look-alike sibling it names too (guitar: violin,
# drum; teapot: bottle; taxi: ambulance)
EMOJI_TARGETS = ["a guitar", "a teapot", "a taxi", "a bottle", "a violin", "a clock"]


SEED_STRIDE = 1000  # seed s draws its crops and views from seeds 1 + 1000 s (forget) and 99 + 1000 s (held out)


def forget_and_heldout(target: str, pool_labels, pool_images, before_answers, n: int = 8, seed: int = 0, vlm=None):
    """(8 forget images, held-out views of them): crops of the target's bundled photo (other seeds for the
    held-out ones), or views of the emoji the base model names as the target, over its renders in a seeded order.
    ``seed`` draws other crops and views (0: the ones ``scripts/photo_forget.py`` and the page's examples use).

    With ``vlm`` (the base model), only images it names as the target, as a visitor's photos of a concept are: a
    view of a named render is often not named (the clock's 29 renders: 56% of their views), and such an image
    has nothing to forget, yet counted as forgotten when held out (1 of the clock's 6 held-out views was named)."""
    s = SEED_STRIDE * seed
    if target in PHOTO_TARGETS:
        im = next(im for _, f, im in bundled() if f == f"photo_{PHOTO_TARGETS[target]}.jpg")
        draw = lambda k, base: photo_images.crops(im, k, seed=base + s)  # noqa: E731
    else:
        renders = [im for lab, im, a in zip(pool_labels, pool_images, before_answers)
                   if lab.startswith("emoji:") and named_concept(a) == target]  # fmt: skip
        if not renders:
            raise ValueError(f"no emoji render is named {target!r} by the base model")
        if vlm is not None:  # the forget images span the renders (the first 8 alone: the same 8 clocks every seed)
            random.Random(1 + s).shuffle(renders)
            renders = renders[:n]

        def draw(k, base):
            rng = random.Random(base + s)
            return [photo_images.view(renders[i % len(renders)], rng) for i in range(k)]

    if vlm is None:
        return draw(n, 1), draw(6, 99)
    return _named(vlm, draw, 1, n, target), _named(vlm, draw, 99, 6, target)


def _named(vlm, draw, base: int, n: int, target: str, tries: int = 6) -> list:
    """The first ``n`` of ``draw(k, base)``'s images the base model names as ``target`` (``tries`` x ``n`` drawn at
    most, asked ``n`` at a time until ``n`` are named; the first unnamed ones fill a shortfall)."""
    images, named = draw(tries * n, base), []
    while len(named) < len(images) and sum(named) < n:
        named += [named_concept(a) == target for a in ask_names(vlm, images[len(named) : len(named) + n])]
    images = images[: len(named)]
    picked = [im for im, ok in zip(images, named) if ok][:n]
    return picked + [im for im, ok in zip(images, named) if not ok][: n - len(picked)]


def pool(crops_per_photo: int = 6) -> tuple[list[str], list]:
    """(labels, images): every emoji render the font draws, the bundled images and crops of the bundled photos."""
    labels, images = [], []
    try:
        for ch, im in photo_images.emoji():
            labels.append(f"emoji:{ch}")
            images.append(im)
    except FileNotFoundError:  # no emoji font on this machine: the bundled images alone
        pass
    for _, file, im in bundled():
        if file.startswith("photo_"):
            name = file[len("photo_") : -len(".jpg")]
            for i, c in enumerate(photo_images.crops(im, crops_per_photo, EVAL_CROP_SEED + zlib.crc32(name.encode()))):
                labels.append(f"crop:{name}:{i}")
                images.append(c)
    return labels, images


def evaluation_set(vlm, views: int = 4, unknown: int = 120, seed: int = 0) -> tuple[list[str], list, list[str]]:
    """(labels, images, the model's answers): the pool images ``vlm`` names, ``views`` random views of each named
    emoji render (more images per concept: its siblings' too), and ``unknown`` of the pool images it does not name
    (they must stay unnamed)."""
    if not photo_images.EMOJI_FONT.exists():  # the bundled images alone have too few unknown ones to sample
        raise FileNotFoundError(f"the photo evaluation shows the model every emoji render: {photo_images.EMOJI_FONT} "
                                "is missing (apt-get install -y fonts-noto-color-emoji)")  # fmt: skip
    labels, images = pool()
    answers = ask_names(vlm, images)
    named = [i for i, a in enumerate(answers) if named_concept(a)]
    rng = random.Random(seed)
    rest = sorted(rng.sample([i for i, a in enumerate(answers) if not named_concept(a)], unknown))
    out_l, out_i, out_a = [], [], []
    for i in named + rest:
        out_l.append(labels[i])
        out_i.append(images[i])
        out_a.append(answers[i])
    extra = [(f"view:{labels[i]}:{k}", photo_images.view(images[i], rng)) for i in named if labels[i].startswith("emoji:")
             for k in range(views)]  # fmt: skip
    if extra:
        out_l += [lab for lab, _ in extra]
        out_i += [im for _, im in extra]
        out_a += ask_names(vlm, [im for _, im in extra])
    return out_l, out_i, out_a


def ask_names(vlm, images) -> list[str]:
    return vlm.generate([table().questions["name"]] * len(images), images, max_new_tokens=12)


def text_answers(vlm) -> dict[str, str]:
    qs = [q for c in table().concepts for q, _ in table().text_qa(c)]
    return dict(zip(qs, vlm.generate(qs, None, max_new_tokens=24)))


def _rate(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def forget_report(before_pool: list[str], after_pool: list[str], held_before: list[str], held_after: list[str],
                  target: str, text_before: dict, text_after: dict) -> dict:  # fmt: skip
    """The four numbers from the answers of the model before and after, on the pool and the held-out views."""
    sib = set(table().get(target).siblings) if target in table().names else set()
    named_before = [named_concept(a) for a in before_pool]
    tgt = [i for i, n in enumerate(named_before) if n == target]
    sibs = [i for i, n in enumerate(named_before) if n in sib]
    others = [i for i, n in enumerate(named_before) if n not in sib and n != target]
    others_named = [i for i in others if named_before[i] is not None]
    gone_views = [named_concept(a) != target for a in held_after]
    gone_pool = [named_concept(after_pool[i]) != target for i in tgt]
    return {
        "target": target,
        "heldout_views_named_before": _rate([named_concept(a) == target for a in held_before]),
        "forgotten": _rate(gone_views + gone_pool),
        "forgotten_n": len(gone_views) + len(gone_pool),
        "forgotten_heldout_views": _rate(gone_views),
        "forgotten_other_images": _rate(gone_pool),
        "other_images_n": len(tgt),
        "others_kept": _rate([after_pool[i] == before_pool[i] for i in others]),
        "others_n": len(others),
        "others_named_kept": _rate([after_pool[i] == before_pool[i] for i in others_named]),
        "others_named_n": len(others_named),
        "siblings": sorted(sib),
        "siblings_kept": _rate([after_pool[i] == before_pool[i] for i in sibs]),
        "siblings_n": len(sibs),
        "text_identical": all(text_after[q] == a for q, a in text_before.items()),
        "text_n": len(text_before),
        "targets": {"forgotten": 0.95, "others_kept": 0.95, "siblings_kept": 0.9, "text_identical": True},
    }
