"""Every ``NSCVF_*`` limit and path of the app, read once (:func:`get`), and the form's menus.

Environment: ``NSCVF_MODEL`` (model folder or id; default the embedded model, read by
:func:`nscvf.models.load_model`), ``NSCVF_DATA_DIR`` (``./data``), ``NSCVF_MAX_QUEUE`` (16),
``NSCVF_TIME_LIMIT`` (seconds per request, 600), ``NSCVF_MAX_FILES`` (32), ``NSCVF_MAX_FILE_MB`` (20),
``NSCVF_MAX_SESSIONS`` (32), ``NSCVF_CONCURRENCY`` (1).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from nscvf.images import MAX_FILE_BYTES

ROOT = Path(__file__).resolve().parent.parent
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
        )


@functools.lru_cache(maxsize=1)
def get() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


@functools.lru_cache(maxsize=1)
def config_fields() -> dict[str, dict]:
    """UnlearnConfig's defaults, ranges, choices and help (``nscvf.method.config`` imports without torch)."""
    from nscvf.method.config import UnlearnConfig

    return UnlearnConfig.fields_help()


@functools.lru_cache(maxsize=1)
def method_choices() -> list[tuple[str, str]]:
    """The Method menu, (label, name), from the engine's method catalogue (every registered method)."""
    from nscvf.method.methods import all_methods

    return [(f"{name}: {cls.description}", name) for name, cls in all_methods().items()]
