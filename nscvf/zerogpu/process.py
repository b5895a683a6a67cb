"""A stand-in of ``spaces.GPU`` that runs every call in a fresh process (:class:`ProcessPerCall`; tests,
``scripts/bench_zerogpu.py``). See :mod:`nscvf.zerogpu`."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import multiprocessing as mp
import pickle
import queue
import time
from dataclasses import dataclass, field

from nscvf.models import budget

# ------------------------------------------------------------------------------------ process per call


def _child_main(module: str, name: str, args: bytes, results, stop, threads: int) -> None:
    """A fresh process's side of :class:`ProcessPerCall`: run the job, send each value (or the end).
    Values cross as plain pickles (copies: no shared memory, as between a ZeroGPU worker and the app)."""
    try:
        import torch  # torch: heavy; this spawn child imports it before the job

        torch.set_num_threads(threads)  # the same float reductions as the parent: byte-identical results
        fn = getattr(importlib.import_module(module), name)
        value = fn(*pickle.loads(args))
        if not hasattr(value, "__next__"):
            _check_cpu(value)
            results.put(("value", pickle.dumps(value)))
            return
        for item in value:
            if stop.is_set():  # the caller closed the job: stop at this yield, as spaces does
                value.close()
                results.put(("closed", pickle.dumps(item)))  # where it stopped (ProcessPerCall.calls)
                break
            _check_cpu(item)
            results.put(("value", pickle.dumps(item)))
        results.put(("end", None))
    except BaseException as e:  # noqa: BLE001  (like ZeroGPU: only the class name goes back)
        results.put(("error", type(e).__name__))


def _check_cpu(value, seen=None) -> None:
    """ZeroGPU's rule for what a call returns: no CUDA tensor anywhere in it."""
    import torch  # torch: heavy, only when a result is checked

    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise TypeError(f"a {value.device.type} tensor in a GPU call's result: return CPU tensors")
    elif isinstance(value, dict):
        for v in value.values():
            _check_cpu(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_cpu(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _check_cpu(getattr(value, f.name))


@dataclass
class ProcessPerCall:
    """A stand-in of ``spaces.GPU`` that runs every call in a fresh process (multiprocessing "spawn": only
    the pickled arguments go in, only pickled values come back, an exception returns as its class name, a
    CUDA tensor in a result is refused), so code that works through it keeps no state in the call. It
    records each call's duration (the ``duration`` callable is called with the call's arguments, as
    ZeroGPU does), seconds, exit code and, for a job closed early, the item at which it stopped
    (``closed_at``) in ``calls``; ``max_seconds`` is its per-call limit."""

    max_seconds: int = budget.ZEROGPU_MAX_SECONDS
    calls: list = field(default_factory=list)

    def __hash__(self) -> int:  # gpu_job caches per decorator object
        return id(self)

    def __call__(self, fn, duration=None):
        ctx = mp.get_context("spawn")
        module, name = fn.__module__, fn.__name__

        def start(args):
            import torch  # torch: heavy, only when a call starts

            seconds = duration(*args) if callable(duration) else (duration or 60)
            record = {"job": name, "duration": seconds, "started": time.time(), "first_item_s": None}
            self.calls.append(record)
            results, stop = ctx.Queue(), ctx.Event()
            payload = pickle.dumps(args)
            proc = ctx.Process(target=_child_main, args=(module, name, payload, results, stop, torch.get_num_threads()),
                               daemon=True)  # fmt: skip
            proc.start()
            return proc, results, stop, record

        def receive(proc, results, record):
            while True:
                try:
                    kind, value = results.get(timeout=1.0)
                except queue.Empty:
                    if not proc.is_alive():
                        raise RuntimeError(f"ZeroGPU worker error: the {name} process exited ({proc.exitcode})") from None
                    continue
                if record["first_item_s"] is None:
                    record["first_item_s"] = round(time.time() - record["started"], 3)
                if kind == "error":
                    raise RuntimeError(f"ZeroGPU worker error: {value}")
                return kind, None if value is None else pickle.loads(value)

        if not inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def call(*args):
                proc, results, stop, record = start(args)
                try:
                    return receive(proc, results, record)[1]
                finally:
                    proc.join(30)
                    record["seconds"] = round(time.time() - record["started"], 3)

            return call

        @functools.wraps(fn)
        def generate(*args):
            proc, results, stop, record = start(args)
            try:
                while True:
                    kind, value = receive(proc, results, record)
                    if kind == "end":
                        return
                    yield value
            finally:  # closed early: the worker stops at its job's next yield (then its step boundary)
                stop.set()
                deadline = time.time() + 120
                while proc.is_alive() and time.time() < deadline:
                    try:  # keep the pipe drained, so that the worker can exit
                        kind, value = results.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if kind == "closed":
                        record["closed_at"] = pickle.loads(value)
                if proc.is_alive():
                    proc.kill()
                proc.join(5)
                record["exitcode"] = proc.exitcode
                record["seconds"] = round(time.time() - record["started"], 3)

        return generate
