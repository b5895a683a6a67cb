"""The one configuration object of an unlearning request. Every [design] choice of METHOD.md shared by
the methods is a field here, with its help text and its valid range, checked once, when a config is made
(:meth:`UnlearnConfig.validate` from ``__post_init__``: every config that exists is valid). A method's own
argument lives on the method (NPO's ``beta``); how many renders make the world's image sets lives on
:class:`~nscvf.method.domain.WorldDomain`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from nscvf.errors import InputError

# Settings that left the shared config (issue 16): NPO's beta (now NPO(beta=...)) and the world's render
# counts (now WorldDomain's fields). Configs saved before (chain.json, exports) carry them: dropped on read.
RETIRED = (
    "baseline_beta",
    "retain_per_character",
    "retain_per_neighbour",
    "retain_per_distractor",
    "protect_per_character",
    "region_size",
)


def _f(default, help: str, lo=None, hi=None, choices=None):
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "choices": choices})


@dataclass
class UnlearnConfig:
    method: str = _f("nscvf", "unlearning method (see nscvf.method.METHODS)")
    steps: int = _f(40, "maximum optimizer steps", 1, 2000)
    lr: float = _f(2e-3, "AdamW learning rate of the LoRA parameters", 1e-6, 1e-1)
    lora_rank: int = _f(8, "LoRA rank r", 1, 256)
    lora_alpha: float = _f(16.0, "LoRA alpha (scaling = alpha / r)", 0.1, 1024)
    modules: str = _f(
        "visual", "what LoRA tunes: 'visual' (vision tower + projector) or 'projector'", choices=("visual", "projector")
    )
    first_layer: int = _f(0, "tune vision-encoder layers from this index on (0: all); the projector is always tuned", 0, 1000)
    null_space: bool = _f(True, "constrain LoRA updates to the null space of the protected inputs")
    energy: float = _f(
        5e-2,
        "null space: keep the smallest directions holding at most this fraction of the "
        "protected inputs' energy (cumulative-energy threshold)",
        1e-12,
        0.5,
    )
    relative_threshold: float | None = _f(
        None,
        "null space: instead keep eigenvalues below this x the largest (Adam-NSCL style; dominated by the mean direction)",
        1e-15,
        1.0,
    )
    tau: float = _f(0.07, "InfoNCE temperature", 0.005, 2.0)
    positive: str = _f(
        "nearest",
        "positive of the forget term: 'nearest' target-region feature or its 'prototype'",
        choices=("nearest", "prototype"),
    )
    negatives: str = _f(
        "target",
        "negatives of the forget term: the target's original features ('target', METHOD.md) or also the "
        "retained images' original features ('known': pushes the target away from every known identity)",
        choices=("target", "known"),
    )
    forget_weight: float = _f(1.0, "weight of the contrastive forget term (InfoNCE)", 0.0, 100.0)
    retain_weight: float = _f(1.0, "weight lambda of the retain feature-matching term", 0.0, 100.0)
    retain_loss: str = _f("mse", "retain term: token-level 'mse' (normalised) or 'cosine'", choices=("mse", "cosine"))
    answer_weight: float = _f(
        1.0,
        'weight of the answer-level NLL toward "I don\'t know" on forget images (METHOD.md: optional; on by default '
        "here because the feature-level loss alone moved targets to wrong names; method nscvf_feature turns it off)",
        0.0,
        100.0,
    )
    retain_batch: int = _f(32, "retain images per step", 1, 512)
    micro_batches: int = _f(
        1,
        "split each step's batch (forget views, retain images, answer sequences) into this many micro-batches and "
        "accumulate their gradients: the same gradient as one batch, less GPU memory, slower",
        1,
        64,
    )
    checkpointing: str = _f(
        "auto",
        "recompute activations in backward through the frozen LLM and the vision tower instead of keeping them "
        "(less memory, more compute): 'auto' (on for CUDA, off on CPU), 'on' or 'off'",
        choices=("auto", "on", "off"),
    )
    augment: bool = _f(True, "random crops and flips of the forget images at each step (generalise to new renderings)")
    stop_when_forgotten: bool = _f(
        True, "stop early once every forget image and its augmented views are answered as unknown (retain drift grows after)"
    )
    check_views: int = _f(3, "augmented views of each forget image that the stop check also asks about", 0, 16)
    check_every: int = _f(2, "steps between forgetting checks", 1, 1000)
    min_steps: int = _f(4, "never stop before this many steps", 0, 2000)
    max_forget_images: int = _f(64, "refuse requests with more forget images than this", 1, 4096)
    seed: int = _f(0, "random seed")
    evaluate: str = _f("quick", "evaluation before/after: 'none', 'quick' or 'full'", choices=("none", "quick", "full"))

    def __post_init__(self):
        self.validate()

    @classmethod
    def from_dict(cls, d: dict) -> UnlearnConfig:
        """A saved config (chain.json, an export, a cached record); keys of :data:`RETIRED` are dropped."""
        return cls(**{k: v for k, v in d.items() if k not in RETIRED})

    @classmethod
    def fields_help(cls) -> dict[str, dict]:
        return {f.name: {"default": f.default, **f.metadata} for f in dataclasses.fields(cls)}

    def validate(self) -> UnlearnConfig:
        """Raise InputError naming the first field out of range (called on construction; returns self)."""
        from nscvf.method.methods import all_methods  # the methods import torch; this module stays torch-free

        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
            if v is None:
                continue
            if choices and v not in choices:
                raise InputError(f"{f.name}={v!r} is not valid; choose one of {', '.join(choices)}")
            if isinstance(f.default, bool) and not isinstance(v, bool):
                raise InputError(f"{f.name} must be true or false, not {v!r}")
            if lo is not None:
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
                    raise InputError(f"{f.name}={v!r} is not a number")
                if not lo <= v <= hi:
                    raise InputError(f"{f.name}={v} is out of range; use {lo:g} to {hi:g} ({f.metadata['help']})")
        if self.method not in all_methods():
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(all_methods())}")
        if self.min_steps > self.steps:
            self.min_steps = self.steps
        return self

    def replace(self, **changes) -> UnlearnConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
