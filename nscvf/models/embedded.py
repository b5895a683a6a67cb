"""The embedded default: a tiny LLaVA (CLIP vision tower -> MLP projector -> Llama) built offline.

``build_untrained(out_dir)`` writes an untrained model with its tokenizer (trained here with
``tokenizers`` on the world's text) and processor; ``nscvf.train_base`` trains it. The trained model is
committed under ``assets/model``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from nscvf import world
from nscvf.source import ASSETS_DIR, EMBEDDED_MODEL_DIR  # noqa: F401  (defined where app.py can read them early)

IMAGE_TOKEN = "<image>"
# Short and fixed (FIELD.md: long prompts make small models degenerate). Mirrors LLaVA-1.5's format.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@dataclass
class EmbeddedArch:
    """Sizes of the embedded model. Small enough to train on 2 CPU cores; a real LLaVA layout."""

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vocab_size: int = 640


def train_tokenizer(vocab_size: int, corpus: list[str] | None = None) -> Tokenizer:
    """A byte-level BPE over ``corpus`` (default: the world's questions and answers) and chat-format words."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", IMAGE_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    if corpus is None:  # the world's order, kept: the merges (and the tiny test models' tokens) depend on it
        corpus = world.all_template_texts() + ["USER: ASSISTANT:"] * 50
        corpus += [" ".join(world.TOWNS + world.JOBS + world.FOODS + world.NAMES)] * 5
    else:
        corpus = list(corpus) + ["USER: ASSISTANT:"] * 50
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def build_processor(arch: EmbeddedArch):
    from transformers import (  # transformers: heavy, only when a model is built (the tokenizer needs none)
        CLIPImageProcessorPil,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(arch.vocab_size),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token=None,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=256,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": arch.image_size},
        crop_size={"height": arch.image_size, "width": arch.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=arch.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )


def build_config(arch: EmbeddedArch, tokenizer):
    from transformers import (  # transformers: heavy, only when a model is built (the tokenizer needs none)
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
    )

    vision = CLIPVisionConfig(
        hidden_size=arch.vision_hidden,
        intermediate_size=4 * arch.vision_hidden,
        num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        projection_dim=arch.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.text_hidden,
        intermediate_size=4 * arch.text_hidden,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads,
        num_key_value_heads=arch.text_heads,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(arch.image_size // arch.patch_size) ** 2,
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def build_untrained(arch: EmbeddedArch | None = None, seed: int = 0):
    """Return (model, processor) with random weights and the project's tokenizer and processor."""
    import torch  # torch: heavy, only when a model is built
    from transformers import LlavaForConditionalGeneration  # transformers: as torch

    arch = arch or EmbeddedArch()
    processor = build_processor(arch)
    config = build_config(arch, processor.tokenizer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.bos_token_id = processor.tokenizer.bos_token_id
    return model, processor
