"""What every CLI command shares: loading the model (or a saved chain's state), the result folder,
writing JSON and the progress bars.

The engine and the model loader import torch and transformers (seconds), so they are imported inside the
functions that load a model: ``nscvf world list`` and ``--help`` stay instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from nscvf.errors import InputError


def load_model(source=None, device=None, dtype=None):
    """:func:`nscvf.models.load_model` (imported here: torch and transformers take seconds)."""
    from nscvf.models import load_model as load  # torch: nscvf.models imports torch and transformers (seconds)

    return load(source, device=device, dtype=dtype)


def load_for(args):
    """The model the command runs on: the base model, or with ``--adapter DIR`` the saved chain's state."""
    vlm = load_model(args.model, device=args.device, dtype=args.dtype)
    if getattr(args, "adapter", None):
        from nscvf.method.chain import UnlearningChain  # torch: see the module docstring

        return UnlearningChain.load(vlm, args.adapter).vlm
    return vlm


def result_folder(out: str) -> Path:
    """``--out`` of a command that saves a chain: new, empty, or an earlier result folder."""
    p = Path(out)
    if p.exists() and any(p.iterdir()) and not (p / "chain.json").exists():
        raise InputError(f"{p} exists and is not an unlearning result folder; choose a new --out")
    return p


def open_chain(args):
    """A chain on the model of ``args``: a new one, or ``--continue-from`` a saved result folder or export."""
    from nscvf.method.chain import UnlearningChain  # torch: see the module docstring

    vlm = load_model(args.model, device=args.device, dtype=args.dtype)
    return UnlearningChain.load(vlm, args.continue_from) if args.continue_from else UnlearningChain(vlm)


def write_json(path: str, obj) -> None:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj, indent=1))
    except OSError as e:
        raise InputError(f"cannot write {p}: {e.strerror}") from None


class StageBar:
    """tqdm over the stages reported by the engine's progress callback."""

    def __init__(self):
        self.bar = tqdm(total=1, file=sys.stderr, leave=False, bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}]")

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.bar.set_description_str(stage.split(" ")[0] if stage.startswith("step") else stage)
        self.bar.total = max(1, total)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class ProgressBar:
    """A tqdm bar driven by (done, total) callbacks."""

    def __init__(self, desc: str):
        self.bar = None
        self.desc = desc

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, file=sys.stderr, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
