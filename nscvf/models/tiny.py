"""Tiny random-weight models of every supported family, built offline (peft/timm-style test fixtures).

Each builder returns ``(model, processor)``, seeded, small enough that a forward pass takes milliseconds on
a CPU core. The tokenizer is the project's offline BPE (``nscvf.models.embedded.train_tokenizer``), with each
family's special tokens added and a short chat template that emits them. The tests build their models here;
``scripts/gpu_check.py`` builds the same layouts at real sizes with :func:`llava_processor`,
:func:`qwen_processor` and :func:`finish`.
"""

from __future__ import annotations

from functools import cache

import torch
from transformers import PreTrainedTokenizerFast

from nscvf.models import embedded
from nscvf.models.qwen2vl import Qwen2VLImageTextProcessor

VOCAB = 320  # BPE merges over the world's text; enough for short questions and answers

# ---------------------------------------------------------------- LLaVA (vision tower + projector beside the LLM)

LLAVA_IMAGE_SIZE = 32
LLAVA_PATCH = 8


@cache
def _bpe():
    return embedded.train_tokenizer(VOCAB)


def llava_processor(image_processor, num_additional_image_tokens: int):
    """A LLaVA processor over the offline BPE (``num_additional_image_tokens``: 1 when the tower has a CLS token)."""
    from transformers import LlavaProcessor  # transformers: only the family built

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token=None,
        extra_special_tokens={"image_token": embedded.IMAGE_TOKEN},
        padding_side="left", model_max_length=256,
    )  # fmt: skip
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default" if num_additional_image_tokens else "full",
        chat_template=embedded.CHAT_TEMPLATE, num_additional_image_tokens=num_additional_image_tokens,
        image_token=embedded.IMAGE_TOKEN,
    )  # fmt: skip


def _text_config(kind: str, tok, hidden: int = 64, layers: int = 2, heads: int = 4):
    from transformers import LlamaConfig, Qwen2Config  # transformers: only the family built

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    return cls(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip


def finish(model, tok):
    """The model in eval mode, generating with the tokenizer's special tokens."""
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.eval()
    return model


def build_llava_clip(seed: int = 0):
    """LLaVA-1.5 layout: CLIP ViT (penultimate layer, CLS token dropped) -> 2-layer MLP projector -> Llama."""
    from transformers import (  # transformers: only the family built
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    s = LLAVA_IMAGE_SIZE
    ip = CLIPImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
    processor = llava_processor(ip, num_additional_image_tokens=1)
    tok = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=s, patch_size=LLAVA_PATCH, projection_dim=32,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=_text_config("llama", tok),
        image_token_id=tok.convert_tokens_to_ids(embedded.IMAGE_TOKEN),
        vision_feature_layer=-2,  # as LLaVA-1.5: the last encoder layer never reaches the LLM
        vision_feature_select_strategy="default", image_seq_length=(s // LLAVA_PATCH) ** 2,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return finish(LlavaForConditionalGeneration(config), tok), processor


def build_llava_siglip(seed: int = 0):
    """LLaVA-interleave / onevision-style layout: SigLIP ViT (no CLS; every patch kept) -> MLP -> Qwen2 LLM."""
    from transformers import (  # transformers: only the family built
        LlavaConfig,
        LlavaForConditionalGeneration,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    s = LLAVA_IMAGE_SIZE
    ip = SiglipImageProcessorPil(size={"height": s, "width": s})
    processor = llava_processor(ip, num_additional_image_tokens=0)
    tok = processor.tokenizer
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=s, patch_size=LLAVA_PATCH,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=_text_config("qwen2", tok),
        image_token_id=tok.convert_tokens_to_ids(embedded.IMAGE_TOKEN), vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_seq_length=(s // LLAVA_PATCH) ** 2,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return finish(LlavaForConditionalGeneration(config), tok), processor


# ---------------------------------------------------------------- Qwen2-VL / Qwen2.5-VL (merger inside model.visual)

QWEN_PATCH = 7
QWEN_MERGE = 2
QWEN_IMAGE_SIZE = 28  # every image is resized to 28x28 -> 4x4 patches -> 2x2 = 4 merged visual tokens
QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen's chat format, shortened: no system prompt (FIELD.md: keep prompts short and fixed).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_processor():
    from transformers import Qwen2VLImageProcessorPil  # transformers: only the family built

    bpe = _bpe()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<pad>", unk_token=None,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        padding_side="left", model_max_length=256,
    )  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    # Qwen tokenizers add no BOS: drop the embedded tokenizer's "<s> $A" template.
    tok.backend_tokenizer.post_processor = None
    px = QWEN_IMAGE_SIZE**2
    ip = Qwen2VLImageProcessorPil(
        size={"shortest_edge": px, "longest_edge": px}, patch_size=QWEN_PATCH, merge_size=QWEN_MERGE, temporal_patch_size=2
    )
    # The stock Qwen2VLProcessor / Qwen2_5_VLProcessor need a torchvision video processor (see qwen2vl.py).
    return Qwen2VLImageTextProcessor(image_processor=ip, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)


def _qwen_config(family: str, tok):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig  # transformers: only the family built

    hidden, heads = 64, 4
    text = dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},  # sums to head_dim/2
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    ids = {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }
    if family == "qwen3_vl":
        text["head_dim"] = hidden // heads
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=QWEN_PATCH,
            spatial_merge_size=QWEN_MERGE, temporal_patch_size=2, num_position_embeddings=16,
            deepstack_visual_indexes=[0],  # block 0's merged output is added into the LLM's first layers
        )  # fmt: skip
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    if family == "qwen2_vl":
        vision = dict(
            depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=QWEN_PATCH,
            spatial_merge_size=QWEN_MERGE, temporal_patch_size=2,
        )  # fmt: skip
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=QWEN_PATCH,
        spatial_merge_size=QWEN_MERGE, temporal_patch_size=2,
        window_size=QWEN_PATCH * QWEN_MERGE,  # one merged token per window: block 0 windowed, block 1 full
        fullatt_block_indexes=[1],
    )  # fmt: skip
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)


def build_qwen2_vl(seed: int = 0, family: str = "qwen2_vl"):
    """Qwen2-VL: ViT with 2x2 patch merger (``model.visual.merger``) -> Qwen2 LLM with M-RoPE."""
    from transformers import (  # transformers: only the family built
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    processor = qwen_processor()
    tok = processor.tokenizer
    config = _qwen_config(family, tok)
    cls = {
        "qwen2_vl": Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": Qwen3VLForConditionalGeneration,
    }[family]
    torch.manual_seed(seed)
    return finish(cls(config), tok), processor


def build_qwen2_5_vl(seed: int = 0):
    """Qwen2.5-VL: windowed-attention ViT, RMSNorm/SwiGLU blocks, merger inside ``model.visual``."""
    return build_qwen2_vl(seed, family="qwen2_5_vl")


def build_qwen3_vl(seed: int = 0):
    """Qwen3-VL: learned + rotary positions in the ViT, DeepStack mergers feeding early LLM layers."""
    return build_qwen2_vl(seed, family="qwen3_vl")


# family id -> (builder, expected adapter family)
BUILDERS = {
    "llava_clip": (build_llava_clip, "llava"),
    "llava_siglip": (build_llava_siglip, "llava"),
    "qwen2_vl": (build_qwen2_vl, "qwen2_vl"),
    "qwen2_5_vl": (build_qwen2_5_vl, "qwen2_vl"),
    "qwen3_vl": (build_qwen3_vl, "qwen2_vl"),
}


def save_tiny(name: str, out_dir, seed: int = 0):
    """Build family ``name`` and save model + processor to ``out_dir`` (a loadable checkpoint folder)."""
    model, processor = BUILDERS[name][0](seed)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return model, processor
