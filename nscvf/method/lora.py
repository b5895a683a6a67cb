"""The LoRA adapter of a request: which linears it tunes."""

from __future__ import annotations

import re

from nscvf.method.config import UnlearnConfig


def lora_config(vlm, cfg: UnlearnConfig):
    """LoRA on the visual module's linears (or the projector's alone), from ``cfg.first_layer`` on."""
    from peft import LoraConfig  # peft: heavy, only when an adapter is configured

    def layer_index(n):
        m = re.search(r"\.(?:layers|blocks)\.(\d+)\.", n)
        return None if m is None else int(m.group(1))

    targets = [t for t in vlm.visual_linear_names() if layer_index(t) is None or layer_index(t) >= cfg.first_layer]
    if cfg.modules == "projector":
        proj = {n for n, m in vlm.base.named_modules() if m is vlm.projector()}
        targets = [t for t in targets if any(t.startswith(p) for p in proj)]
    if cfg.modules == "visual+language":  # teaching only (nscvf.method.teach): the LLM's attention learns too
        targets += vlm.language_linear_names()
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none", target_modules=targets)
