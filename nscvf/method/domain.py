"""What a request needs to know about the model's world: probe questions, the unknown answer, how the
target is named, every image set (with its seeds) and the stop check.

Two domains: :class:`WorldDomain` for the embedded model (and anything ``nscvf train-base`` trains: it knows
the procedurally drawn characters) and :class:`GenericDomain` for any other MLLM, where the caller gives
the images to keep and the target region is a bundled anchor image set. Nothing else in the engine asks
which kind of model it runs on.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import NamedTuple

from PIL import Image, ImageOps

from nscvf import world
from nscvf.errors import InputError
from nscvf.eval import is_unknown, mentions, names_in
from nscvf.method.anchors import anchor_images


def augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """A new view of an uploaded image: crop, small rotation, flip, brightness (PIL only, any family)."""
    w, h = img.size
    s = rng.uniform(0.8, 1.0)
    cw, ch = int(w * s), int(h * s)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC)
    out = out.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, fillcolor=out.getpixel((0, 0)))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    return Image.eval(out, lambda v, f=rng.uniform(0.9, 1.1): min(255, int(v * f)))


class RelearnSets(NamedTuple):
    """What a relearning probe trains on and tests: the target's images (k), held-out images of it, and the
    same for a reference that never knew the target (``reference`` says what it is)."""

    train: list
    held: list
    ref_train: list
    ref_held: list
    reference: str


def infer_target(answers: list[str]) -> str | None:
    """The named character most identity answers name, if at least half of them do."""
    counts: dict[str, int] = {}
    for a in answers:
        for n in names_in(a):
            counts[n] = counts.get(n, 0) + 1
    if not counts:
        return None
    name, n = max(counts.items(), key=lambda kv: kv[1])
    return name if n * 2 >= len(answers) else None


class Domain:
    """The generic domain: a model of the wider world, whose knowledge the caller describes by images."""

    is_world = False
    # Its answers name what they see (the drawn world's characters, the photo model's concepts: nscvf.eval.names_in),
    # so an outcome says who or what is named, forgotten, still named (nscvf.method.outcome); else only "changed".
    names_things = False
    unknown_answer = "I don't know."
    # torch threads for this model's calls on the CPU (SharedBase.using; None: torch's own, one per core).
    cpu_threads: int | None = None

    def probe_questions(self) -> list[str]:
        """Questions asked about every forget image before and after (the first is the identity one)."""
        return ["Who is this?", "What is this?"]

    def text_questions(self) -> list[str]:
        """Text-only questions whose answers must stay identical (none known for a generic model)."""
        return []

    def resolve_target(self, given: str | None, identity_answers: list[str], taught=()) -> str | None:
        """The target's canonical name: the given name as typed (a generic model has no list of names)."""
        return given or None

    def keep_images(self, exclude, n: int, seed: int = 0) -> list[Image.Image]:
        """Images of other concepts whose answers teaching must not change (generic: the anchor images)."""
        return anchor_images(n=min(n, 32), seed=seed)

    def negative_candidates(self) -> list[Image.Image]:
        """Images teaching may keep as hard negatives (those nearest the taught images; none: no such step)."""
        return []

    def negative_features(self) -> tuple[str, object] | None:
        """The candidates' pooled features shipped with the model, as (the memo key they were made under, as JSON,
        an (N, D) float32 array); None: none shipped (teaching computes them)."""
        return None

    def can_evaluate(self, target: str | None) -> bool:
        """Whether :func:`nscvf.eval.evaluate` has questions for this target."""
        return False

    def showcase(self, base_vlm, target: str | None, forgotten: list[str], retain=None) -> tuple[list[str], list]:
        """What a result shows as "must not change": (labels, images). Generic: the first uploaded images to
        keep (none given: nothing to show)."""
        imgs = list(retain or [])[:3]
        return [f"kept image #{i + 1}" for i in range(len(imgs))], imgs

    def showcase_questions(self) -> list[str]:
        """The questions asked about each showcase image, before and after."""
        return self.probe_questions()

    def relearn_sets(self, target: str, images: list, k: int, n_heldout: int, taught=()) -> RelearnSets | None:
        """Rendered images to relearn ``target`` from and a reference, or None: the caller uses the request's
        own images (a generic model has no renders)."""
        return None

    def retain_images(self, exclude: list[str]) -> list[Image.Image]:
        raise InputError("retain images are required for this model: pass images of what must be kept")

    def region_images(self) -> list[Image.Image]:
        return anchor_images()

    def warmup_example(self) -> tuple[list[Image.Image], str | None] | None:
        """Images and target of the process's warm-up request (:mod:`nscvf.method.warmup`), or None: none
        (a generic model's requests need the caller's images to keep)."""
        return None

    def protect_images(self, target: str | None) -> list[Image.Image]:
        """Images protected by the null space besides the retain set."""
        return []

    def drift_images(self, exclude: list[str], retain: list[Image.Image]) -> tuple[list[Image.Image], str]:
        """Images on which retain drift is measured, and what they are."""
        return retain[:64], "retain images"

    def plot_points(self, target: str | None, retain: list[Image.Image]) -> tuple[list[Image.Image], list[str]]:
        """Retained points of the embedding plots and their labels."""
        keep = retain[:48]
        return keep, [f"retain #{i + 1}" for i in range(len(keep))]

    def forgotten(self, vlm, images, question: str, region, forget_orig_pooled) -> bool:
        """The stop check: every image's pooled feature is nearer the target region than the target's old
        features (a generic model has no "I don't know" it was trained to give)."""
        _, z = vlm.image_features(images)
        z = z.to(region.device)
        to_region = (z @ region.T).max(-1).values
        to_orig = (z @ forget_orig_pooled.T).max(-1).values
        return bool((to_region > to_orig).all())


@dataclass(frozen=True)
class WorldDomain(Domain):
    """The embedded model's world: named characters, distractors it answers as unknown, render seeds, and
    how many renders make each image set (``WorldDomain(region_size=...)`` for an experiment)."""

    retain_per_character: int = 8  # default retain set: training renders per other named character
    retain_per_neighbour: int = 0  # extra retain renders of a forgotten character's look-alike sibling
    retain_per_distractor: int = 1  # default retain set: renders per training distractor
    protect_per_character: int = 24  # null-space protected set: renders per other named character
    region_size: int = 96  # the target region: distractor renders (the model's "unknown")

    is_world = True  # class attributes, not fields: the same for every world domain
    names_things = True
    # The embedded model's ops are too small to share between threads: on 2 cores one torch thread took 0.31-0.39 s
    # a step against 0.37-0.47 s with two, faster in 4 of 4 pairs (1.09 s with two and OMP_WAIT_POLICY=PASSIVE,
    # which the app sets; benchmarks/issue20/threads_ab.py, issue 20). One count for every call on it, so its float
    # reductions never vary.
    cpu_threads = 1
    unknown_answer = world.UNKNOWN_ANSWER

    def probe_questions(self) -> list[str]:
        return ["Who is this?"] + [world.IMAGE_FACT_TEMPLATES[f]["train"][0] for f in world.FACTS]

    def text_questions(self) -> list[str]:
        return [qa.question for c in world.CHARACTERS for qa in world.text_questions(c)[::3]]

    def resolve_target(self, given: str | None, identity_answers: list[str], taught=()) -> str | None:
        """A world character's canonical name, or a concept taught to this chain (``taught``)."""
        if given:
            match = [t for t in taught if t.lower() == given.strip().lower()]
        else:  # the taught concept most of the answers name, if at least half do
            hits = {t: sum(mentions(a, t) for a in identity_answers) for t in taught}
            match = [t for t, n in sorted(hits.items(), key=lambda kv: -kv[1]) if n * 2 >= len(identity_answers) > 0]
        if match:
            return match[0]
        name = given or infer_target(identity_answers)
        return world.get_character(name).name if name else None  # InputError listing the names

    def keep_images(self, exclude, n: int, seed: int = 0) -> list[Image.Image]:
        """Renders of the named characters (but ``exclude``) and of distractors, ``n`` in all."""
        pool = [(c, "c") for c in self.named_except(exclude)] + [(d, "d") for d in world.DISTRACTORS]
        rng = random.Random(seed)
        picks = [pool[i % len(pool)] for i in range(n)]
        rng.shuffle(picks)
        return [world.render(c, world.train_seeds(1, world.SEEDS["teach_keep"] + i)[0]) for i, (c, _) in enumerate(picks)]

    def can_evaluate(self, target: str | None) -> bool:
        """A world character only: the evaluation has no questions about a concept taught to a chain (a
        Forget after a Teach is measured by its probes; issue 17's "unknown character 'Whiskers'")."""
        return target is not None and target in world.NAMES

    def showcase(self, base_vlm, target: str | None, forgotten: list[str], retain=None) -> tuple[list[str], list]:
        """Held-out renders of a few characters that must not change (the target's look-alike sibling
        first), each at a seed the base model names correctly."""
        chars = retained_characters(target, forgotten)
        imgs = [world.render(c, s) for c, s in zip(chars, showcase_seeds(base_vlm, chars, self.probe_questions()[0]))]
        sibling = "; look-alike sibling"
        return [f"{c.name} (held-out render{sibling if target and c.neighbour == target else ''})" for c in chars], imgs

    def showcase_questions(self) -> list[str]:
        return [self.probe_questions()[0], world.IMAGE_FACT_TEMPLATES["town"]["train"][0]]

    def relearn_sets(self, target: str, images: list, k: int, n_heldout: int, taught=()) -> RelearnSets | None:
        """A world character (not a concept taught to the chain): k of its images (training renders when the
        upload is gone), held-out renders, and an unseen distractor taught the same name as the reference."""
        if target in taught or target not in world.NAMES:
            return None
        c, d = world.get_character(target), world.HELDOUT_DISTRACTORS[0]
        train = images[:k] or world.forget_examples(c, k)
        return RelearnSets(train, world.heldout_examples(c, n_heldout), world.forget_examples(d, len(train)),
                           world.heldout_examples(d, n_heldout),
                           f"an unseen character taught the same name ({target}) on the base model")  # fmt: skip

    @staticmethod
    def named_except(exclude) -> list:
        """The named characters but ``exclude`` (a name, a list of names, or None)."""
        names = {n.lower() for n in ([exclude] if isinstance(exclude, str) else list(exclude or [])) if n}
        return [c for c in world.CHARACTERS if c.name.lower() not in names]  # taught concepts are not world characters

    def retain_images(self, exclude: list[str]) -> list[Image.Image]:
        seeds = world.train_seeds(self.retain_per_character, world.SEEDS["retain"])
        kept = self.named_except(exclude)
        imgs = [world.render(c, s) for c in kept for s in seeds]
        # The look-alike siblings of what is forgotten, again (other training renders): the hardest retain cases.
        siblings = {c.neighbour for c in world.CHARACTERS if c.neighbour and c not in kept} & {c.name for c in kept}
        seeds = world.train_seeds(self.retain_per_neighbour, world.SEEDS["retain_neighbour"])
        imgs += [world.render(c, s) for c in kept if c.name in siblings for s in seeds]
        seeds = world.train_seeds(self.retain_per_distractor, world.SEEDS["retain_distractor"])
        return imgs + [world.render(d, s) for d in world.DISTRACTORS for s in seeds]

    def warmup_example(self) -> tuple[list[Image.Image], str | None] | None:
        """The last named character's training renders: a request on it draws every image set the others'
        share (the app's example buttons start at the first characters, so their first click is not this)."""
        c = world.CHARACTERS[-1]
        return world.forget_examples(c), c.name

    def region_images(self) -> list[Image.Image]:
        ds, base = world.DISTRACTORS, world.SEEDS["region"]
        return [world.render(ds[i % len(ds)], base + i) for i in range(self.region_size)]

    def protect_images(self, target: str | None) -> list[Image.Image]:
        seeds = world.train_seeds(self.protect_per_character, world.SEEDS["protect"])
        return [world.render(c, s) for c in self.named_except(target) for s in seeds]

    def drift_images(self, exclude: list[str], retain: list[Image.Image]) -> tuple[list[Image.Image], str]:
        seeds = world.heldout_seeds(2, world.SEEDS["heldout_retain"])
        return [world.render(c, s) for c in self.named_except(exclude) for s in seeds], "held-out retain renders"

    def plot_points(self, target: str | None, retain: list[Image.Image]) -> tuple[list[Image.Image], list[str]]:
        others = self.named_except(target)
        seeds = world.heldout_seeds(3, world.SEEDS["plot_keep"])
        return [world.render(c, s) for c in others for s in seeds], [c.name for c in others for _ in seeds]

    def forgotten(self, vlm, images, question: str, region, forget_orig_pooled) -> bool:
        """Every image answered "I don't know". Asked in two batches: the first ``len(forget_orig_pooled)``
        images (the given forget images: the request puts them first), and the others only if those are all
        forgotten, so that a check that fails (most of them) costs a quarter of one that passes."""
        n = len(forget_orig_pooled)
        for part in (images[:n], images[n:]):
            if part and not all(is_unknown(a) for a in vlm.generate([question] * len(part), part)):
                return False
        return True


# ------------------------------------------------------------------------------------ showcase

_SEEDS: dict = {}  # (base fingerprint, character key) -> a showcase seed the base model names correctly
_SEEDS_LOCK = threading.Lock()
SEED_CANDIDATES = 8


def retained_characters(target: str | None, forgotten: list[str]) -> list:
    """A few characters that must not change: the target's look-alike sibling first, then those sharing
    its shape or colour."""
    out = [c for c in world.CHARACTERS if c.name not in forgotten]
    t = next((c for c in world.CHARACTERS if target and c.name == target), None)  # a taught concept is none
    if t is not None:
        out.sort(key=lambda c: (c.name != t.neighbour, c.shape != t.shape and c.colour != t.colour, world.CHARACTERS.index(c)))
    return out[:3]


def showcase_seeds(base_vlm, chars, question: str) -> list[int]:
    """One held-out render seed per character that the base model names correctly (deterministic: the first
    of :data:`SEED_CANDIDATES` showcase seeds that works, remembered per model), so that a retained row never
    shows the base model failing before anything was forgotten."""
    candidates = world.heldout_seeds(SEED_CANDIDATES, world.SEEDS["showcase"])
    fp = base_vlm.fingerprint
    for j, seed in enumerate(candidates):
        with _SEEDS_LOCK:
            todo = [c for c in chars if (fp, c.key) not in _SEEDS]
        if not todo:
            break
        answers = base_vlm.generate([question] * len(todo), [world.render(c, seed) for c in todo])
        with _SEEDS_LOCK:
            for c, a in zip(todo, answers):
                if names_in(a) == {c.name} or j == len(candidates) - 1:
                    _SEEDS[(fp, c.key)] = seed
    with _SEEDS_LOCK:
        return [_SEEDS.get((fp, c.key), candidates[0]) for c in chars]


# A trained model's ``config.nscvf_world`` marker -> its Domain class (others register here: the photo model's
# PhotoDomain, nscvf.method.photo_domain). "v1" is the drawn world.
DOMAINS: dict[str, type] = {}


def is_world_model(vlm) -> bool:
    """True for the embedded drawn-world model (or anything trained by ``nscvf train-base`` without --photo)."""
    marker = getattr(vlm.base.config, "nscvf_world", None)
    return marker is not None and marker not in DOMAINS


def domain_for(vlm) -> Domain:
    """The domain of ``vlm``: the one its training marker names (the world, the photo model's), generic for any other."""
    marker = getattr(vlm.base.config, "nscvf_world", None)
    if marker in DOMAINS:
        return DOMAINS[marker]()
    return WorldDomain() if marker is not None else Domain()
