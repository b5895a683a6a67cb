"""What a ZeroGPU call carries, as plain CPU data: the session's chain (:class:`ChainState`), a request
(:class:`ForgetJob`, :class:`TeachJob`, :class:`RelearnJob`, :class:`EvaluateJob`, :class:`AskJob`,
:class:`IdentifyJob`) and what comes back (:class:`Progress`, :class:`StepOutcome`, :class:`Done`,
:class:`Failed`; :class:`Stopped` when the caller closes a job). See :mod:`nscvf.zerogpu`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nscvf import errors
from nscvf.errors import Cancelled, InputError, NSCVFError

# ------------------------------------------------------------------------------------ what a call carries


@dataclass(frozen=True)
class StepState:
    """One request of a chain as plain data: its result (``UnlearnResult.to_dict()``), its adapter's peft
    state dict (CPU tensors) and its images (the forget images, which protect it in later requests)."""

    result: dict
    adapter_state: dict
    images: tuple


@dataclass(frozen=True)
class ChainState:
    """A session's chain as plain data: the base model (``source`` to load it in a fresh process,
    ``fingerprint`` to check it), the disk cache's folder (None: a per-process memory cache), the family's
    GPU budgets (the durations) and the requests in order."""

    source: str
    fingerprint: str
    step_seconds: float
    fixed_seconds: float
    steps: tuple = ()
    cache_dir: str | None = None
    domain: object = None  # the chain's Domain (its image-set sizes); None: the model's default

    def __len__(self) -> int:
        return len(self.steps)


def chain_state(chain, upto: int | None = None) -> ChainState:
    """The state of ``chain`` after its first ``upto`` requests (default: all) as :class:`ChainState`."""
    steps = chain.steps[: len(chain.steps) if upto is None else upto]
    if any(s.result is None for s in steps):
        raise InputError("a request of this chain has no result (saved without report.json): it cannot be replayed")
    cls = type(chain.base_vlm)
    return ChainState(
        source=chain.shared.source,
        fingerprint=chain.shared.fingerprint,
        step_seconds=float(cls.step_seconds),
        fixed_seconds=float(cls.fixed_seconds),
        steps=tuple(StepState(s.result.to_dict(), s.adapter_state, tuple(s.protect_images)) for s in steps),
        cache_dir=None if chain.cache.directory is None else str(chain.cache.directory),
        domain=chain.domain,
    )


@dataclass(frozen=True)
class ForgetJob:
    """One forget request (also a comparison: the same request with another method, on the chain's state
    before it). ``stop_after_s``: seconds after the start at which training stops and what it learned is
    kept (a partial request). ``then``: a module-level function ``then(chain, result)`` run in the same call
    with the new step applied (e.g. the retained characters' answers); its value comes back as ``extra``."""

    images: tuple
    config: object  # UnlearnConfig
    retain: tuple | None = None
    target: str | None = None
    region_images: tuple | None = None
    stop_after_s: float | None = None
    then: Callable | None = None


@dataclass(frozen=True)
class TeachJob:
    """Teach ``name`` (and ``facts``) from ``images`` (``config``: a TeachConfig; None: its defaults)."""

    images: tuple
    name: str
    facts: dict | None = None
    config: object = None
    then: Callable | None = None


@dataclass(frozen=True)
class RelearnJob:
    """The relearning probe ("bring it back"): relearn ``name`` from ``images`` on the chain's model and,
    when ``reference_images`` is given, on the base model (the reference), asking about the held-out sets."""

    images: tuple
    heldout: tuple
    name: str
    steps: int = 20
    reference_images: tuple | None = None
    reference_heldout: tuple | None = None
    config: object = None  # UnlearnConfig (None: its defaults)


@dataclass(frozen=True)
class EvaluateJob:
    """Evaluate the chain's states ``states`` ((label, k) pairs; k requests, 0 = the base) about ``target``."""

    target: str
    mode: str = "quick"
    states: tuple = (("before", None), ("after", None))  # None: the last state minus one / the last state


@dataclass(frozen=True)
class AskJob:
    """One question (about ``image``, or text only) to the base model and the chain's model."""

    question: str
    image: object = None
    max_new_tokens: int = 24


@dataclass(frozen=True)
class IdentifyJob:
    """Who the base model says ``images`` show, before any training (``given``: the name typed, checked)."""

    images: tuple
    given: str | None = None


@dataclass(frozen=True)
class Progress:
    stage: str
    done: int = 0
    total: int = 1
    elapsed: float = 0.0


@dataclass(frozen=True)
class StepOutcome:
    """A new request for the session's chain: ``result`` (``UnlearnResult.to_dict()``: answers, numbers and
    the plot data under ``embeddings``), its adapter's weights (CPU) and the ``then`` hook's value."""

    result: dict
    adapter_state: dict
    extra: object = None


@dataclass(frozen=True)
class Done:
    value: object


@dataclass(frozen=True)
class Failed:
    """An error inside the call, as data (a ZeroGPU worker would keep only the class name)."""

    error: str  # the class name (an nscvf.errors class is raised again as itself)
    message: str
    trace: str = ""

    def exception(self) -> BaseException:
        cls = getattr(errors, self.error, None)
        if isinstance(cls, type) and issubclass(cls, NSCVFError):
            return cls(self.message)
        return RuntimeError(f"{self.error}: {self.message}\n{self.trace}".rstrip())


class Stopped(Cancelled):
    """A job closed by the caller: ``reason`` is "cancelled" or "time limit"; the session is unchanged."""

    def __init__(self, reason: str):
        super().__init__(f"{reason}; the model is unchanged")
        self.reason = reason
