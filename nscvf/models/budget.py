"""GPU time budgets of a request, for ZeroGPU's ``@spaces.GPU(duration=...)`` (a Space gets the GPU for at
most that many seconds per call, and a longer budget queues visitors longer).

Pure functions, no torch: the app can compute a call's duration before anything is loaded.
"""

from __future__ import annotations

import math


def zerogpu_duration(
    steps: int, step_seconds: float = 2.0, fixed_seconds: float = 45.0, margin: float = 1.2, max_seconds: int = 300
) -> int:
    """Seconds to ask for one unlearning request of at most ``steps`` optimisation steps: ``steps x
    step_seconds`` plus ``fixed_seconds`` (references, null space, answers, evaluation), times ``margin``,
    rounded up and capped at ``max_seconds``. The per-family budgets are the adapters' ``step_seconds`` and
    ``fixed_seconds`` (``nscvf.models.base.VisionLanguageModel``): pass ``type(vlm).step_seconds`` etc.

    >>> zerogpu_duration(40)
    150
    """
    if steps < 0 or step_seconds < 0 or fixed_seconds < 0 or margin < 1:
        raise ValueError("steps and budgets must be >= 0 and margin >= 1")
    return min(max_seconds, math.ceil((steps * step_seconds + fixed_seconds) * margin))


def family_duration(vlm_or_cls, steps: int, **kwargs) -> int:
    """:func:`zerogpu_duration` with a model family's budgets (a model adapter or its class)."""
    cls = vlm_or_cls if isinstance(vlm_or_cls, type) else type(vlm_or_cls)
    return zerogpu_duration(steps, cls.step_seconds, cls.fixed_seconds, **kwargs)
