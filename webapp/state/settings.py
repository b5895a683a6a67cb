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
import os
from dataclasses import dataclass
from pathlib import Path

from nscvf import world
from nscvf.images import MAX_FILE_BYTES
from nscvf.method.config import UnlearnConfig
from nscvf.method.methods import all_methods

ROOT = Path(__file__).resolve().parents[2]  # the repository (webapp/state/settings.py)
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
BROWSER_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}  # shown by a browser as they are
POLL_S = 0.5  # progress refresh period of a running request
UMAP_WAIT_S = 1.0  # a plot waits this long for UMAP's warm-up before falling back to PCA (labelled)
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
        )


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
