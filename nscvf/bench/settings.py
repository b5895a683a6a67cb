"""The benchmark grid's settings: which methods on which targets, how many seeds, the shared budget.
Torch-free (the CLI builds them before anything heavy loads)."""

from __future__ import annotations

from dataclasses import dataclass

from nscvf import world
from nscvf.bench.evidence import GOLD_TARGETS
from nscvf.method.config import UnlearnConfig
from nscvf.source import default_source, resolve_source

QUICK_TARGETS = GOLD_TARGETS
QUICK_METHODS = ["nscvf", "cvf", "gd", "npo"]
METHOD_ORDER = ["nscvf", "nscvf_feature", "cvf", "nscvf_projector", "ga", "gd", "kl", "npo"]
NOTE = (
    "every method tunes the visual module only (LoRA on vision tower + projector; projector only for "
    "nscvf_projector); the language model is frozen. Same 8 forget images (training renders), step budget and "
    "early stop (every forget image and 3 augmented views of each answered as unknown). nscvf, cvf and "
    "nscvf_projector use the answer-level term (answer_weight=1); nscvf_feature is nscvf without it."
)


@dataclass(frozen=True)
class BenchSettings:
    """The grid: which methods on which targets, how many seeds, and the shared budget."""

    quick: bool = False  # the gold-reference targets and 4 methods (unless targets/methods are given)
    steps: int | None = None  # step budget (None: UnlearnConfig's)
    methods: tuple[str, ...] | None = None  # None: QUICK_METHODS or METHOD_ORDER
    targets: tuple[str, ...] | None = None  # None: QUICK_TARGETS or every named character
    renders: int = 3  # evaluation renders per character and split
    seeds: int = 3  # seeds 0..seeds-1 per target
    relearn: bool = True  # the relearning attack after each request
    continual_n: int = 8  # sequential requests of the continual run (0: none; quick: at most 4)
    model: str = "world"  # "photo": the photo model's grid (nscvf.bench.photo), measured with its own evaluation

    @property
    def target_names(self) -> list[str]:
        if self.model == "photo":
            from nscvf.bench.photo import TARGETS  # torch-free; the photo grid's targets

            return list(self.targets or TARGETS)
        return list(self.targets or (QUICK_TARGETS if self.quick else [c.name for c in world.CHARACTERS]))

    @property
    def source(self) -> str:
        """What the workers load: ``$NSCVF_MODEL`` or the drawn world for its grid, else the named model."""
        return default_source() if self.model == "world" else resolve_source(self.model)

    @property
    def has_continual(self) -> bool:
        """The continual run is the drawn world's (sequential requests on its characters)."""
        return bool(self.continual_n) and self.model == "world"

    @property
    def method_names(self) -> list[str]:
        return list(self.methods or (QUICK_METHODS if self.quick else METHOD_ORDER))

    @property
    def continual_targets(self) -> list[str]:
        return [c.name for c in world.CHARACTERS][: min(self.continual_n, 4) if self.quick else self.continual_n]

    def config(self, method: str | None = None, seed: int = 0) -> UnlearnConfig:
        """The request's configuration: UnlearnConfig's defaults, the budget, no evaluation inside."""
        changes = {"evaluate": "none", "seed": seed} | ({"method": method} if method else {})
        return UnlearnConfig().replace(**changes, **({"steps": self.steps} if self.steps else {}))

    def measures_warm(self, target: str, seed: int) -> bool:
        """The first cell of a method process repeats its request on the warm cache (the drawn world's grid)."""
        return self.model == "world" and seed == 0 and target == self.target_names[0]
