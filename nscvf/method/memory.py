"""A training step's GPU memory, estimated before the optimisation starts (issue 9: refuse what will not fit,
naming what to lower, instead of running out of memory minutes into a request).

The estimate counts the activations that backward keeps for the largest micro-batch: the vision tower's
for every image the step back-propagates through (forget views, retain images, the answer term's images)
and the language model's for the answer term's sequences (``layers x tokens x width``; with activation
checkpointing, each layer's input plus one layer recomputed), plus the answer logits. Parameters and
references are already resident: :func:`free_memory` is what is left beside them. On the CPU nothing is
checked. ``scripts/gpu_check.py`` prints the estimate next to the measured peak.
"""

from __future__ import annotations

import math

import torch

from nscvf.errors import ResourceError

GIB = 2**30
MAX_MICRO_BATCHES = 64  # UnlearnConfig.micro_batches' upper bound
# Activation elements a transformer layer keeps per token for backward, in units of its hidden width h and its
# widest projection w (norm inputs, q/k/v/attention output, LoRA inputs; the MLP's gate/up/activation).
PER_LAYER_H, PER_LAYER_W = 12, 3
OVERHEAD = 1.15  # allocator fragmentation and the transients this count leaves out
RESERVE = GIB // 2  # LoRA gradients and AdamW states, CUDA workspaces


def checkpointing_on(cfg, device) -> bool:
    """Whether a step recomputes activations (``cfg.checkpointing``; "auto": on for CUDA)."""
    if cfg.checkpointing == "auto":
        return torch.device(device).type == "cuda"
    return cfg.checkpointing == "on"


def free_memory(device) -> int | None:
    """Bytes a step can still allocate on ``device`` (free on the card plus what torch holds unused); None
    where memory is not checked (the CPU). Tests replace this function to fake a small card."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def stack_shape(module: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, hidden width, widest projection) of a transformer stack: its longest list of blocks, the
    input width of a block's first linear and the widest linear output (LoRA's own linears left out)."""
    blocks = max((m for m in module.modules() if isinstance(m, torch.nn.ModuleList)), key=len)
    linears = [m for n, m in blocks[0].named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    return len(blocks), linears[0].in_features, max(m.out_features for m in linears)


def _tower_tokens(vlm, pixel_values: torch.Tensor) -> int:
    """Tokens the vision tower runs on for a batch: Qwen-style flat patches (one row each), or images (B, C,
    H, W) cut into patches."""
    if pixel_values.dim() == 2:
        return pixel_values.shape[0]
    p = vlm.base.config.vision_config.patch_size
    return pixel_values.shape[0] * (pixel_values.shape[-2] // p) * (pixel_values.shape[-1] // p)


def _stack_bytes(shape: tuple[int, int, int], tokens: int, elem: int, checkpointing: bool) -> int:
    layers, h, w = shape
    one = PER_LAYER_H * h + PER_LAYER_W * w  # one layer's activations per token
    kept = layers * h + 2 * one if checkpointing else (layers + 1) * one
    return tokens * kept * elem


def step_bytes(vlm, cfg, refs: dict, checkpointing: bool, micro_batches: int | None = None, answers=None) -> int:
    """Estimated activation bytes of the largest micro-batch of a step (``micro_batches`` parts; default the
    config's). ``answers``: the answer batches the method reads (default: all in ``refs``)."""
    m = micro_batches or cfg.micro_batches
    elem = torch.empty(0, dtype=vlm.dtype).element_size()
    tower = stack_shape(vlm.vision_tower())
    n_forget = len(refs["forget_orig_pooled"])
    per_view = _tower_tokens(vlm, refs["forget_inputs"][0]["pixel_values"])
    per_retain = max(_tower_tokens(vlm, d["pixel_values"]) for d in refs["retain_inputs"])
    n_retain = min(cfg.retain_batch, len(refs["retain_inputs"]))
    vision_tokens = math.ceil(n_forget / m) * per_view + math.ceil(n_retain / m) * per_retain
    llm_tokens, logits = 0, 0
    data = refs.get("answers") or {}
    vocab = vlm.base.get_output_embeddings().out_features
    for name in answers if answers is not None else [n for n in data if n.endswith(("_original", "_unknown"))]:
        parts = [b for b in data.get(name, []) if b is not None]
        if not parts:
            continue
        rows = sum(len(b["input_ids"]) for b in parts)
        length = max(b["input_ids"].shape[1] for b in parts)
        answer_len = max(int((b["labels"] != -100).sum(1).max()) for b in parts) + 1
        per_micro = math.ceil(rows / m)
        llm_tokens += per_micro * length
        vision_tokens += per_micro * max(_tower_tokens(vlm, b["pixel_values"]) // len(b["input_ids"]) for b in parts)
        logits += per_micro * answer_len * vocab * 14  # bf16 logits, float32 copy, log-softmax and its gradient
    total = _stack_bytes(tower, vision_tokens, elem, checkpointing) + logits
    if llm_tokens:
        total += _stack_bytes(stack_shape(vlm.language_model()), llm_tokens, elem, checkpointing)
    return int(total * OVERHEAD) + RESERVE


def check_step_memory(vlm, cfg, refs: dict, checkpointing: bool, answers=None) -> dict | None:
    """Raise :class:`~nscvf.errors.ResourceError` when a step will not fit the device's free memory, naming
    the smallest ``micro_batches`` that fits (or what else to lower). Returns the estimate (None: no check)."""
    free = free_memory(vlm.device)
    if free is None:
        return None
    need = step_bytes(vlm, cfg, refs, checkpointing, answers=answers)
    report = {"step_gib": round(need / GIB, 2), "free_gib": round(free / GIB, 2)}
    if need <= free:
        return report
    fits = next(
        (m for m in range(cfg.micro_batches + 1, MAX_MICRO_BATCHES + 1)
         if step_bytes(vlm, cfg, refs, checkpointing, m, answers) <= free),
        None,
    )  # fmt: skip
    lower = f"raise micro_batches to {fits}, or lower" if fits else "lower"
    lower += " retain_batch or the image resolution (max pixels), or use fewer forget images"
    if not checkpointing:
        lower += ", or set checkpointing='on'"
    raise ResourceError(
        f"not enough GPU memory: a step needs about {need / GIB:.1f} GiB beyond the model but {free / GIB:.1f} GiB "
        f"is free; {lower}; nothing was changed"
    )
