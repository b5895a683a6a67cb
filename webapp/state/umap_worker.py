"""UMAP in a worker process, so that its numba warm-up never starves a visitor's request.

UMAP's first use compiles ~20-35 s of numba code (half of it again in every new process, even with numba's
disk cache). In the app's process that competed with the first request for 2 cores (1.73 s/step instead
of 0.28). Here a spawned worker compiles it in a thread at the lowest priority (``nice 19``, per thread on
Linux), then serves projections at normal priority (~0.3 s each). Until it is ready the plots are PCA,
labelled as such (:func:`webapp.service.showcase.draw_figures`). Named for what it runs: "projector"
already means the MLLM's projector and the null-space projector.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import threading
import time

import numpy as np

from nscvf import plots

log = logging.getLogger("nscvf.app")


def _warm() -> float:
    rng = np.random.default_rng(0)
    before = rng.normal(size=(40, 32)).astype(np.float32)
    after = before + 0.1 * rng.normal(size=before.shape).astype(np.float32)
    t = time.time()
    plots.project(before, after, method="umap")
    return round(time.time() - t, 2)


def _low_priority_warm(out: dict) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only (Linux)
    except (OSError, AttributeError):
        pass
    try:
        out["seconds"] = _warm()
    except Exception as e:  # noqa: BLE001  (reported to the app, which keeps PCA)
        out["error"] = f"{type(e).__name__}: {e}"


def _exit_with(parent: int) -> None:
    """End the worker when the app ends (a SIGTERM'd server runs no atexit handler to stop its children)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _serve(conn, parent: int) -> None:
    """The worker: warm UMAP up at the lowest priority, say so, then project what the app sends."""
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    out: dict = {}
    t = threading.Thread(target=_low_priority_warm, args=(out,), name="umap-warmup")
    t.start()
    t.join()
    conn.send(("ready", out.get("seconds"), out.get("error")))
    while True:
        try:
            seq, before, after = conn.recv()
        except (EOFError, OSError):
            return
        try:
            p = plots.project(before, after, method="umap")
            conn.send((seq, p.before, p.after))
        except Exception as e:  # noqa: BLE001
            conn.send((seq, None, f"{type(e).__name__}: {e}"))


class UmapWorker:
    """The app's handle on the worker: :meth:`start` once, :attr:`done` when warm (or failed),
    :meth:`project` -> (before_2d, after_2d) or None (not ready, failed, or slower than ``timeout``)."""

    def __init__(self):
        self.done = threading.Event()
        self.seconds: float | None = None
        self.error: str | None = None
        self._conn = None
        self._proc = None
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._started = False

    @property
    def ready(self) -> bool:
        return self.done.is_set() and self.error is None

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        try:
            ctx = mp.get_context("spawn")  # never fork a process holding torch threads
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child, os.getpid()), name="nscvf-umap", daemon=True)
            self._proc.start()
        except Exception as e:  # noqa: BLE001
            self._fail(f"{type(e).__name__}: {e}")
            return
        threading.Thread(target=self._await_ready, name="umap-ready", daemon=True).start()

    def _fail(self, error: str) -> None:
        self.error = error
        log.warning("UMAP unavailable (plots stay PCA): %s", error)
        self.done.set()

    def _await_ready(self) -> None:
        try:
            _, seconds, error = self._conn.recv()
        except (EOFError, OSError) as e:
            return self._fail(f"the UMAP worker ended ({type(e).__name__})")
        if error:
            return self._fail(error)
        self.seconds = seconds
        log.info("UMAP warmed up in %.1f s (worker process, low priority)", seconds)
        self.done.set()

    def wait(self, seconds: float) -> bool:
        """Start the worker if needed; True once it is warm (waiting at most ``seconds``)."""
        self.start()
        return self.done.wait(seconds) and self.error is None

    def project(self, before, after, timeout: float = 10.0):
        """UMAP of ``before`` (fitted) and ``after`` (transformed), or None."""
        if not self.ready:
            return None
        with self._lock:
            seq = next(self._seq)
            try:
                self._conn.send((seq, before, after))
                deadline = time.time() + timeout
                while self._conn.poll(max(0.0, deadline - time.time())):
                    got, b, a = self._conn.recv()
                    if got == seq:  # older answers (timed out before) are dropped
                        return (b, a) if b is not None else None
            except (EOFError, OSError, BrokenPipeError) as e:
                self._fail(f"the UMAP worker ended ({type(e).__name__})")
        return None

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
