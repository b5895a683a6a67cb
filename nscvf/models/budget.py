"""GPU time budgets of a request, for ZeroGPU's ``@spaces.GPU(duration=...)`` (a Space gets the GPU for at
most that many seconds per call, and a longer budget queues visitors longer).

Pure functions (this module uses no torch; the ``nscvf.models`` package around it does). The budgets
are a model family's ``step_seconds`` and ``fixed_seconds`` (:class:`nscvf.models.base.VisionLanguageModel`).
The seconds are ZeroGPU's own unit: on cards slower than an H200 it lets a call run ``duration_factor``
times longer (x1.5 on RTX PRO 6000) unless ``size="xlarge"``, so nothing here scales them.
"""

from __future__ import annotations

import math

from nscvf.errors import InputError

# The most one call may ask for: 300 s for logged-in visitors (ZeroGPU refuses a longer duration); anonymous
# visitors' quota makes ~120 s the practical limit for them.
ZEROGPU_MAX_SECONDS = 300
ZEROGPU_ANONYMOUS_SECONDS = 120
MARGIN = 1.2
# What a job costs in units of the family budgets, besides its optimisation steps: an evaluation of one
# chain state is about half of a request's fixed budget (quick; a full one twice that), two short answers a
# fifth. Estimates from the CPU timings (no GPU measurement of these jobs yet).
EVALUATION_SHARE = 0.5
ASK_SHARE = 0.2
JOB_KINDS = ("forget", "compare", "teach", "relearn", "evaluate", "ask", "identify")


def zerogpu_duration(
    steps: int, step_seconds: float = 2.0, fixed_seconds: float = 45.0, margin: float = MARGIN,
    max_seconds: int = ZEROGPU_MAX_SECONDS,
) -> int:  # fmt: skip
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


def job_budget(kind: str, steps: int = 0, fixed_seconds: float = 45.0, states: int = 2, mode: str = "quick",
               runs: int = 2) -> tuple[int, float]:  # fmt: skip
    """A job of ``kind`` as (optimisation steps, fixed seconds), the two inputs of :func:`zerogpu_duration`.

    forget / compare / teach: ``steps`` and the request's fixed budget (a comparison replays the session's
    earlier adapters without training: no extra steps). relearn: ``runs`` probes (the session's model and the
    reference) of ``steps`` each, plus the fixed budget for their answers. evaluate: ``states`` evaluations
    (``mode`` "full" costs twice "quick"). ask, identify: a few short answers."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; one of {', '.join(JOB_KINDS)}")
    if kind in ("forget", "compare", "teach"):
        return steps, fixed_seconds
    if kind == "relearn":
        return runs * steps, fixed_seconds
    if kind == "evaluate":
        return 0, states * fixed_seconds * EVALUATION_SHARE * (2 if mode == "full" else 1)
    return 0, fixed_seconds * ASK_SHARE


def job_duration(kind: str, step_seconds: float, fixed_seconds: float, max_seconds: int = ZEROGPU_MAX_SECONDS,
                 margin: float = MARGIN, **job) -> int:  # fmt: skip
    """The ``duration`` of one ZeroGPU call running a job of ``kind`` (:func:`job_budget`'s keywords in
    ``job``), capped at ``max_seconds``."""
    steps, fixed = job_budget(kind, fixed_seconds=fixed_seconds, **job)
    return zerogpu_duration(steps, step_seconds, fixed, margin, max_seconds)


def check_fits(kind: str, step_seconds: float, fixed_seconds: float, max_seconds: int = ZEROGPU_MAX_SECONDS,
               margin: float = MARGIN, **job) -> int:  # fmt: skip
    """The job's duration, or :class:`~nscvf.errors.InputError` (before anything runs) when its estimate is
    longer than one call may take; the message names the most steps that fit."""
    steps, fixed = job_budget(kind, fixed_seconds=fixed_seconds, **job)
    need = zerogpu_duration(steps, step_seconds, fixed, margin, max_seconds=10**9)
    if need <= max_seconds:
        return need
    per = job_budget(kind, fixed_seconds=0, **(job | {"steps": 1}))[0]  # optimisation steps per step asked
    fit = math.floor((max_seconds / margin - fixed) / (step_seconds * per)) if per and step_seconds else 0
    if fit >= 1:
        lower = f"use at most {fit} steps"
    elif kind == "evaluate" and job.get("mode") == "full":
        lower = "use the quick evaluation, or a dedicated-GPU Space"
    else:
        lower = "use a smaller model, or a dedicated-GPU Space (no per-call limit)"
    raise InputError(
        f"this {kind} needs about {need} s of GPU time and one ZeroGPU call may take at most {max_seconds} s: {lower}"
    )
