"""The process's warm-up (issue 20): one short request on the model's warm-up example, on a throwaway chain,
before anyone asks, so that the first visitor's request does not draw the deterministic image sets, their
processor inputs, the base model's features and covariance chunks (:mod:`nscvf.method.state_memo`), nor pay
torch's first forward and backward passes.

It changes nothing but time: what it leaves behind is the process memo (``nscvf.cache.memo``, values keyed
by everything they depend on, the base model's state included) and nothing else. Its chain is closed (its
adapter deleted), its results go to an in-memory cache that is dropped, and the warm-up example is the
Domain's choice (:meth:`nscvf.method.domain.Domain.warmup_example`; None: no warm-up, e.g. a model whose
requests need the caller's own images to keep).
"""

from __future__ import annotations

import time

from nscvf.cache import Cache, memo
from nscvf.method.chain import UnlearningChain
from nscvf.method.config import UnlearnConfig

STEPS = 2  # optimisation steps of the warm-up request: torch's first forward and backward passes


def warm_up(vlm, progress=None, domain=None) -> dict | None:
    """Run the warm-up request on ``vlm`` (a loaded model; ``domain``: its Domain, default the model's). Returns what it did (target, seconds, CPU seconds,
    the memo's sizes afterwards, the request's timings: a real request's, on this machine), or None when the model's Domain has no warm-up example or the memo is off
    (``NSCVF_MEMO=0``: nothing would be kept). ``progress(stage, done, total)`` as a request's."""
    if not memo.enabled:
        return None
    chain = UnlearningChain(vlm, Cache(enabled=False), domain)
    try:
        example = chain.domain.warmup_example()
        if example is None:
            return None
        images, target = example
        t, c = time.time(), time.process_time()
        cfg = UnlearnConfig(steps=STEPS, min_steps=STEPS, evaluate="none", stop_when_forgotten=False)
        result = chain.forget(images, config=cfg, target=target, progress=progress)
        return {"target": target, "seconds": round(time.time() - t, 2), "cpu_seconds": round(time.process_time() - c, 2),
                "memo": memo.stats(), "timings": dict(result.timings)}  # fmt: skip
    finally:
        chain.close()
