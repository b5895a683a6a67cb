"""Load any supported MLLM by Hugging Face id or local path behind one interface.

``load_model()`` with no source loads ``$NSCVF_MODEL`` or, unset, the embedded default under assets/.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nscvf.errors import ModelLoadError
from nscvf.models import (
    efficientnet,  # noqa: F401  (registers the photo model's tower with AutoConfig/AutoModel)
    llava,  # noqa: F401  (registers the family)
    qwen2vl,  # noqa: F401
)
from nscvf.models.base import VisionLanguageModel
from nscvf.models.registry import FAMILIES
from nscvf.source import default_source, resolve_source

__all__ = ["FAMILIES", "VisionLanguageModel", "default_source", "load_model", "wrap_model"]


def pick_device_dtype(device: str | None = None, dtype: str | None = None):
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype in (None, "auto"):
        torch_dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    else:
        torch_dtype = {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }.get(dtype)
        if torch_dtype is None:
            raise ModelLoadError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return device, torch_dtype


def wrap_model(model, processor, source: str = "<in memory>") -> VisionLanguageModel:
    """Wrap an already-built transformers model and processor in its family adapter."""
    model_type = model.config.model_type
    cls = FAMILIES.get(model_type)
    if cls is None:
        raise ModelLoadError(f"model type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}")
    return cls(model, processor, source)


def load_model(
    source: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> VisionLanguageModel:
    """Load a model (HF id or local directory) and its processor. A saved unlearning result loads on top
    with ``UnlearningChain.load(vlm, folder)`` (its ``.vlm`` is the model in that state)."""
    from transformers import AutoConfig, AutoModelForImageTextToText  # transformers: model classes, only when one loads

    source = resolve_source(source) if source else default_source()
    local = Path(source).expanduser()
    if local.exists() and not (local / "config.json").exists():
        raise ModelLoadError(f"{source}: folder has no config.json; point at a saved model folder")
    if not local.exists() and (source.startswith((".", "/", "~")) or os.sep in source and source.count("/") > 1):
        raise ModelLoadError(f"{source}: no such model folder; check the path or give a Hugging Face id")
    device, torch_dtype = pick_device_dtype(device, dtype)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot load model {source!r}: {first[:200]} (use a local folder or a Hugging Face id reachable "
            "from this machine; set NSCVF_MODEL or --model)"
        ) from None
    if config.model_type not in FAMILIES:
        raise ModelLoadError(
            f"{source}: model type {config.model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        )
    try:
        kwargs = {"dtype": torch_dtype}
        if device_map:
            kwargs["device_map"] = device_map
        model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
        processor = FAMILIES[config.model_type].load_processor(source)
    except (OSError, ValueError, ImportError) as e:
        raise ModelLoadError(f"cannot load model {source!r}: {str(e).splitlines()[0][:200]}") from None
    if not device_map:
        model.to(device)
    model.eval()
    return wrap_model(model, processor, source)
