"""Attach a saved unlearning result (a chain of peft adapters) to a loaded model, for ask/eval."""

from __future__ import annotations


def attach_adapter(vlm, adapter_dir) -> None:
    """Replace ``vlm``'s model by the chain saved in ``adapter_dir`` (in place)."""
    from nscvf.method.unlearn import UnlearningChain

    chain = UnlearningChain.load(vlm, adapter_dir)
    vlm.model = chain.vlm.model
