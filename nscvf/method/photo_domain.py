"""The photo model's Domain (issue 17): everyday concepts seen in real photographs.

Probe questions are "What is this?" and "What kind of thing is this?"; the unknown answer is "I don't know what
this is."; the target is the concept most answers name; retain images are the bundled images of the other
concepts (``assets/photo_model/images``: emoji renders and public-domain photos the model names) plus the
caller's images to keep; the target region is images the encoder cannot place (noise, textures, drawn
characters); look-alike siblings come from the concept table. Every image set is a fixed list or seeded.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from nscvf import photo_images
from nscvf.concepts import table
from nscvf.errors import InputError
from nscvf.eval import concept_in, normalise
from nscvf.method.domain import DOMAINS, Domain, augment
from nscvf.source import PHOTO_MODEL_DIR

IMAGES_DIR = PHOTO_MODEL_DIR / "images"
NEGATIVES = PHOTO_MODEL_DIR / "negatives.png"  # the training split's emoji renders: teaching's hard-negative candidates
REGION_SEED = 200_000  # unknown images of the target region (never trained on, never held out for fidelity)
PROTECT_SEED = 300_000
KEEP_SEED = 400_000  # unknown images among the images teaching keeps
MARKER = "photo-v1"  # config.nscvf_world of a model trained by ``nscvf train-base --photo``


@cache
def bundled() -> tuple[tuple[str, str, Image.Image], ...]:
    """(concept name, file, image) of every bundled image (``images/index.json``), in file order."""
    index = json.loads((IMAGES_DIR / "index.json").read_text(encoding="utf-8"))
    return tuple((r["concept"], r["file"], Image.open(IMAGES_DIR / r["file"]).convert("RGB")) for r in index["images"])


@cache
def _train_emoji() -> tuple[Image.Image, ...]:
    """The emoji renders of the model's training split: read from the sheet shipped with the model
    (``negatives.png``, ``scripts/bundle_photo_negatives.py``; a Space or a Docker image has no emoji font), else
    rendered with the font, else none."""
    if NEGATIVES.exists():
        index = json.loads(NEGATIVES.with_suffix(".json").read_text(encoding="utf-8"))
        return tuple(im for _, im in photo_images.read_sheet(NEGATIVES, index))
    try:
        return tuple(im for _, im in photo_images.emoji_split("train"))
    except FileNotFoundError:
        return ()


@cache
def _negative_features() -> tuple[str, object] | None:
    path = NEGATIVES.with_suffix(".npz")
    if not path.exists():
        return None
    with np.load(path) as f:
        return str(f["key"]), f["features"]


def named_concept(answer: str) -> str | None:
    """The concept an answer names ("This is a cat." -> "a cat"), if it is one of the table's."""
    return concept_in(answer)


@dataclass(frozen=True)
class PhotoDomain(Domain):
    """What a request on the photo model needs; sizes of each image set."""

    region_size: int = 64
    protect_views: int = 2  # null-space protected set: views of each bundled image of another concept
    # ... and this many more of each bundled image of the target's look-alike siblings: with 2, one view of the
    # teapot emoji lost its name whenever the bottle was forgotten (siblings kept 2/3 in 2 of 2 seeds; 3/3 with 8)
    sibling_views: int = 8

    is_world = False
    names_things = True  # "This is a cat.": outcomes read the concept named (nscvf.eval.names_in)

    @property
    def unknown_answer(self) -> str:  # type: ignore[override]
        return table().unknown_answer

    def probe_questions(self) -> list[str]:
        q = table().questions
        return [q["name"], q["kind_image"]]

    def text_questions(self) -> list[str]:
        return [q for c in table().concepts for q, _ in table().text_qa(c)][::2]

    def resolve_target(self, given: str | None, identity_answers: list[str], taught=()) -> str | None:
        """A concept of the table (``cat`` or ``a cat``), a concept taught to the chain, or the concept most of the
        answers name if at least half do."""
        if given:
            g = given.strip().lower()
            for t in taught:
                if t.lower() == g:
                    return t
            for n in table().names:
                if g in (n.lower(), n.lower().split(" ", 1)[1]):
                    return n
            raise InputError(f"unknown concept {given!r}; known: {', '.join(table().names[:10])}, ... "
                             f"({len(table().names)} in all: assets/photo_model/concepts.json)")  # fmt: skip
        counts: dict[str, int] = {}
        for a in identity_answers:
            n = named_concept(a) or next((t for t in taught if normalise(t) in normalise(a).split()), None)
            if n:
                counts[n] = counts.get(n, 0) + 1
        if not counts:
            return None
        name, k = max(sorted(counts.items()), key=lambda kv: kv[1])
        return name if k * 2 >= len(identity_answers) else None

    @staticmethod
    def others(exclude) -> list[tuple[str, str, Image.Image]]:
        names = {n.lower() for n in ([exclude] if isinstance(exclude, str) else list(exclude or [])) if n}
        return [b for b in bundled() if (b[0] or "").lower() not in names]

    def keep_images(self, exclude, n: int, seed: int = 0) -> list[Image.Image]:
        """Views of the bundled images of other concepts, and (every other one) images the encoder cannot place:
        a name taught on a photo the model did not know must not reach everything else it does not know (with
        the named images alone, 25% of other photos' crops were called by a name taught on rocket crops)."""
        pool = self.others(exclude)
        rng = random.Random(seed)
        return [augment(pool[i // 2 % len(pool)][2], rng) if i % 2 == 0 else photo_images.unknown_image(KEEP_SEED + seed * n + i)
                for i in range(n)]  # fmt: skip

    def negative_candidates(self) -> list[Image.Image]:
        """The emoji renders of the model's training split (none without the emoji font): a name taught on a photo
        the model answers "I don't know" went to 136 of 174 emoji renders; the ones nearest the taught photo are kept."""
        return list(_train_emoji())

    def negative_features(self) -> tuple[str, object] | None:
        """The base model's pooled features of the candidates, shipped beside the sheet (``negatives.npz``, made by
        ``scripts/bundle_photo_negatives.py``): 741 images through the tower took ~10 s of a process's first teach."""
        return _negative_features()

    def retain_images(self, exclude: list[str]) -> list[Image.Image]:
        return [im for _, _, im in self.others(exclude)] + [
            photo_images.unknown_image(REGION_SEED + 10_000 + i) for i in range(8)
        ]

    def region_images(self) -> list[Image.Image]:
        return [photo_images.unknown_image(REGION_SEED + i) for i in range(self.region_size)]

    def protect_images(self, target: str | None) -> list[Image.Image]:
        rng, others = random.Random(PROTECT_SEED), self.others(target)
        views = [augment(im, rng) for _, _, im in others for _ in range(self.protect_views)]
        siblings, rng = set(self.siblings(target)), random.Random(PROTECT_SEED + 2)
        return views + [augment(im, rng) for c, _, im in others if c in siblings for _ in range(self.sibling_views)]

    def siblings(self, target: str | None) -> list[str]:
        try:
            return list(table().get(target).siblings) if target else []
        except KeyError:  # a taught concept has no siblings in the table
            return []

    def showcase(self, base_vlm, target: str | None, forgotten: list[str], retain=None) -> tuple[list[str], list]:
        """Bundled images of the target's look-alike siblings first, then of other concepts (three)."""
        pool = self.others([target, *forgotten])
        sib = self.siblings(target)
        pool = sorted(pool, key=lambda b: (b[0] not in sib, bundled().index(b)))[:3]
        return [f"{c} ({'look-alike sibling; ' if c in sib else ''}bundled image)" for c, _, _ in pool], [im for *_, im in pool]

    def drift_images(self, exclude: list[str], retain: list[Image.Image]) -> tuple[list[Image.Image], str]:
        rng = random.Random(PROTECT_SEED + 1)
        return [augment(im, rng) for _, _, im in self.others(exclude)], "views of the bundled images of other concepts"

    def plot_points(self, target: str | None, retain: list[Image.Image]) -> tuple[list[Image.Image], list[str]]:
        pool = self.others(target)
        return [im for *_, im in pool], [c or "unknown" for c, _, _ in pool]

    def forgotten(self, vlm, images, question: str, region, forget_orig_pooled) -> bool:
        """Every image answered "I don't know what this is." (the given images first, the views only if those are)."""
        n = len(forget_orig_pooled)
        unknown = normalise(self.unknown_answer)
        for part in (images[:n], images[n:]):
            if part and not all(normalise(a) == unknown for a in vlm.generate([question] * len(part), part)):
                return False
        return True


DOMAINS[MARKER] = PhotoDomain
