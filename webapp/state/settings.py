"""Every ``NSCVF_*`` limit and path of the app, read once (:func:`get`), and the form's menus.

Environment: ``NSCVF_MODEL`` (model folder or id; default the embedded model, read by
:func:`nscvf.models.load_model`), ``NSCVF_DATA_DIR`` (``./data``), ``NSCVF_MAX_QUEUE`` (16),
``NSCVF_TIME_LIMIT`` (seconds per request, 600), ``NSCVF_MAX_FILES`` (32), ``NSCVF_MAX_FILE_MB`` (20),
``NSCVF_MAX_SESSIONS`` (32), ``NSCVF_CONCURRENCY`` (1: short trainings at once, each estimated to fit a
turn), ``NSCVF_TURN_S`` (60: a turn's seconds), ``NSCVF_MAX_STEPS`` (the Steps box's top; default what fits the time limit), ``NSCVF_LONG_CONCURRENCY`` (1: longer trainings at once, in
their own lane: :mod:`webapp.state.turns`), ``NSCVF_LIGHT_CONCURRENCY`` (4: Ask, Undo, Reset, Evaluate and
name inference at once, in their own lane: the engine holds the shared model per training step, so they
wait at most a step behind another visitor's training), ``NSCVF_WARMUP`` (1: before the page serves, load
the model and run the engine's warm-up request, :mod:`nscvf.method.warmup`; 0: serve at once and load the
model in the background, the first request then doing that work).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from nscvf import world
from nscvf.images import MAX_FILE_BYTES
from nscvf.method.config import UnlearnConfig
from nscvf.method.methods import all_methods
from nscvf.source import EMBEDDED_MODELS, resolve_source

ROOT = Path(__file__).resolve().parents[2]  # the repository (webapp/state/settings.py)
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
BROWSER_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}  # shown by a browser as they are
POLL_S = 0.5  # progress refresh period of a running request
UMAP_WAIT_S = 0.0  # a plot waits this long for UMAP's warm-up before falling back to PCA (labelled; redrawn on a later view)
MAX_NAME = 80  # characters of a target name
MAX_QUESTION = 300  # characters of an Ask question
# The Advanced settings: (UnlearnConfig field, label, integer?)
ADVANCED = [
    ("steps", "Steps", True),
    ("lr", "Learning rate", False),
    ("lora_rank", "LoRA rank", True),
    ("energy", "Null-space energy threshold", False),
    ("tau", "Temperature (InfoNCE)", False),
    ("retain_weight", "Retain weight", False),
]
# The app offers narrower ranges than the engine accepts: only values that can work. lr=0.1 (the engine's top)
# collapses the embedded model (every character becomes one name, retain 100% -> 6%); energy=1e-12 keeps no
# null-space direction, so every request fails. Steps: capped by the time limit (:func:`steps_max`).
APP_RANGES = {"lr": (1e-5, 1e-2), "energy": (1e-3, 0.5)}
# The first example, the one a presenter clicks: a character whose default Forget shows no collateral damage,
# with a gold record for the relearning verdict (scripts/example_damage.py, issue 19: Dravik, Tobbin, Kestrin
# and Lunet none; Mirel's look-alike Fenna and Wrenna each lost one of 4 quiz renders, all 13 questions on it).
FIRST_EXAMPLE = "Dravik"


def example_characters(examples_dir: Path) -> list:
    """The world characters with bundled example renders: :data:`FIRST_EXAMPLE` first, then the world's order."""
    chars = [c for c in world.CHARACTERS if (examples_dir / c.key).is_dir()]
    return sorted(chars, key=lambda c: c.name != FIRST_EXAMPLE)


@dataclass(frozen=True)
class Example:
    """One example on the page: the name the name box gets, its images (they fill the upload) and one held-out
    image for "Ask both models" (None: none bundled)."""

    name: str
    files: tuple[str, ...]
    heldout: str | None


@dataclass(frozen=True)
class ModelChoice:
    """A model the page offers: its key (an embedded model's short name, else the source itself), what
    :func:`nscvf.models.load_model` gets, and its label on the page."""

    key: str
    source: str
    label: str


# The embedded models' labels on the page (issue 17: the visitor switches between them).
MODEL_LABELS = {"world": "Drawn world: 24 fictitious characters", "photo": "Real photos: 100+ everyday things"}


def model_choice(name: str) -> ModelChoice:
    """``world``, ``photo``, a folder or a Hub id, as the page offers it."""
    name, source = name.strip(), resolve_source(name.strip())
    short = {str(Path(d).resolve()): k for k, d in EMBEDDED_MODELS.items()}.get(str(Path(source).expanduser().resolve()))
    key = short or name  # an embedded model by its folder is that model
    return ModelChoice(key, resolve_source(key), MODEL_LABELS.get(key, Path(name).name or name))


def world_examples(examples_dir: Path) -> list[Example]:
    """The drawn world's examples: each character's 8 training renders, its held-out render."""
    out = []
    for c in example_characters(examples_dir):
        held = examples_dir / "heldout" / f"{c.key}.png"
        files = tuple(sorted(str(p) for p in (examples_dir / c.key).glob("*.png")))
        out.append(Example(c.name, files, str(held) if held.exists() else None))
    return out


def photo_examples(photo_dir: Path) -> list[Example]:
    """The photo model's examples (``index.json`` of ``scripts/bundle_photo_examples.py``: crops of public-domain
    and CC0 photographs, views of emoji renders); none when the folder is missing."""
    index = photo_dir / "index.json"
    if not index.is_file():
        return []
    rows = json.loads(index.read_text(encoding="utf-8"))["examples"]
    return [Example(r["concept"], tuple(str(photo_dir / f) for f in r["files"]),
                    str(photo_dir / r["heldout"]) if r.get("heldout") else None) for r in rows]  # fmt: skip


# First guesses of a request's cost on a small CPU, refined by every finished request (runtime.Estimate).
SECONDS_PER_STEP = 0.4
OVERHEAD_S = 20.0  # references, null space, answers before/after, plots


def _env_int(env, name: str, default: int) -> int:
    try:
        return int(env.get(name) or default)
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    examples_dir: Path
    model_dir: Path  # the embedded model (named as such on the page)
    # The models the page offers, the first the default (``NSCVF_MODEL``); empty: only the process's model, the
    # drawn world's examples (tests that hand the runtime a loaded model).
    models: tuple[ModelChoice, ...] = ()
    photo_examples_dir: Path = ROOT / "assets" / "photo_examples"
    max_queue: int = 16
    time_limit: int = 600
    max_files: int = 32
    max_file_mb: int = MAX_FILE_BYTES // 2**20
    max_sessions: int = 32
    concurrency: int = 1
    light_concurrency: int = 4  # Ask, Undo, Reset, Evaluate, name inference: their own lane
    turn_s: int = 60  # a training estimated longer than this is long: it runs in the long lane
    long_concurrency: int = 1
    max_steps: int = 0  # the Steps box's top; 0: what fits the time limit at the first guesses of a step's cost
    warm_up: bool = True  # load the model and run the engine's warm-up request before the page serves

    @property
    def steps_hi(self) -> int:
        """The most Steps the form offers and accepts (the live estimate can only lower what is accepted:
        :func:`webapp.service.form.check_time`), so that the box and the validation agree."""
        return self.max_steps or steps_max(self.time_limit)

    def examples(self, model: str | None = None) -> list[Example]:
        """The examples of ``model`` (a :class:`ModelChoice` key; None: the default model)."""
        if self.models and (model or self.models[0].key) == "photo":
            return photo_examples(self.photo_examples_dir)
        return world_examples(self.examples_dir)

    @property
    def default_model(self) -> str | None:
        return self.models[0].key if self.models else None

    def model(self, key: str | None) -> ModelChoice | None:
        """The offered model of ``key`` (None: the default), or None when the page does not offer it."""
        key = key or self.default_model
        return next((m for m in self.models if m.key == key), None)

    @classmethod
    def from_env(cls, env=None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            data_dir=Path(env.get("NSCVF_DATA_DIR") or "data").expanduser().resolve(),
            examples_dir=ROOT / "assets" / "examples",
            model_dir=ROOT / "assets" / "model",
            max_queue=_env_int(env, "NSCVF_MAX_QUEUE", 16),
            time_limit=_env_int(env, "NSCVF_TIME_LIMIT", 600),
            max_files=_env_int(env, "NSCVF_MAX_FILES", 32),
            max_file_mb=_env_int(env, "NSCVF_MAX_FILE_MB", MAX_FILE_BYTES // 2**20),
            max_sessions=_env_int(env, "NSCVF_MAX_SESSIONS", 32),
            concurrency=max(1, _env_int(env, "NSCVF_CONCURRENCY", 1)),
            light_concurrency=max(1, _env_int(env, "NSCVF_LIGHT_CONCURRENCY", 4)),
            turn_s=max(1, _env_int(env, "NSCVF_TURN_S", 60)),
            long_concurrency=max(1, _env_int(env, "NSCVF_LONG_CONCURRENCY", 1)),
            max_steps=max(0, _env_int(env, "NSCVF_MAX_STEPS", 0)),
            warm_up=_env_int(env, "NSCVF_WARMUP", 1) != 0,
            models=offered_models(env),
        )


def offered_models(env) -> tuple[ModelChoice, ...]:
    """``NSCVF_MODELS`` (comma-separated: short names, folders, Hub ids), else ``NSCVF_MODEL`` (default ``world``):
    an embedded model first, then the other embedded models whose folders exist; a folder or Hub id alone. The
    first is the page's default."""
    listed = [m for m in (env.get("NSCVF_MODELS") or "").split(",") if m.strip()]
    if not listed:
        first = (env.get("NSCVF_MODEL") or "world").strip()
        embedded = resolve_source(first) in {str(d) for d in EMBEDDED_MODELS.values()}
        listed = [first] + [k for k, d in EMBEDDED_MODELS.items()
                            if embedded and resolve_source(first) != str(d) and (d / "config.json").exists()]  # fmt: skip
    out, seen = [], set()
    for m in map(model_choice, listed):
        if m.source not in seen:
            seen.add(m.source)
            out.append(m)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def get() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


@functools.lru_cache(maxsize=1)
def config_fields() -> dict[str, dict]:
    """UnlearnConfig's defaults, ranges, choices and help (``nscvf.method.config`` imports without torch), with
    the app's narrower ranges (:data:`APP_RANGES`)."""
    fields = {k: dict(v) for k, v in UnlearnConfig.fields_help().items()}
    for name, (lo, hi) in APP_RANGES.items():
        fields[name].update(lo=lo, hi=hi)
    return fields


def steps_max(time_limit: float, seconds_per_step: float = SECONDS_PER_STEP, overhead: float = OVERHEAD_S) -> int:
    """The most steps whose estimated time fits the time limit (at least 1, at most the engine's maximum)."""
    hi = UnlearnConfig.fields_help()["steps"]["hi"]
    return int(max(1, min(hi, (time_limit - overhead) / max(seconds_per_step, 1e-3))))


@functools.lru_cache(maxsize=1)
def method_choices() -> list[tuple[str, str]]:
    """The Method menu, (label, name), from the engine's method catalogue (every registered method)."""
    return [(f"{name}: {cls.description}", name) for name, cls in all_methods().items()]
