"""The benchmark grid as jobs, and the run folder that holds their results. Torch-free.

One job per cell (method, target, seed), plus the base model's numbers and the continual sequence as jobs of
their own (:func:`plan`). Each finished job is one JSON file under ``<run>/jobs/`` (written atomically:
a temporary file, then a rename) recording the settings, engine version, model and git commit it was made
with; a job whose file exists is done, so running the same grid into the same folder again does only what
is missing. A failed job leaves ``<name>.error.json`` (its traceback) instead and is retried by the next run.
:func:`assemble` builds the benchmark result (the summary, tables and BENCHMARKS.json) from the files alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import nscvf
from nscvf import world
from nscvf.bench import photo
from nscvf.bench.settings import NOTE, BenchSettings
from nscvf.bench.summary import overhead, quick_vs_full, summarise
from nscvf.errors import InputError

FORMAT = 1  # the result files' layout; a change makes older folders incompatible
ENGINE = f"nscvf {nscvf.__version__}, bench format {FORMAT}"

# What a result measures of the machine rather than of the method: the seconds and memory of whoever ran it.
MACHINE_KEYS = {"seconds", "seconds_per_step", "projection_seconds", "projection_share", "seconds_warm",
                "seconds_per_request", "seconds_per_request_cold", "seconds_per_request_warm", "peak_rss_mb"}  # fmt: skip


def without_machine(x):
    """A result without :data:`MACHINE_KEYS`, at any depth: what must be the same whoever (whatever backend) ran it."""
    if isinstance(x, dict):
        return {k: without_machine(v) for k, v in x.items() if k not in MACHINE_KEYS}
    if isinstance(x, list):
        return [without_machine(v) for v in x]
    return x


@dataclass(frozen=True)
class Job:
    """One unit of the grid: ``kind`` is "base", "continual" or "cell" (a request: method, target, seed)."""

    kind: str
    method: str | None = None
    target: str | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        return self.kind if self.kind != "cell" else f"cell/{self.method}/{self.target}/s{self.seed}"

    @property
    def file(self) -> str:
        return self.name.replace("/", "-").replace(" ", "_") + ".json"


def plan(settings: BenchSettings) -> list[Job]:
    """Every job of the grid: base and continual first (continual is the longest), then the cells seed-major
    (all methods and targets at seed 0, then seed 1, ...), so a partial run has whole seeds to summarise."""
    jobs = [Job("base")] + ([Job("continual")] if settings.has_continual else [])
    for s in range(settings.seeds):
        for m in settings.method_names:
            jobs += [Job("cell", m, t, s) for t in settings.target_names]
    return jobs


def settings_record(settings: BenchSettings) -> dict:
    """The settings as JSON (what a result file must match to be reused). The drawn world's grid leaves out
    ``model`` (its folders were made before the photo grid existed, and match as they are)."""
    rec = json.loads(json.dumps(dataclasses.asdict(settings)))
    if rec.get("model") == "world":
        del rec["model"]
    return rec


def settings_from_record(rec: dict) -> BenchSettings:
    tuples = {k: tuple(v) for k in ("methods", "targets") if (v := rec.get(k)) is not None}
    return BenchSettings(**(rec | tuples))


def git_commit() -> str | None:
    """The checkout's commit (with "+dirty" when tracked files changed), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_record(source: str) -> dict:
    """The model a run used, the same on every machine: its source (relative to the checkout when it is one of
    the repository's folders) and, for a local folder, a fingerprint of its files (contents up to 1 GB in
    all, names and sizes above), so a retrained model does not mix with the old one's results."""
    root, path = Path(__file__).resolve().parents[2], Path(source).expanduser()
    if not path.is_dir():
        return {"source": source, "fingerprint": None}
    files = sorted(f for f in path.rglob("*") if f.is_file())
    h, small = hashlib.sha256(), sum(f.stat().st_size for f in files) <= 2**30
    for f in files:
        h.update(f"{f.relative_to(path)}:{f.stat().st_size}".encode())
        if small:
            h.update(f.read_bytes())
    rel = path.resolve().relative_to(root).as_posix() if path.resolve().is_relative_to(root) else source
    return {"source": rel, "fingerprint": h.hexdigest()[:16]}


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader (or an interrupted run) sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable result file ({e}); delete it and rerun to redo that job") from None


class RunFolder:
    """``<root>/run.json`` (the grid's settings, model, engine and the sessions that ran it) and
    ``<root>/jobs/<job>.json`` (one per finished job) or ``<job>.error.json`` (its last failure)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.jobs = self.root / "jobs"

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    def open(self, settings: BenchSettings, model: dict, command: str) -> dict:
        """Create the folder for this grid, or check that it holds the same grid (else a clear InputError)."""
        want = {"settings": settings_record(settings), "engine": ENGINE, "model": model}
        if self.run_file.exists():
            run = self.read_run()
            self._check(run, want, str(self.run_file))
            return run
        self.jobs.mkdir(parents=True, exist_ok=True)
        run = want | {"command": command, "created": now(), "sessions": []}
        write_json(self.run_file, run)
        return run

    def read_run(self) -> dict:
        if not self.run_file.exists():
            raise InputError(f"{self.root}: no run.json here; pass the --out folder of an earlier `nscvf bench`")
        run = _read(self.run_file)
        if not {"settings", "engine", "model"} <= set(run):
            raise InputError(f"{self.run_file}: not a benchmark run folder's run.json")
        return run

    @staticmethod
    def _check(have: dict, want: dict, where: str) -> None:
        diffs = [f"{k}: {have.get(k)!r} there, {v!r} now" for k, v in want.items() if k not in ("settings",) and have.get(k) != v]
        hs, ws = have.get("settings") or {}, want["settings"]
        diffs += [f"{k}: {hs.get(k)!r} there, {ws.get(k)!r} now" for k in sorted(set(hs) | set(ws)) if hs.get(k) != ws.get(k)]
        if diffs:
            raise InputError(
                f"{where} was made for another grid ({'; '.join(diffs)}); its results cannot be mixed with these. "
                "Use a new --out folder (or the same settings, engine and model)."
            )

    def result(self, job: Job, run: dict) -> dict | None:
        """The job's saved result file, checked against the run's settings; None when the job is not done."""
        path = self.jobs / job.file
        if not path.exists():
            return None
        rec = _read(path)
        self._check(rec, {k: run[k] for k in ("settings", "engine", "model")}, str(path))
        return rec

    def save(self, job: Job, run: dict, out: dict, commit: str | None) -> None:
        """Write a finished job's file (or its error file); a success removes an earlier error file.
        ``commit``: the checkout's commit when this session started (the code its workers run)."""
        rec = {
            "job": job.name,
            **{k: run[k] for k in ("settings", "engine", "model")},
            "commit": commit,
            "finished": now(),
            **out,
        }
        err = self.jobs / (job.file[: -len(".json")] + ".error.json")
        if "error" in out:
            write_json(err, rec)
            return
        write_json(self.jobs / job.file, rec)
        err.unlink(missing_ok=True)

    def error(self, job: Job) -> dict | None:
        path = self.jobs / (job.file[: -len(".json")] + ".error.json")
        return _read(path) if path.exists() else None

    def add_session(self, session: dict) -> None:
        run = self.read_run()
        run["sessions"] = [*run.get("sessions", []), session]
        write_json(self.run_file, run)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def assemble(root: str | Path) -> dict:
    """The benchmark result of a run folder, from its files alone (the same files give the same result).

    A method is summarised over its complete seeds (every target of that seed done); jobs without a result
    are listed under ``grid`` (with the error of each failed one)."""
    folder = RunFolder(root)
    run = folder.read_run()
    settings = settings_from_record(run["settings"])
    jobs = plan(settings)
    done = {j: rec for j in jobs if (rec := folder.result(j, run)) is not None}
    if settings.model == "photo":
        return photo.assemble(run, settings, done, jobs, _grid_state(folder, run, jobs, done))
    base_job = Job("base")
    if base_job not in done:
        raise InputError(f"{root}: the base job has no result yet; run the grid (`nscvf bench ... --out {root}`) first")
    base = done[base_job]["result"]
    targets, per_target, summaries = settings.target_names, {}, {}
    for m in settings.method_names:
        rows, rss = [], []
        for s in range(settings.seeds):
            cells = [done.get(Job("cell", m, t, s)) for t in targets]
            if all(cells):
                rows += [c["result"] for c in cells]
                rss += [c["worker"]["peak_rss_mb"] for c in cells]
        if rows:
            per_target[m] = rows
            summaries[m] = summarise({"per_target": rows, "peak_rss_mb": max(rss)}, base)
    cont = done.get(Job("continual"))
    n_neighbour = sum(1 for c in world.CHARACTERS if c.neighbour)
    sessions = run.get("sessions", [])
    return {
        "command": run["command"],
        "mode": "quick" if settings.quick else "full",
        "seeds": settings.seeds,
        "renders": settings.renders,
        "model": run["model"]["source"],
        "machine": done[base_job]["worker"]["machine"],
        "note": NOTE,
        "targets": targets,
        "base": base,
        "methods": summaries,
        "per_target": per_target,
        "null_space_overhead_per_step": overhead(summaries),
        "continual": cont["result"] if cont else None,
        "quick_vs_full": quick_vs_full(per_target, len(world.CHARACTERS), n_neighbour),
        "wall_seconds": round(sum(s.get("wall_seconds", 0) for s in sessions), 1),
        "grid": _grid_state(folder, run, jobs, done),
    }


def _grid_state(folder: RunFolder, run: dict, jobs: list, done: dict) -> dict:
    """How far the grid is: jobs done and missing (with each failed one's error), the commits that made them."""
    return {
        "jobs": len(jobs),
        "done": len(done),
        "missing": [j.name for j in jobs if j not in done],
        "failed": {j.name: e["error"] for j in jobs if j not in done and (e := folder.error(j))},
        "commits": sorted({rec.get("commit") or "unknown" for rec in done.values()}),
        "engine": run["engine"],
        "sessions": len(run.get("sessions", [])),
    }
