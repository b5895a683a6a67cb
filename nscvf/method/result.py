"""What a request returns and what a chain keeps of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nscvf.method.config import UnlearnConfig


@dataclass
class UnlearnResult:
    """What one request did and measured. ``to_dict()`` is the report.json payload."""

    step: int
    adapter_name: str
    method: str
    config: dict
    target: str | None
    n_forget: int
    n_retain: int
    probes_before: dict
    probes_after: dict
    eval_before: dict | None
    eval_after: dict | None
    null_space: dict
    retain_drift: dict  # against the chain's state before the request (what this request moved)
    text_identical: bool
    text_logits_identical: bool
    steps_run: int
    stopped_early: bool
    partial: bool = False  # stopped by the caller's stop signal (e.g. a time limit) before it was done
    losses: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    embeddings: dict = field(default_factory=dict)
    retain_drift_base: dict = field(default_factory=dict)  # against the original model (the whole chain)
    kind: str = "forget"  # or "teach" (nscvf.method.teach)
    measures: dict = field(default_factory=dict)  # what a kind measures besides the above (teach: the name's reach)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ChainStep:
    """One request in a chain: its adapter (live in the shared model under ``adapter``, and as a peft
    state dict on the CPU), what it forgot, and the images that protect that forgetting later."""

    name: str  # public name, "request_<k>": the adapter's folder in a saved chain
    adapter: str  # the adapter's name in the shared base model (unique in the process)
    config: UnlearnConfig
    adapter_state: dict  # peft state dict (CPU tensors), as get_peft_model_state_dict returns it
    target: str | None
    forget_fp: str
    protect_images: list  # post-unlearning protection for later requests (the forget images)
    result: UnlearnResult | None = None
    kind: str = "forget"  # or "teach"
