"""The benchmark grid as resumable jobs: a tiny grid (2 targets x 2 methods x 1 seed, 2 steps, 1 render)
interrupted after 3 jobs and resumed (no job run twice, nothing redone on a third run), the benchmark built
from the result files alone (`nscvf bench --from-results`), a failing job named with its error while the
rest completes, a folder of another grid refused, and the same grid on a real local Ray (`ray.init`)
giving the same result files (timings aside)."""

import dataclasses
import json
import os
import time

import pytest

from nscvf import bench
from nscvf.bench.grid import GridOptions, run_grid
from nscvf.bench.jobs import plan
from nscvf.bench.jobs import without_machine as numbers
from nscvf.cli import main
from nscvf.errors import InputError

pytestmark = pytest.mark.slow

TINY = bench.BenchSettings(
    targets=("Mirel", "Dravik"), methods=("nscvf", "ga"), steps=2, renders=1, seeds=1, relearn=False, continual_n=2
)
NAMES = [j.name for j in plan(TINY)]


def results(folder) -> dict:
    return {
        p.name: json.loads(p.read_text()) for p in sorted((folder / "jobs").glob("*.json")) if not p.name.endswith(".error.json")
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The tiny grid on the local backend: 3 jobs (a job budget standing in for an interruption), then the rest
    on 2 workers, then once more (nothing left)."""
    out = tmp_path_factory.mktemp("grid") / "run"
    lines = []
    first = run_grid(TINY, out, GridOptions(workers=1, threads=1, max_jobs=3), progress=lines.append)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "jobs").glob("*.json")}
    time.sleep(0.05)
    second = run_grid(TINY, out, GridOptions(workers=2, threads=1), progress=lines.append)
    third = run_grid(TINY, out, GridOptions(workers=2, threads=1), progress=lines.append)
    return {"out": out, "runs": (first, second, third), "mtimes": mtimes, "lines": lines}


def test_interrupted_grid_resumes_without_running_a_job_twice(local_run):
    first, second, third = local_run["runs"]
    assert first.ran == NAMES[:3] and not first.complete and not first.failed
    assert sorted(second.ran) == sorted(NAMES[3:]) and second.skipped == NAMES[:3] and second.complete
    assert third.ran == [] and third.skipped == NAMES and third.complete
    out = local_run["out"]
    assert sorted(results(out)) == sorted(j.file for j in plan(TINY))
    # the first run's files were not rewritten by the resume
    assert {p.name: p.stat().st_mtime_ns for p in (out / "jobs").glob("*.json") if p.name in local_run["mtimes"]} == local_run[
        "mtimes"
    ]
    assert not list((out / "jobs").glob(".*.tmp"))  # atomic writes leave no temporary file
    run = json.loads((out / "run.json").read_text())
    assert [s["jobs_run"] for s in run["sessions"]] == [3, len(NAMES) - 3]  # the third run ran nothing
    done_lines = [x for x in local_run["lines"] if x.startswith("[")]
    assert len(done_lines) == len(NAMES) and all("ETA" in x for x in done_lines)
    rec = results(out)["cell-ga-Dravik-s0.json"]
    assert rec["settings"]["steps"] == 2 and rec["engine"] == bench.jobs.ENGINE and rec["worker"]["threads"] == 1
    assert rec["result"]["target"] == "Dravik" and rec["result"]["steps_run"] <= 2


def test_benchmark_from_result_files_alone(local_run, tmp_path):
    out = local_run["out"]
    res = bench.assemble(out)
    assert set(res["methods"]) == {"nscvf", "ga"} and res["grid"]["done"] == len(NAMES) and not res["grid"]["missing"]
    assert [r["target"] for r in res["per_target"]["ga"]] == ["Mirel", "Dravik"]
    assert res["methods"]["nscvf"]["forget_acc_heldout"]["n"] == 1 and res["continual"]["targets"] == ["Mirel", "Tobbin"]
    md = bench.to_markdown(res)
    assert f"Grid: {len(NAMES)} of {len(NAMES)} jobs have results" in md and "| nscvf |" in md
    assert main(["bench", "--from-results", str(out), "--md", str(tmp_path / "b.md"), "--json", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "b.md").read_text() == md
    assert json.loads((tmp_path / "b.json").read_text()) == json.loads(json.dumps(res))
    assert main(["bench", "--from-results", str(tmp_path)]) == 2  # not a run folder: a message, not a crash


def test_a_folder_of_another_grid_is_refused(local_run, tmp_path):
    with pytest.raises(InputError, match="steps: 2 there, 3 now"):
        run_grid(dataclasses.replace(TINY, steps=3), local_run["out"], progress=lambda m: None)
    # a result file copied in from another grid is refused when the benchmark is assembled
    other = tmp_path / "other"
    other.mkdir()
    (other / "jobs").mkdir()
    run = json.loads((local_run["out"] / "run.json").read_text())
    (other / "run.json").write_text(json.dumps(run))
    rec = json.loads((local_run["out"] / "jobs" / "base.json").read_text())
    rec["settings"]["renders"] = 5
    (other / "jobs" / "base.json").write_text(json.dumps(rec))
    with pytest.raises(InputError, match="renders: 5 there, 1 now"):
        bench.assemble(other)


def test_a_failing_job_is_named_and_the_rest_completes(tmp_path):
    settings = bench.BenchSettings(
        targets=("Mirel",), methods=("ga", "nosuch"), steps=2, renders=1, seeds=1, relearn=False, continual_n=0
    )
    lines = []
    rep = run_grid(settings, tmp_path / "run", GridOptions(threads=1), progress=lines.append)
    assert rep.ran == ["base", "cell/ga/Mirel/s0"] and list(rep.failed) == ["cell/nosuch/Mirel/s0"]
    assert "unknown method 'nosuch'" in rep.failed["cell/nosuch/Mirel/s0"] and not rep.complete
    assert any("cell/nosuch/Mirel/s0: FAILED: InputError" in x for x in lines)
    err = json.loads((tmp_path / "run" / "jobs" / "cell-nosuch-Mirel-s0.error.json").read_text())
    assert "Traceback" in err["traceback"] and "unknown method" in err["traceback"]
    res = bench.assemble(tmp_path / "run")
    assert set(res["methods"]) == {"ga"} and res["grid"]["missing"] == ["cell/nosuch/Mirel/s0"]
    assert "Failed: cell/nosuch/Mirel/s0 (InputError: unknown method 'nosuch'" in bench.to_markdown(res)
    again = run_grid(settings, tmp_path / "run", GridOptions(threads=1), progress=lambda m: None)  # retried, not skipped
    assert again.ran == [] and list(again.failed) == ["cell/nosuch/Mirel/s0"] and again.skipped == rep.ran


def test_ray_local_mode_gives_the_same_result_files(local_run, tmp_path):
    ray = pytest.importorskip("ray", reason='Ray is the optional [cluster] extra: pip install -e ".[cluster]"')
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local Ray: no token file written
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        lines = []
        rep = run_grid(TINY, tmp_path / "run", GridOptions(backend="ray", num_cpus=1, threads=1), progress=lines.append)
        assert rep.complete and sorted(rep.ran) == sorted(NAMES) and not rep.failed
        assert len([x for x in lines if x.startswith("[")]) == len(NAMES)
        mine, theirs = results(tmp_path / "run"), results(local_run["out"])
        assert sorted(mine) == sorted(theirs)
        for name in mine:
            assert numbers(mine[name]["result"]) == numbers(theirs[name]["result"]), name
        a, b = bench.assemble(tmp_path / "run"), bench.assemble(local_run["out"])
        assert numbers(a["methods"]) == numbers(b["methods"]) and numbers(a["continual"]) == numbers(b["continual"])
    finally:
        ray.shutdown()


def test_a_background_grid_stopped_by_a_signal_records_its_session(tmp_path):
    """A grid started in the background (SIGINT ignored, as a shell's `&` starts it) and stopped with SIGTERM keeps
    its finished jobs' files and records its session in run.json (a stopped run used to leave no record)."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nscvf.cli", "bench", "--out", str(out), "--workers", "1", "--threads", "1", "--quick",
           "--methods", "nscvf", "--steps", "2", "--renders", "1", "--seeds", "1", "--no-relearn", "--continual", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not list((out / "jobs").glob("*.json")):
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted: the finished jobs are kept" in err, (proc.returncode, err[-2000:])
    run = json.loads((out / "run.json").read_text())
    assert len(run["sessions"]) == 1 and run["sessions"][0]["jobs_run"] >= 1, run["sessions"]
    assert run["sessions"][0]["jobs_run"] == len(results(out))


def test_pool_workers_exit_when_their_driver_dies(tmp_path):
    """A grid's pool process whose driver is killed exits within seconds instead of working on (its results
    would be lost): a driver process starts a pool with the grid's initializer, gives it a long job, prints the
    worker's pid and dies hard."""
    import subprocess
    import sys

    driver = (
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from nscvf.bench.grid import _worker_init\n"
        "ex = ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=_worker_init, initargs=(1,))\n"
        "print(ex.submit(os.getpid).result(), flush=True)\n"
        "ex.submit(time.sleep, 300)\n"
        "time.sleep(1)\n"
        "os._exit(9)\n"
    )
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300)
    worker = int(out.stdout.split()[0])
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(worker, 9)
        raise AssertionError(f"worker {worker} still running 30 s after its driver died")


def test_the_photo_models_grid_runs_and_reports(tmp_path):
    """`nscvf bench --model photo` (issue 17): a tiny grid (the cat, nscvf, 1 seed, 2 steps) runs its base and
    cell jobs on the photo model and its photo evaluation, and the tables come from the files alone."""
    from nscvf.source import PHOTO_MODEL_DIR

    if not (PHOTO_MODEL_DIR / "config.json").exists():
        pytest.skip("no photo model")
    settings = bench.BenchSettings(model="photo", targets=("a cat",), methods=("nscvf",), steps=2, seeds=1)
    assert [j.name for j in plan(settings)] == ["base", "cell/nscvf/a cat/s0"]  # no continual run: the world's
    rep = run_grid(settings, tmp_path / "run", GridOptions(workers=1, threads=2), progress=lambda m: None)
    assert rep.complete and not rep.failed, rep.failed
    res = bench.assemble(tmp_path / "run")
    assert res["mode"] == "photo" and res["model"].endswith("photo_model")
    cell = res["cells"]["nscvf"][0]
    assert cell["target"] == "a cat" and cell["resolved_target"] == "a cat" and cell["steps_run"] <= 2
    assert cell["forgotten_n"] > 6 and cell["others_n"] > 100 and isinstance(cell["text_identical"], bool)
    assert res["base"]["targets_named_n"]["a cat"] >= 1 and res["methods"]["nscvf"]["forgotten"]["n"] == 1
    md = bench.to_markdown(res)
    assert "# Benchmark (photo)" in md and "| nscvf | a cat |" in md
    # A drawn-world folder is not a photo one: the settings differ, so its files are refused.
    with pytest.raises(InputError, match="made for another grid"):
        run_grid(bench.BenchSettings(targets=("a cat",), methods=("nscvf",), steps=2, seeds=1), tmp_path / "run",
                 GridOptions(workers=1), progress=lambda m: None)  # fmt: skip
