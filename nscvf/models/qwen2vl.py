"""Qwen2-VL / Qwen2.5-VL / Qwen3-VL family: the projector (``merger``) lives inside ``model.visual``.

Images become a variable number of visual tokens: the processor resizes each image to multiples of
``patch_size * merge_size``, flattens it into patches (``pixel_values``: (sum of patches, C*T*P*P)) and
records each image's patch grid (``image_grid_thw``); the merger fuses every 2x2 block of patch
embeddings into one LLM token. Qwen3-VL also adds DeepStack features (``model.visual.deepstack_merger_list``,
from intermediate ViT blocks) into the first LLM layers at the visual positions: they are LoRA targets like
the rest of ``model.visual``, while the CVF representation is the main merger's output.
"""

from __future__ import annotations

import torch
from transformers import AutoProcessor, PreTrainedConfig, Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from nscvf.models.base import VisionLanguageModel
from nscvf.models.registry import register


class Qwen2VLImageTextProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` for images and text, without a video processor.

    In transformers 5.x the stock Qwen2-VL / Qwen2.5-VL processors cannot be built or loaded without a
    video processor, and every video processor needs torchvision. This one has the same ``__call__``,
    chat template and token expansion (``<|image_pad|>`` repeated once per merged visual token).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class _ImageTextProcessorConfig(PreTrainedConfig):
    # Only a key for AutoProcessor's registry, so that AutoProcessor.from_pretrained finds
    # Qwen2VLImageTextProcessor by the class name a saved processor_config.json records.
    model_type = "nscvf_qwen2_vl_image_text"


AutoProcessor.register(_ImageTextProcessorConfig, Qwen2VLImageTextProcessor, exist_ok=True)


@register
class Qwen2VLModel(VisionLanguageModel):
    family = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    # Qwen2-VL resizes each image to a pixel budget (its processor's default: up to 28 * 28 * 1280 pixels, 1280
    # visual tokens). Unlearning caps it at 448 x 448 (256 visual tokens after the 2 x 2 merge; LLaVA-1.5 sees
    # 576 at its fixed 336 px): the answer term back-propagates through the LLM over every visual token.
    unlearn_max_pixels = 448 * 448

    def image_kwargs(self) -> dict:
        """``size={"shortest_edge": min_pixels, "longest_edge": max_pixels}`` (transformers 5's names for Qwen's
        pixel budget) with the longest edge capped at ``unlearn_max_pixels``."""
        cap = self.unlearn_max_pixels
        size = getattr(self.processor.image_processor, "size", None)
        size = size if isinstance(size, dict) else vars(size) if size is not None else {}
        lo, hi = size.get("shortest_edge"), size.get("longest_edge")
        if cap is None or lo is None or hi is None or hi <= cap:
            return {}
        return {"size": {"shortest_edge": min(lo, cap), "longest_edge": cap}}

    @classmethod
    def load_processor(cls, source: str):
        try:
            return AutoProcessor.from_pretrained(source)
        except (ImportError, OSError):
            # The stock processor wants a video processor: ImportError without torchvision, OSError where the
            # checkpoint has no video_preprocessor_config.json. Images and text need neither.
            return Qwen2VLImageTextProcessor.from_pretrained(source)

    def vision_tower(self) -> torch.nn.Module:
        return self.base.model.visual

    def projector(self) -> torch.nn.Module:
        return self.base.model.visual.merger

    def language_model(self) -> torch.nn.Module:
        return self.base.model.language_model

    def visual_modules(self) -> dict[str, torch.nn.Module]:
        # The merger is inside the tower: one module covers both (listing both would name its linears twice).
        names = {id(m): n for n, m in self.base.named_modules()}
        v = self.vision_tower()
        return {names[id(v)]: v}

    def project_images(self, inputs: dict) -> list[torch.Tensor]:
        # transformers 5: an output object whose pooler_output is the merger output split per image
        # (a tuple of (grid_t * grid_h * grid_w / merge_size**2, text hidden) tensors); last_hidden_state
        # is the pre-merger patch sequence of all images together (Qwen3-VL: plus deepstack_features).
        out = self.base.model.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return list(feats)
