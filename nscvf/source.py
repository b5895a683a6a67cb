"""Which model a process serves, and whether it needs the Hugging Face Hub. Standard library only, so that
``app.py`` can decide the Hub's offline mode before anything imports ``huggingface_hub`` (which reads
``HF_HUB_OFFLINE`` once, at import).

The embedded models (and any local folder) load from disk: offline mode is their default, so that nothing
on such a machine tries the network. A Hub id (``NSCVF_MODEL=llava-hf/llava-1.5-7b-hf``) must download:
``HF_HUB_OFFLINE`` is then left as the environment says.
"""

from __future__ import annotations

import os
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_MODEL_DIR = ASSETS_DIR / "model"
PHOTO_MODEL_DIR = ASSETS_DIR / "photo_model"
# Short names of the embedded models (``--model photo``, ``NSCVF_MODEL=photo``): the drawn world and real photos.
EMBEDDED_MODELS = {"world": EMBEDDED_MODEL_DIR, "photo": PHOTO_MODEL_DIR}


def resolve_source(source: str) -> str:
    """An embedded model's short name -> its folder; anything else (a path, a Hub id) as given."""
    return str(EMBEDDED_MODELS[source]) if source in EMBEDDED_MODELS else source


def default_source(env=None) -> str:
    """``$NSCVF_MODEL`` (a short name, a folder or a Hub id), or the embedded model's folder when it is unset or empty."""
    env = os.environ if env is None else env
    return resolve_source(env.get("NSCVF_MODEL") or str(EMBEDDED_MODEL_DIR))


def is_local(source: str) -> bool:
    """True for a folder on this machine (the embedded models, a saved model); False for a Hub id."""
    return Path(source).expanduser().exists()


def set_offline_default(env=None, source: str | None = None) -> bool:
    """Make offline mode the default for a local model: ``HF_HUB_OFFLINE=1`` unless the environment already
    says otherwise. For a Hub id nothing is set. Returns whether offline mode is now on. Call it before
    ``huggingface_hub`` is imported (``app.py`` does, first thing)."""
    env = os.environ if env is None else env
    source = source or default_source(env)
    if is_local(source):
        env.setdefault("HF_HUB_OFFLINE", "1")
    return (env.get("HF_HUB_OFFLINE") or "").strip().lower() in ("1", "true", "yes", "on")
