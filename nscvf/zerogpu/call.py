"""The main process's side of a ZeroGPU call: each job's duration (:func:`duration`, :func:`check_fits`),
the job decorated with ``spaces.GPU`` (:func:`gpu_job`) and :func:`run`. See :mod:`nscvf.zerogpu`."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

from nscvf.method.teach import TeachConfig
from nscvf.models import budget
from nscvf.zerogpu.jobs import JOBS
from nscvf.zerogpu.state import ChainState, Done, Failed, Progress, Stopped

# ------------------------------------------------------------------------------------ durations


def budget_of(kind: str, state: ChainState, request) -> dict:
    """:func:`nscvf.models.budget.job_budget`'s keywords for ``request``."""
    if kind in ("forget", "compare"):
        return {"steps": int(request.config.steps)}
    if kind == "teach":
        return {"steps": int((request.config or TeachConfig()).steps)}
    if kind == "relearn":
        return {"steps": int(request.steps), "runs": 1 + (request.reference_images is not None)}
    if kind == "evaluate":
        return {"states": len(request.states), "mode": request.mode}
    return {}


def duration(kind: str, max_seconds: int = budget.ZEROGPU_MAX_SECONDS) -> Callable:
    """The ``duration`` callable of ``spaces.GPU`` for a job of ``kind``: called with the job's arguments
    (state, request), it returns the seconds to ask for, from the request's steps and the family's budgets,
    capped at ``max_seconds`` (never raises: :func:`check_fits` refuses before the call)."""

    def seconds(state: ChainState, request) -> int:
        return budget.job_duration(kind, state.step_seconds, state.fixed_seconds, max_seconds, **budget_of(kind, state, request))

    seconds.__name__ = f"{kind}_duration"
    return seconds


def max_seconds() -> int:
    """The most one call may take: ``$NSCVF_GPU_MAX_S`` (e.g. 120 for a Space used anonymously), else 300."""
    try:
        return max(1, min(budget.ZEROGPU_MAX_SECONDS, int(os.environ.get("NSCVF_GPU_MAX_S") or budget.ZEROGPU_MAX_SECONDS)))
    except ValueError:
        return budget.ZEROGPU_MAX_SECONDS


def check_fits(kind: str, state: ChainState, request, limit: int | None = None) -> int:
    """The call's duration, or InputError (before anything runs) when the job cannot fit one call."""
    return budget.check_fits(
        kind, state.step_seconds, state.fixed_seconds, limit or max_seconds(), **budget_of(kind, state, request)
    )


# ------------------------------------------------------------------------------------ decorating and running


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (``SPACES_ZERO_GPU`` set), where ``spaces.GPU`` sends calls to a worker."""
    return (os.environ.get("SPACES_ZERO_GPU") or "").strip().lower() in ("1", "t", "true")


def spaces_gpu():
    """``spaces.GPU`` when the package is importable (a no-op off ZeroGPU), else None."""
    try:
        import spaces  # type: ignore
    except ImportError:
        return None
    return spaces.GPU


@functools.cache
def gpu_job(kind: str, gpu=None) -> Callable:
    """The job of ``kind`` decorated with ``gpu`` (default ``spaces.GPU``, when importable) and its
    :func:`duration` callable; undecorated when there is no ``spaces``."""
    if kind not in JOBS:
        raise ValueError(f"unknown job kind {kind!r}; one of {', '.join(JOBS)}")
    gpu = gpu or spaces_gpu()
    fn = JOBS[kind]
    return fn if gpu is None else gpu(fn, duration=duration(kind, max_seconds()))


def run(kind: str, state: ChainState, request, progress=None, cancel=None, time_limit: float | None = None, gpu=None,
        limit: int | None = None):  # fmt: skip
    """Run one job in one (ZeroGPU) call and return its value (:class:`StepOutcome` for forget, compare and
    teach; a dict for relearn, evaluate, ask and identify). ``progress(stage, done, total)`` gets each
    :class:`Progress`; ``cancel`` (an Event) or ``time_limit`` (seconds) close the job: :class:`Stopped`.
    On ZeroGPU (or with a ``gpu`` stand-in that has a per-call limit) a job that cannot fit one call is
    refused first (:func:`check_fits`, InputError)."""
    if on_zerogpu() or limit is not None or getattr(gpu, "max_seconds", None):
        check_fits(kind, state, request, limit or getattr(gpu, "max_seconds", None))
    fn = gpu_job(kind, gpu)
    if kind in ("ask", "identify"):
        value = fn(state, request)
        if isinstance(value, dict) and "failed" in value:
            raise value["failed"].exception()
        return value
    t0 = time.time()
    items = fn(state, request)
    last = None
    try:
        for item in items:
            if isinstance(item, Progress):
                if progress is not None:
                    progress(item.stage, item.done, item.total)
            elif isinstance(item, Done | Failed):
                last = item
                break
            if cancel is not None and cancel.is_set():
                raise Stopped("cancelled")
            if time_limit is not None and time.time() - t0 > time_limit:
                raise Stopped("time limit")
    finally:
        if last is None:
            items.close()  # stops the job at its next step boundary
        else:
            for _ in items:  # its last item came: let it end normally (ZeroGPU releases the GPU then)
                pass
    if isinstance(last, Done):
        return last.value
    if isinstance(last, Failed):
        raise last.exception()
    raise RuntimeError(f"the {kind} job ended without a result")
