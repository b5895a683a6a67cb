"""What every CLI command shares: loading the model (or a saved chain's state) and a progress bar."""

from __future__ import annotations

import sys


def load_for(args):
    """The model the command runs on: the base model, or with ``--adapter DIR`` the saved chain's state."""
    from nscvf.models import load_model

    vlm = load_model(args.model, device=args.device, dtype=args.dtype)
    if getattr(args, "adapter", None):
        from nscvf.method.chain import UnlearningChain

        return UnlearningChain.load(vlm, args.adapter).vlm
    return vlm


class StageBar:
    """tqdm over the stages reported by the engine's progress callback."""

    def __init__(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=1, file=sys.stderr, leave=False, bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}]")

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.bar.set_description_str(stage.split(" ")[0] if stage.startswith("step") else stage)
        self.bar.total = max(1, total)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
