"""The photo model (issue 17): a real LLaVA whose vision tower is the pretrained EfficientNet-Lite0.

``build(arch, corpus, tower)`` returns ``(model, processor)``: the tower (pretrained, or random for tests), a
2-layer projector from its image token (the ImageNet head's class probabilities; or its 1280 features: 49 spatial
tokens and their global average pool) to a small Llama, and a BPE tokenizer trained offline on ``corpus``
(the concept table's questions and answers). ``nscvf train-base --photo`` trains the projector and the language
model; the result is committed under ``assets/photo_model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nscvf.models import embedded
from nscvf.models.efficientnet import PIXEL_MEAN, PIXEL_STD, EfficientNetLiteConfig, EfficientNetLiteVisionModel


@dataclass
class PhotoArch:
    """Sizes of the photo model's language stage (the tower is Lite0's, or ``vision`` for a tiny test tower)."""

    image_size: int = 224
    text_hidden: int = 256  # = the projector width: one channel per concept class (220) + the mean logit
    text_layers: int = 2
    text_intermediate: int = 512
    text_heads: int = 4
    vocab_size: int = 1200
    tunable_blocks: int = 4  # LoRA on the 1x1 convs of the last blocks and the head (plus the projector)
    image_tokens: str = "head"  # the tower's image_tokens_kind: "head" (one token, the ImageNet head's class
    # probabilities: the committed model), "pooled" (the pooled features), "spatial+pooled" or "spatial"
    vision: dict | None = None  # EfficientNetLiteConfig overrides (tests: a tiny tower)


def build_processor(arch: PhotoArch, corpus: list[str], patch_size: int, extra_tokens: int = 1):
    """``patch_size``: pixels a side per spatial image token; ``extra_tokens``: tokens after them (the pooled one)."""
    from transformers import (  # transformers: heavy, only when a model is built
        CLIPImageProcessorPil,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    tok = PreTrainedTokenizerFast(
        tokenizer_object=embedded.train_tokenizer(arch.vocab_size, corpus),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token=None,
        extra_special_tokens={"image_token": embedded.IMAGE_TOKEN},
        padding_side="left", model_max_length=512,
    )  # fmt: skip
    s = arch.image_size
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": s}, crop_size={"height": s, "width": s}, image_mean=PIXEL_MEAN, image_std=PIXEL_STD
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch_size, vision_feature_select_strategy="full",
        chat_template=embedded.CHAT_TEMPLATE, num_additional_image_tokens=extra_tokens, image_token=embedded.IMAGE_TOKEN,
    )  # fmt: skip


def build_config(arch: PhotoArch, tokenizer, vision: EfficientNetLiteConfig):
    from transformers import LlamaConfig, LlavaConfig  # transformers: heavy, only when a model is built

    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=arch.text_hidden, intermediate_size=arch.text_intermediate,
        num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_heads,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(embedded.IMAGE_TOKEN),
        vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_seq_length=vision.image_token_count, projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip


def build(arch: PhotoArch, corpus: list[str], tower: EfficientNetLiteVisionModel | None = None, seed: int = 0):
    """(model, processor): ``tower``'s weights (e.g. :func:`nscvf.models.efficientnet.load_pretrained_lite0`) in
    a new LLaVA, or a random tower of ``arch.vision``'s sizes; the projector and language model random."""
    from transformers import LlavaForConditionalGeneration  # transformers: as above

    vision = EfficientNetLiteConfig(image_size=arch.image_size, tunable_blocks=arch.tunable_blocks,
                                    image_tokens_kind=arch.image_tokens,
                                    **(arch.vision or {}))  # fmt: skip
    processor = build_processor(arch, corpus, *vision.image_tokens())
    config = build_config(arch, processor.tokenizer, vision)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    if tower is not None:
        model.model.vision_tower.load_state_dict(tower.state_dict())
    tok = processor.tokenizer
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model.eval(), processor


# A tower small enough for tests (milliseconds per image at 32 px; 16 tokens, plus the pooled one).
TINY_VISION = {"stages": [[1, 3, 1, 1, 8, 8], [1, 3, 2, 2, 8, 12], [2, 3, 2, 2, 12, 16]], "stem_channels": 8,
               "hidden_size": 24, "num_classes": 10}  # fmt: skip


def build_tiny(seed: int = 0, corpus: list[str] | None = None, image_tokens: str = "spatial+pooled"):
    """A random-weight photo model of test size: a 3-stage tower at 32 px (16 + 1 pooled tokens, or as
    ``image_tokens`` says), a 2-layer Llama."""
    corpus = corpus or ["What is this? This is a cat. I don't know what this is. An animal."] * 20
    arch = PhotoArch(image_size=32, text_hidden=64, text_layers=2, text_intermediate=128, vocab_size=320, tunable_blocks=2,
                     image_tokens=image_tokens, vision=TINY_VISION)  # fmt: skip
    return build(arch, corpus, seed=seed)
