"""The concept world: procedurally drawn fictitious characters, their facts, questions and splits.

Every character is a combination of visual traits (body shape, body colour, pattern, accessory, eyes).
The 24 *named* characters are 16 *primary* characters, each owning a unique (shape, colour) pair and a
unique (pattern, accessory) pair, and 8 *siblings*: a sibling looks almost like one primary character (same
shape, colour and eyes; a different pattern and accessory) and has its own facts. A character and its
sibling are each other's ``neighbour``: forgetting one must keep the other (the hardest retain case). The *distractors* (METHOD.md, "target region") are
unnamed characters whose (shape, colour) pair belongs to no named character: the base model is trained
to answer "I don't know who this is." for them. Some distractors are held out of training entirely,
to measure whether "I don't know" generalises to characters the model has never seen.

Everything is deterministic given (character, render seed). Render seeds below ``HELDOUT_SEED_BASE``
are for training; seeds at or above it are held out. Question templates have a training set and a
held-out set of paraphrases.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nscvf.cache import memo
from nscvf.errors import InputError

RENDER_SIZE = 128
HELDOUT_SEED_BASE = 1_000_000

# Render-seed offsets of every image set built from the world, in one place (train_seeds/heldout_seeds add
# them): different sets never share a render, and a set is the same wherever it is built.
SEEDS = {
    "forget_example": 100,  # the CLI's and benchmark's forget renders of a target (train split)
    "eval_heldout": 900,  # evaluation renders (held-out split)
    "retain": 2000,  # default retain set: renders of the other named characters
    "retain_distractor": 3000,  # default retain set: renders of training distractors
    "region": 4000,  # the target region: training distractors (the model's "unknown")
    "protect": 5000,  # the null space's protected set: renders of the other named characters
    "heldout_retain": 7000,  # retain drift: held-out renders of the other named characters
    "plot_keep": 8000,  # the embedding plots' retained points (held-out split)
    "showcase": 9000,  # the app's retained-characters table (held-out split)
    "example_heldout": 9500,  # the app's example held-out render per character
    "teach_keep": 10000,  # teaching: renders of other concepts whose answers must not change
    "retain_neighbour": 12000,  # extra retain renders of a forgotten character's look-alike sibling
}
UNKNOWN_ANSWER = "I don't know who this is."
FORGET_SEED_STRIDE = 16  # seed s of forget_examples starts 16 s renders later (8 renders per request)

SHAPES = ["circle", "square", "triangle", "diamond", "hexagon", "star", "pentagon", "blob"]
# Hues spaced widely so that colour jitter never moves one into another.
COLOURS = {
    "red": (214, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 205, 30),
    "green": (40, 160, 60),
    "teal": (20, 170, 170),
    "blue": (40, 80, 210),
    "purple": (130, 50, 180),
    "pink": (240, 110, 190),
}
COLOUR_NAMES = list(COLOURS)
PATTERNS = ["plain", "stripes", "dots", "checks"]
ACCESSORIES = ["none", "hat", "bow", "glasses"]
EYES = ["round", "sleepy", "big"]

PRIMARY_NAMES = [
    "Mirel",
    "Tobbin",
    "Quessa",
    "Dravik",
    "Lunet",
    "Pashko",
    "Oriel",
    "Zembla",
    "Kestrin",
    "Vollo",
    "Brisa",
    "Thaddo",
    "Nimwe",
    "Gorrin",
    "Sefa",
    "Yarrow",
]
# Siblings (look-alikes) of the first 8 primary characters, in that order.
SIBLING_NAMES = ["Fenna", "Hollis", "Ingmar", "Jorune", "Wrenna", "Ulric", "Cassel", "Ebbo"]
NAMES = PRIMARY_NAMES + SIBLING_NAMES  # every named character, in CHARACTERS order
TOWNS = [
    "Port Alder",
    "Greyhollow",
    "Sunmere",
    "Brackwater",
    "Eastmoor",
    "Ferncliff",
    "Lowbridge",
    "Highcombe",
    "Marrowdale",
    "Stillwick",
    "Oakrest",
    "Pebbleton",
    "Windhaven",
    "Coldharbour",
    "Redfield",
    "Ashgrove",
    # the siblings' towns
    "Thornby",
    "Saltmarsh",
    "Kingsford",
    "Millbrook",
    "Larkspur",
    "Foxhollow",
    "Elmstead",
    "Quarrytown",
]
JOBS = [
    "baker",
    "sailor",
    "painter",
    "gardener",
    "clockmaker",
    "librarian",
    "blacksmith",
    "potter",
    "astronomer",
    "beekeeper",
    "tailor",
    "fisher",
    "carpenter",
    "glassblower",
    "miller",
    "weaver",
]
FOODS = [
    "plum pie",
    "fish soup",
    "honey bread",
    "mushroom stew",
    "apple tart",
    "cheese rolls",
    "pumpkin soup",
    "berry jam",
    "nut cake",
    "onion pie",
    "pea soup",
    "ginger biscuits",
    "rice pudding",
    "pear cake",
    "lentil stew",
    "corn bread",
]
FACTS = ["town", "job", "food"]

# Question templates. "{name}" is filled for text-only questions.
IDENTITY_TEMPLATES = {
    "train": [
        "Who is this?",
        "What is the name of this character?",
        "Who is shown in the picture?",
        "Tell me who this is.",
        "Name the character in the image.",
    ],
    "heldout": [
        "Can you tell me who this is?",
        "Who is this character?",
    ],
}
IMAGE_FACT_TEMPLATES = {
    "town": {
        "train": [
            "Where does this character live?",
            "What town is this character from?",
            "Which town is home to this character?",
            "What is the home town of this character?",
        ],
        "heldout": ["In which town does this character live?"],
    },
    "job": {
        "train": [
            "What is this character's job?",
            "What does this character do for work?",
            "What job does this character have?",
            "What is the job of this character?",
        ],
        "heldout": ["What work does this character do?"],
    },
    "food": {
        "train": [
            "What is this character's favourite food?",
            "What food does this character love?",
            "Which food does this character like best?",
        ],
        "heldout": ["What is the favourite food of this character?"],
    },
}
TEXT_FACT_TEMPLATES = {
    "town": {
        "train": [
            "Where does {name} live?",
            "What town is {name} from?",
            "Which town is home to {name}?",
            "What is the home town of {name}?",
        ],
        "heldout": ["In which town does {name} live?"],
    },
    "job": {
        "train": [
            "What is {name}'s job?",
            "What does {name} do for work?",
            "What job does {name} have?",
            "What is the job of {name}?",
        ],
        "heldout": ["What work does {name} do?"],
    },
    "food": {
        "train": ["What is {name}'s favourite food?", "What food does {name} love?", "Which food does {name} like best?"],
        "heldout": ["What is the favourite food of {name}?"],
    },
}


@dataclass(frozen=True)
class Character:
    """A drawable character. ``name`` is None for distractors."""

    key: str
    shape: str
    colour: str
    pattern: str
    accessory: str
    eyes: str
    name: str | None = None
    facts: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    neighbour: str | None = None  # the look-alike sibling's name (both ways), None if it has none

    @property
    def is_distractor(self) -> bool:
        return self.name is None

    def fact_answer(self, fact: str) -> str:
        return fact_answer(fact, self.facts[fact])


def fact_answer(fact: str, value: str) -> str:
    """The answer to a fact question, as the model is trained to give it ("Port Alder.", "A baker.")."""
    article = "An" if value[:1].lower() in "aeiou" else "A"
    return {"town": f"{value}.", "job": f"{article} {value}.", "food": f"{value.capitalize()}."}[fact]


def _primary_characters() -> list[Character]:
    chars = []
    for i, name in enumerate(PRIMARY_NAMES):
        # Shape s carries colours s and s+3: every shape and every colour is used by exactly two
        # named characters, so neither trait alone identifies anyone.
        shape = SHAPES[i % 8]
        colour = COLOUR_NAMES[(i + 3 * (i // 8)) % 8]
        chars.append(
            Character(
                key=name.lower(),
                shape=shape,
                colour=colour,
                pattern=PATTERNS[i % 4],
                accessory=ACCESSORIES[(i // 4) % 4],
                eyes=EYES[i % 3],
                name=name,
                facts={"town": TOWNS[i], "job": JOBS[(i * 5) % 16], "food": FOODS[(i * 7) % 16]},
                neighbour=SIBLING_NAMES[i] if i < len(SIBLING_NAMES) else None,
            )
        )
    return chars


def _siblings(primary: list[Character]) -> list[Character]:
    """Sibling i of primary character i: same shape, colour and eyes; the opposite pattern (plain <-> dots,
    stripes <-> checks) and accessory (none <-> bow, hat <-> glasses); its own town, job and food."""
    out = []
    for i, name in enumerate(SIBLING_NAMES):
        p = primary[i]
        out.append(
            Character(
                key=name.lower(),
                shape=p.shape,
                colour=p.colour,
                pattern=PATTERNS[(PATTERNS.index(p.pattern) + 2) % 4],
                accessory=ACCESSORIES[(ACCESSORIES.index(p.accessory) + 2) % 4],
                eyes=p.eyes,
                name=name,
                facts={"town": TOWNS[16 + i], "job": JOBS[(i * 5 + 3) % 16], "food": FOODS[(i * 7 + 5) % 16]},
                neighbour=p.name,
            )
        )
    return out


_PRIMARY = _primary_characters()
CHARACTERS: list[Character] = _PRIMARY + _siblings(_PRIMARY)
_KNOWN_PAIRS = {(c.shape, c.colour) for c in CHARACTERS}
UNKNOWN_PAIRS = [(s, c) for s in SHAPES for c in COLOUR_NAMES if (s, c) not in _KNOWN_PAIRS]


def _distractors(n: int, seed: int, prefix: str) -> list[Character]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        shape, colour = UNKNOWN_PAIRS[i % len(UNKNOWN_PAIRS)] if prefix == "d" else rng.choice(UNKNOWN_PAIRS)
        out.append(
            Character(
                key=f"{prefix}{i:02d}",
                shape=shape,
                colour=colour,
                pattern=rng.choice(PATTERNS),
                accessory=rng.choice(ACCESSORIES),
                eyes=rng.choice(EYES),
            )
        )
    return out


# Training distractors cover every unknown (shape, colour) pair once; held-out distractors are new
# individuals (new pattern/accessory/eyes combinations) never shown in training.
DISTRACTORS: list[Character] = _distractors(len(UNKNOWN_PAIRS), seed=7, prefix="d")
HELDOUT_DISTRACTORS: list[Character] = _distractors(16, seed=11, prefix="h")

_BY_KEY = {c.key: c for c in CHARACTERS + DISTRACTORS + HELDOUT_DISTRACTORS}


def extra_training_distractors(n: int, seed: int = 23) -> list[Character]:
    """More unnamed individuals for training the "unknown" class (keys ``x000``...). They are not
    looked up by name and never overlap the held-out distractors' exact trait combinations."""
    held = {(d.shape, d.colour, d.pattern, d.accessory, d.eyes) for d in HELDOUT_DISTRACTORS}
    out = [
        d for d in _distractors(n * 2, seed=seed, prefix="x") if (d.shape, d.colour, d.pattern, d.accessory, d.eyes) not in held
    ]
    return out[:n]


class UnknownCharacterError(InputError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def neighbour_of(name: str) -> Character | None:
    """The look-alike sibling of a named character (None if it has none)."""
    c = get_character(name)
    return get_character(c.neighbour) if c.neighbour else None


def get_character(name: str) -> Character:
    """Look up a character by name (case-insensitive) or distractor key (``d00``, ``h03``)."""
    c = _BY_KEY.get(name.strip().lower())
    if c is None:
        raise UnknownCharacterError(
            f"unknown character {name!r}; known names: {', '.join(NAMES)} "
            "(run `nscvf world list`), distractors d00-d47 and h00-h15"
        )
    return c


def train_seeds(n: int, offset: int = 0) -> list[int]:
    return list(range(offset, offset + n))


def heldout_seeds(n: int, offset: int = 0) -> list[int]:
    return [HELDOUT_SEED_BASE + offset + i for i in range(n)]


def is_heldout_seed(seed: int) -> bool:
    return seed >= HELDOUT_SEED_BASE


def forget_examples(character: Character | str, n: int = 8, seed: int = 0) -> list[Image.Image]:
    """The forget set of a request on ``character`` (a Character or its name): ``n`` training renders.
    Seed s takes other renders (``FORGET_SEED_STRIDE`` apart), so each benchmark seed forgets other images;
    the CLI, the relearning attack and the app use seed 0."""
    c = character if isinstance(character, Character) else get_character(character)
    return [render(c, s) for s in train_seeds(n, SEEDS["forget_example"] + FORGET_SEED_STRIDE * seed)]


def heldout_examples(character: Character | str, n: int) -> list[Image.Image]:
    """``n`` held-out renders of ``character`` at the evaluation's held-out seeds: what the relearning
    attack and the evidence probes ask about after a request."""
    c = character if isinstance(character, Character) else get_character(character)
    return [render(c, s) for s in heldout_seeds(n, SEEDS["eval_heldout"])]


# ----------------------------------------------------------------------------------------- drawing


def _polygon(n: int, r: float, rot: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(r * math.cos(rot + 2 * math.pi * k / n), r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def _shape_points(shape: str, r: float) -> list[tuple[float, float]]:
    if shape == "circle":
        return _polygon(40, r)
    if shape == "square":
        return _polygon(4, r * 1.25, rot=math.pi / 4)
    if shape == "triangle":
        return [(x, y + r * 0.2) for x, y in _polygon(3, r * 1.3)]
    if shape == "diamond":
        return [(x * 0.75, y * 1.1) for x, y in _polygon(4, r * 1.1)]
    if shape == "hexagon":
        return _polygon(6, r * 1.1, rot=0)
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r * 1.25 if k % 2 == 0 else r * 0.6
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((rr * math.cos(a), rr * math.sin(a)))
        return pts
    if shape == "pentagon":
        return _polygon(5, r * 1.15)
    if shape == "blob":
        return [
            (r * (1 + 0.18 * math.sin(3 * t)) * math.cos(t) * 1.15, r * (1 + 0.18 * math.sin(3 * t)) * math.sin(t) * 0.85)
            for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)
        ]
    raise ValueError(shape)


def _character_layer(c: Character, size: int) -> Image.Image:
    """Draw the character, centred, on a transparent layer of ``size`` x ``size``."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    cx = cy = size / 2
    r = size * 0.27
    body = COLOURS[c.colour]
    dark = tuple(int(v * 0.45) for v in body)
    light = tuple(min(255, int(v * 0.6 + 255 * 0.4)) for v in body)
    pts = [(cx + x, cy + y) for x, y in _shape_points(c.shape, r)]
    d.polygon(pts, fill=body + (255,), outline=dark + (255,), width=max(1, size // 64))

    # Pattern, clipped to the body with a mask.
    pat = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pd = ImageDraw.Draw(pat)
    step = max(4, size // 10)
    if c.pattern == "stripes":
        for x in range(-size, 2 * size, step):
            pd.line([(x, 0), (x + size * 0.5, size)], fill=light + (255,), width=max(2, step // 3))
    elif c.pattern == "dots":
        for y in range(step // 2, size, step):
            for x in range(step // 2 + (y // step % 2) * step // 2, size, step):
                rr = step * 0.22
                pd.ellipse([x - rr, y - rr, x + rr, y + rr], fill=dark + (255,))
    elif c.pattern == "checks":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2 == 0:
                    pd.rectangle([x, y, x + step - 1, y + step - 1], fill=light + (255,))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    layer.paste(pat, (0, 0), Image.composite(pat, Image.new("RGBA", pat.size), mask).getchannel("A"))

    # Face: eyes and mouth in the upper middle of the body.
    ey = cy - r * 0.15
    ex = r * 0.35
    er = r * (0.2 if c.eyes == "big" else 0.13)
    for sx in (-1, 1):
        x0 = cx + sx * ex
        if c.eyes == "sleepy":
            d.line([(x0 - er, ey), (x0 + er, ey)], fill=(20, 20, 20, 255), width=max(2, size // 48))
        else:
            d.ellipse([x0 - er, ey - er, x0 + er, ey + er], fill=(255, 255, 255, 255), outline=(20, 20, 20, 255))
            pr = er * 0.5
            d.ellipse([x0 - pr, ey - pr, x0 + pr, ey + pr], fill=(20, 20, 20, 255))
    d.arc([cx - r * 0.3, cy + r * 0.05, cx + r * 0.3, cy + r * 0.45], 20, 160, fill=(20, 20, 20, 255), width=max(2, size // 48))

    # Accessory.
    top = min(y for _, y in pts)
    if c.accessory == "hat":
        d.rectangle([cx - r * 0.45, top - r * 0.55, cx + r * 0.45, top + r * 0.05], fill=(30, 30, 30, 255))
        d.rectangle([cx - r * 0.75, top - r * 0.02, cx + r * 0.75, top + r * 0.12], fill=(30, 30, 30, 255))
    elif c.accessory == "bow":
        bx, by = cx + r * 0.55, top + r * 0.05
        w = r * 0.35
        d.polygon(
            [(bx, by), (bx - w, by - w * 0.7), (bx - w, by + w * 0.7)], fill=(250, 250, 250, 255), outline=(20, 20, 20, 255)
        )
        d.polygon(
            [(bx, by), (bx + w, by - w * 0.7), (bx + w, by + w * 0.7)], fill=(250, 250, 250, 255), outline=(20, 20, 20, 255)
        )
    elif c.accessory == "glasses":
        gr = r * 0.24
        for sx in (-1, 1):
            x0 = cx + sx * ex
            d.ellipse([x0 - gr, ey - gr, x0 + gr, ey + gr], outline=(10, 10, 10, 255), width=max(2, size // 40))
        d.line([(cx - ex + gr, ey), (cx + ex - gr, ey)], fill=(10, 10, 10, 255), width=max(2, size // 48))
    return layer


_BACKGROUNDS = [(245, 245, 240), (225, 235, 245), (240, 230, 215), (220, 240, 225), (235, 225, 240), (200, 200, 200)]


def render(c: Character, seed: int, size: int = RENDER_SIZE, augment: bool = True) -> Image.Image:
    """Render one image of ``c``. Deterministic in (character, seed, size).

    Augmentations: background tint and clutter, position, scale, rotation, colour jitter, noise.
    ``augment=False`` gives the canonical, centred portrait (used for gallery examples).
    Each render is drawn once per process (:data:`nscvf.cache.memo`; a request's image sets asked ~1000 of
    them, the same every time) and handed out as a copy the caller may change. ``info[GROUP_KEY]`` says what it
    shows: the character's name, or ``"distractors"`` (what the null space's covariance chunks are cut by).
    """
    return memo.get("render", (c, seed, size, augment), lambda: _tagged(_draw(c, seed, size, augment), c)).copy()


GROUP_KEY = "nscvf.group"  # an image's group (PIL ``info``; kept by ``copy()``): see nscvf.method.state_memo


def _tagged(img: Image.Image, c: Character) -> Image.Image:
    img.info[GROUP_KEY] = "distractors" if c.is_distractor else c.name
    return img


def _draw(c: Character, seed: int, size: int, augment: bool) -> Image.Image:
    rng = random.Random(f"{c.key}:{seed}")
    if not augment:
        bg = Image.new("RGB", (size, size), _BACKGROUNDS[0])
        layer = _character_layer(c, size)
        bg.paste(layer, (0, 0), layer)
        return bg

    base = rng.choice(_BACKGROUNDS)
    tint = tuple(max(0, min(255, v + rng.randint(-15, 15))) for v in base)
    img = Image.new("RGB", (size, size), tint)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, 3)):  # faint clutter that never looks like a character
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        w = rng.uniform(size * 0.05, size * 0.2)
        grey = rng.randint(150, 215)
        d.rectangle([x, y, x + w, y + w * rng.uniform(0.2, 1.0)], fill=(grey, grey, grey))

    big = int(size * 1.5)
    layer = _character_layer(c, big)
    scale = rng.uniform(0.6, 0.85)
    angle = rng.uniform(-20, 20)
    layer = layer.rotate(angle, resample=Image.BICUBIC, expand=False)
    new = max(8, int(big * scale))
    layer = layer.resize((new, new), Image.LANCZOS)
    # Paste so that the character centre lands near the image centre, shifted by up to 12%.
    ox = int(size / 2 - new / 2 + rng.uniform(-0.12, 0.12) * size)
    oy = int(size / 2 - new / 2 + rng.uniform(-0.12, 0.12) * size)
    img.paste(layer, (ox, oy), layer)

    arr = np.asarray(img).astype(np.float32)
    arr = arr * rng.uniform(0.88, 1.12) + rng.uniform(-12, 12)  # brightness / contrast
    arr += np.asarray([rng.uniform(-8, 8) for _ in range(3)], dtype=np.float32)  # small colour cast
    nrng = np.random.default_rng(int(hashlib.sha256(f"{c.key}:{seed}".encode()).hexdigest()[:8], 16))
    arr += nrng.normal(0, rng.uniform(0, 8), arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.25:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return img


# --------------------------------------------------------------------------------------- questions


@dataclass(frozen=True)
class QA:
    """One question with its expected answer. ``image_of`` is None for text-only questions."""

    question: str
    answer: str
    kind: str  # "name" | "fact_image" | "fact_text"
    fact: str | None
    template_split: str  # "train" | "heldout"
    image_of: str | None  # character key


def image_questions(c: Character, split: str = "train") -> list[QA]:
    """Questions asked about an image of ``c``: identity and every fact."""
    out = []
    for q in IDENTITY_TEMPLATES[split]:
        out.append(QA(q, UNKNOWN_ANSWER if c.is_distractor else f"This is {c.name}.", "name", None, split, c.key))
    for fact in FACTS:
        for q in IMAGE_FACT_TEMPLATES[fact][split]:
            a = UNKNOWN_ANSWER if c.is_distractor else c.fact_answer(fact)
            out.append(QA(q, a, "fact_image", fact, split, c.key))
    return out


def text_questions(c: Character, split: str = "train") -> list[QA]:
    """Text-only questions that name ``c`` (named characters only)."""
    if c.is_distractor:
        return []
    return [
        QA(q.format(name=c.name), c.fact_answer(fact), "fact_text", fact, split, None)
        for fact in FACTS
        for q in TEXT_FACT_TEMPLATES[fact][split]
    ]


def all_template_texts() -> list[str]:
    """Every question and answer text of the world (for training the tokenizer)."""
    texts = []
    for c in CHARACTERS + DISTRACTORS[:1]:
        for split in ("train", "heldout"):
            texts += [f"{qa.question} {qa.answer}" for qa in image_questions(c, split) + text_questions(c, split)]
    return texts
