"""Running the grid's jobs (:mod:`nscvf.bench.jobs`) on a backend, and the benchmark from their files.

Two backends call the same function per job (:func:`execute`, which calls :func:`nscvf.bench.run.run_job`):

- ``local``: a process pool on this machine (``workers`` spawned processes);
- ``ray``: one Ray task per job with its resources (``num_cpus``/``num_gpus``), retried when its worker dies
  (``max_retries``), on a local Ray (``ray.init()``) or an existing cluster (``address``).

Each worker process loads the model once (on its first job) and keeps it for every job it runs. The driver
(this process) writes each job's result file as the job finishes, so the workers need no shared disk; a job
that raises is saved as an error file with its traceback, and the rest of the grid goes on.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from nscvf.bench import jobs as J
from nscvf.bench import run as R
from nscvf.bench.settings import BenchSettings

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class GridOptions:
    """How to run the jobs (none of this changes a job's numbers, only where and how fast they are made)."""

    backend: str = "local"
    workers: int = 1  # local: processes
    threads: int | None = None  # torch threads per job (None: local cpus // workers; ray: num_cpus)
    address: str | None = None  # ray: an existing cluster ("auto", "ray://host:10001"); None: a local Ray
    num_cpus: float = 1  # ray: CPUs per task
    num_gpus: float = 0  # ray: GPUs per task
    max_retries: int = 2  # ray: retries of a task whose worker died
    max_jobs: int | None = None  # run at most this many of the missing jobs, then stop (the rest stays missing)


@dataclass
class GridReport:
    """What one call of :func:`run_grid` did: job names run (ok), skipped (done before) and failed (with errors)."""

    total: int = 0
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return len(self.ran) + len(self.skipped) == self.total


_WORKER: R.Worker | None = None  # this process's model, loaded by its first job


ORPHAN_CHECK_S = 2.0  # how often a pool process checks that its driver is alive


def _exit_when_orphaned(parent: int) -> None:
    """A pool process's watchdog: the driver gone (killed, its machine's session ended), exit at once instead
    of working through the jobs already queued to it, whose results nobody would save (seen: two orphaned workers
    computing for 10 minutes after their driver had died)."""
    while True:
        time.sleep(ORPHAN_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


def _worker_init(threads: int) -> None:
    """A pool process: Ctrl-C goes to the driver only (it stops the pool), a fixed number of torch threads, and
    a watchdog that ends it when the driver dies (:func:`_exit_when_orphaned`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="orphan-watch", daemon=True).start()


def execute(job: J.Job, settings: BenchSettings, threads: int | None = None) -> dict:
    """Run one job in this worker process; its result with where it ran, or its error with the traceback."""
    global _WORKER
    if threads:
        torch.set_num_threads(threads)
    t, load_seconds = time.time(), 0.0
    try:
        if _WORKER is None:
            _WORKER = R.new_worker(settings.source)
            load_seconds = round(time.time() - t, 2)
        result = R.run_job(_WORKER, settings, job)
    except Exception as e:  # a failed job is reported, never fatal to the grid
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(), "seconds": round(time.time() - t, 2)}
    worker = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "peak_rss_mb": R.peak_rss_mb(),
        "load_seconds": load_seconds,
    }
    return {"result": result, "seconds": round(time.time() - t, 2), "worker": worker | {"machine": R.machine(_WORKER.vlm)}}


def _local(pending: list[J.Job], settings: BenchSettings, opts: GridOptions, done) -> None:
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.workers)
    ex = ProcessPoolExecutor(opts.workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads,))
    futures = {ex.submit(execute, j, settings, threads): j for j in pending}
    try:
        for f in as_completed(futures):
            try:
                out = f.result()
            except BrokenProcessPool as e:  # a worker process died (killed, out of memory): rerun to retry
                out = {"error": f"worker process died ({e}); rerun to retry", "traceback": "", "seconds": None}
            done(futures[f], out)
    except BaseException:  # Ctrl-C or a failure of the driver: stop the workers now, keep what finished
        for p in list(getattr(ex, "_processes", {}).values()):  # the pool has no public terminate()
            p.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown()


def _ray(pending: list[J.Job], settings: BenchSettings, opts: GridOptions, done) -> None:
    import ray  # ray: the optional [cluster] extra, only for --backend ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_retries=opts.max_retries)(execute)
    threads = opts.threads or max(1, int(opts.num_cpus))
    refs = {task.remote(j, settings, threads): j for j in pending}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                job = refs.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as e:  # the task's worker died more than max_retries times
                    out = {"error": f"{type(e).__name__}: {e}", "traceback": str(e), "seconds": None}
                done(job, out)
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_on_signals() -> dict:
    """SIGTERM (a scheduler's or ``kill``'s stop) and SIGINT (also in a background run, which starts with it
    ignored) stop the grid as Ctrl-C does: the workers stop, the finished jobs' files stay and the session is
    recorded in run.json. Returns the handlers to put back (none outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}


def run_grid(
    settings: BenchSettings, out: str | Path, opts: GridOptions = GridOptions(), progress=print, command: str = "nscvf bench"
) -> GridReport:
    """Run the grid's missing jobs into the run folder ``out`` (created, or checked to hold this grid).

    ``progress(str)`` gets one line per finished job with the count and an ETA. Ctrl-C stops the workers;
    the finished jobs' files stay, and the same call later runs only what is missing."""
    if opts.backend not in BACKENDS:
        raise ValueError(f"unknown backend {opts.backend!r}; choose one of {', '.join(BACKENDS)}")
    folder = J.RunFolder(out)
    run = folder.open(settings, J.model_record(settings.source), command)
    jobs = J.plan(settings)
    rep = GridReport(total=len(jobs))
    rep.skipped = [j.name for j in jobs if folder.result(j, run) is not None]
    pending = [j for j in jobs if j.name not in set(rep.skipped)][: opts.max_jobs]
    progress(f"grid: {len(jobs)} jobs, {len(rep.skipped)} done before, running {len(pending)} on {opts.backend}")
    t0, started, commit = time.time(), J.now(), J.git_commit()

    def done(job: J.Job, res: dict) -> None:
        folder.save(job, run, res, commit)
        (rep.failed.__setitem__(job.name, res["error"]) if "error" in res else rep.ran.append(job.name))
        n = len(rep.ran) + len(rep.failed)
        eta = (time.time() - t0) / n * (len(pending) - n)
        status = f"FAILED: {res['error']}" if "error" in res else f"{res['seconds']} s"
        progress(f"[{n}/{len(pending)}] {job.name}: {status} (ETA {eta / 60:.1f} min)")

    stops = _stop_on_signals()
    try:
        if pending:
            (_local if opts.backend == "local" else _ray)(pending, settings, opts, done)
    finally:
        for sig, handler in stops.items():
            signal.signal(sig, handler)
        rep.wall_seconds = round(time.time() - t0, 1)
        if rep.ran or rep.failed:
            session = {"backend": opts.backend, "workers": opts.workers, "commit": commit, "started": started}
            folder.add_session(
                session | {"jobs_run": len(rep.ran), "jobs_failed": len(rep.failed), "wall_seconds": rep.wall_seconds}
            )
    return rep


def run_bench(
    settings: BenchSettings, out: str | Path, opts: GridOptions = GridOptions(), progress=print, command: str = "nscvf bench"
) -> tuple[dict, GridReport]:
    """Run the grid into ``out``, then the benchmark result built from its files (:func:`nscvf.bench.jobs.assemble`)."""
    rep = run_grid(settings, out, opts, progress, command)
    return J.assemble(out), rep
