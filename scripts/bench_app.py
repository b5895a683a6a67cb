"""Measure the app's targets end to end, as a visitor sees them (gradio_client against `python app.py`).

    python scripts/bench_app.py --json runs/bench_app.json [--character mirel] [--steps 60] [--evaluation quick]

1. serving: process start -> the page answers (target <= 10 s);
2. example request (cold: fresh data dir, fresh numba cache): 8 renders of an example character, submitted
   as soon as the page answers (so it may wait for the model to load), until the answers and plots arrive
   (target <= 15 s answers, <= 17 s plots after the click); then the accuracies, which the app evaluates
   after showing the answers (reported separately);
3. plots: the plots come with the result; the time the job spent drawing them is reported (target: shown
   <= 3 s after the job ends);
4. repeat: the identical request from a new session (target <= 2 s), restored from the cache; then a new
   example character (--warm-character) from another new session on the now warm server (target <= 12 s);
5. restart: the server is restarted on the same data dir; serving again, and the repeat once more
   (a restart loses nothing finished).

Every click is timed with its files already on the server (:func:`upload`, timed on its own as ``upload_s``): a
browser sends a visitor's files when they are chosen and an example's click fills the upload from the server's own
files, so neither is part of the wait after the Forget click (gradio_client would upload them one request each
inside it: ~0.3 s of 8 files here).

Uses a fresh data dir (a temporary one unless --data-dir) so that nothing is cached before step 2.
Prints the numbers and writes them as JSON to --json: wall seconds, and beside each Forget the CPU seconds
of the app's process and the load average (the machine may be shared). The app warms up before it serves
(``NSCVF_WARMUP``, default on: serving then includes the model load and the warm-up request).
``--app-root DIR`` runs another checkout's app.py with this script (back-to-back A/B runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from nscvf.method.config import UnlearnConfig

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, data: Path, tmp: Path, log, root: Path = ROOT) -> tuple[subprocess.Popen, float]:
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NSCVF_DATA_DIR": str(data),
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        "PYTHONUNBUFFERED": "1",
    }
    t0 = time.time()
    env["PYTHONPATH"] = str(root)  # its own packages, not an editable install's
    proc = subprocess.Popen([sys.executable, str(root / "app.py")], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"app exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                if r.status == 200:
                    return proc, time.time() - t0
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("app did not answer within 120 s")


def example_files(folder: Path, name: str) -> list[Path]:
    """The images of one example (a folder under ``folder``)."""
    return sorted(q for q in (folder / name).glob("*") if q.suffix in (".png", ".jpg"))


def wait_for_log(path: Path, text: str, limit: float) -> float | None:
    """Seconds until ``text`` appears in the app's log (None: not within ``limit``)."""
    t0 = time.time()
    while time.time() - t0 < limit:
        if text in path.read_text(errors="replace"):
            return round(time.time() - t0, 2)
        time.sleep(0.25)
    return None


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def cpu_seconds(proc) -> float | None:
    """CPU seconds (user + system) the app's own process has used so far (Linux /proc; None elsewhere): the
    machine may be shared, and CPU time is what its load moves least."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


CPU: dict = {}  # what request() measured last: the app process's CPU seconds for its Forget, the load average before


def upload(url: str, paths: list) -> tuple[list, float]:
    """The files on the server before the click, as a browser has them: an example's click fills the upload
    from the server's own files, and a visitor's files are sent when chosen, all in one request. Returns the
    Forget's file values (server paths: plain dicts, which the client passes on without uploading them again)
    and the seconds the upload took (reported beside the click's time, not inside it)."""
    import httpx

    t0 = time.time()
    handles = [open(q, "rb") for q in paths]
    try:
        r = httpx.post(
            f"{url}/gradio_api/upload", files=[("files", (Path(q).name, h)) for q, h in zip(paths, handles)], timeout=60
        )
    finally:
        for h in handles:
            h.close()
    r.raise_for_status()
    on_server = {"meta": {"_type": "gradio.FileData"}, ON_SERVER: True}
    return [{"path": s, "orig_name": Path(q).name, **on_server} for q, s in zip(paths, r.json())], time.time() - t0


ON_SERVER = "bench_on_server"  # a file value :func:`upload` sent already: gradio_client would send it again


def _keep_uploaded() -> None:
    """Make gradio_client pass on the values :func:`upload` made (it uploads every local path it is given, and
    the server's files are local paths here) and upload the others as before."""
    from gradio_client.client import Endpoint

    if getattr(Endpoint._upload_file, "keeps_uploaded", False):
        return
    send = Endpoint._upload_file

    def upload_file(self, f: dict, data_index: int) -> dict:
        return {k: v for k, v in f.items() if k != ON_SERVER} if f.get(ON_SERVER) else send(self, f, data_index)

    upload_file.keeps_uploaded = True
    Endpoint._upload_file = upload_file


def request(url: str, args, evaluation: str = "none", proc=None) -> tuple[dict, float, list, float, list]:
    """One Forget as the browser runs it: the answers and plots (timed from the click, the files already on
    the server: :func:`upload`), then the accuracies (timed)."""
    from gradio_client import Client

    # download_files=False: a browser fetches output images lazily.
    _keep_uploaded()
    c = Client(url, analytics_enabled=False, verbose=False, download_files=False)
    c0 = cpu_seconds(proc) if proc is not None else None
    CPU["load"] = [round(v, 2) for v in os.getloadavg()]
    t0 = time.time()
    job = c.submit(*args, api_name="/forget")
    stages = []
    while not job.done():
        st = job.status()
        if st.progress_data:
            d = re.sub(r" · \d+ s$", "", st.progress_data[0].desc or "")
            d = re.sub(r"^step \d+/(\d+)$", r"step k/\1", d)
            if not stages or stages[-1][0] != d:
                stages.append((d, round(time.time() - t0, 2)))
        time.sleep(0.05)
    out = job.result()
    dt = time.time() - t0
    c1 = cpu_seconds(proc) if proc is not None else None
    CPU["forget"] = None if c0 is None or c1 is None else round(c1 - c0, 2)
    t1 = time.time()
    nums = c.predict(evaluation, api_name="/numbers") if evaluation != "none" else None
    return out, dt, stages, time.time() - t1, nums


def plot_method(plot) -> str:
    """The plot's title (says UMAP or PCA, and whether UMAP was still warming up)."""
    fig = json.loads(plot["plot"]) if isinstance(plot, dict) and plot.get("plot") else {}
    title = (fig.get("layout") or {}).get("title") or {}
    return title.get("text", "") if isinstance(title, dict) else str(title)


def example_numbers(out, nums) -> dict:
    """What the first request's outputs and accuracies say: its job line, plot time, steps and accuracies."""
    if not re.search(r"done\*\* in ([\d.]+) s", out[0]):
        raise SystemExit(f"the example request did not finish: {out[0]}")
    nums = numbers(nums[0] if nums else out[10])
    job_time = nums.get("job time (s)", ["", ""])[1]
    pm = re.search(r"plots ([\d.]+)", job_time)
    return {
        "example_job_line": job_time,
        "plots_in_job_s": float(pm.group(1)) if pm else None,
        "plots_after_job_end_s": 0.0,  # the plots arrive with the answers in the same response
        "steps_run": nums.get("steps run", ["", ""])[1],
        "forget_heldout": nums.get("forget: target named (held-out renders)"),
        "retain": nums.get("retain: other characters named / facts"),
        "text": nums.get("text: facts asked by name (no image)"),
    }


def targets(res: dict) -> dict:
    if res.get("model") == "photo":  # issue 17: a cold first visit <= 30 s from click to answers, warm <= 20 s
        return {"cold_first_visit_s<=30": res["example_request_s"] <= 30, "warm_new_example_s<=20": res["warm_new_example_s"] <= 20,
                "repeat_s<=2": res["repeat_s"] <= 2}  # fmt: skip
    return {
        "cold_first_visit_s<=10": res["example_request_s"] <= 10,  # issue 20: click -> answers and plots
        "warm_new_example_s<=6": res["warm_new_example_s"] <= 6,
        "settled_new_example_s<=6": res["settled_new_example_s"] <= 6,
        "serving_s<=10": res["serving_s"] <= 10,
        "cold_answers_and_plots_s<=15": res["example_request_s"] <= 15,
        "warm_new_example_s<=12": res["warm_new_example_s"] <= 12,
        "repeat_s<=2": res["repeat_s"] <= 2,
        "repeat_server_s<=2": (res["repeat_server_s"] or 99) <= 2,
        "plots<=3s_after_job": (res["plots_after_job_end_s"] or 0) <= 3,
    }


def numbers(table) -> dict:
    return {r[0]: r[1:] for r in table["data"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Measure the app's serving, request, plot and cache times.")
    p.add_argument("--json", required=True, help="write the numbers here")
    p.add_argument(
        "--model",
        default="world",
        choices=["world", "photo"],
        help="photo: the app on the photo model (NSCVF_MODEL=photo), its examples under assets/photo_examples",
    )
    p.add_argument(
        "--character",
        default=None,
        help="example (folder under assets/examples; photo: assets/photo_examples; default mirel / cat)",
    )
    p.add_argument("--warm-character", default=None, help="the new example of the warm request (default tobbin / espresso)")
    p.add_argument("--settled-character", default=None,
                   help="the new example asked once UMAP's warm-up has ended (default kestrin / tripod)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: UnlearnConfig's, early stopping on)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="another Advanced setting (lr, lora_rank, energy, tau, retain_weight); default UnlearnConfig's",
    )
    p.add_argument("--evaluation", default="quick", choices=["quick", "none", "full"])
    p.add_argument("--method", default="nscvf")
    p.add_argument("--data-dir", default=None, help="data dir (default: a fresh temporary one)")
    p.add_argument("--app-root", default=None, help="run this checkout's app.py (default: this script's; A/B runs)")
    return p.parse_args(argv)


def settings(args) -> dict:
    """UnlearnConfig's defaults with the ``--set k=v`` changes."""
    d = {k: v["default"] for k, v in UnlearnConfig.fields_help().items()}
    for kv in args.set:
        k, _, v = kv.partition("=")
        d[k.strip()] = float(v)
    return d


def form_args(args, files: list, d: dict) -> tuple:
    """The Forget call's inputs, in the page's order."""
    return (files, "", args.method, args.steps, d["lr"], d["lora_rank"], d["energy"], d["tau"], d["retain_weight"],
            args.evaluation, None)  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    data = Path(args.data_dir) if args.data_dir else tmp / "data"
    photo = args.model == "photo"
    folder = ROOT / "assets" / ("photo_examples" if photo else "examples")
    args.character = args.character or ("cat" if photo else "mirel")
    args.warm_character = args.warm_character or ("espresso" if photo else "tobbin")
    args.settled_character = args.settled_character or ("tripod" if photo else "kestrin")
    if photo:
        os.environ["NSCVF_MODEL"] = "photo"  # the app's default model (start() passes the environment on)
    paths, warm_paths = example_files(folder, args.character), example_files(folder, args.warm_character)
    if not paths or not warm_paths:
        raise SystemExit(f"no example renders for {args.character!r} / {args.warm_character!r}: run scripts/make_examples.py")
    d = settings(args)
    args.steps = args.steps or d["steps"]
    fargs = form_args(args, [], d)
    res: dict = {
        "model": os.environ.get("NSCVF_MODEL") or "assets/model",
        "character": args.character,
        "n_images": len(paths),
        "steps": args.steps,
        "settings": {k: d[k] for k in ("lr", "lora_rank", "energy", "tau", "retain_weight")},
        "evaluation": args.evaluation,
        "method": args.method,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_start": os.getloadavg()},
        "warm_character": args.warm_character,
    }
    log = open(tmp / "app.log", "w")
    proc = None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        root = Path(args.app_root).resolve() if args.app_root else ROOT
        res["app_root"] = str(root)
        proc, res["serving_s"] = start(port, data, tmp, log, root)
        res["serving_cpu_s"] = cpu_seconds(proc)
        files, res["upload_s"] = upload(url, paths)
        fargs = (files, *fargs[1:])
        out, res["example_request_s"], res["example_stages"], res["example_numbers_s"], nums = request(
            url, fargs, args.evaluation, proc
        )
        res["example_request_cpu_s"], res["example_load_avg"] = CPU["forget"], CPU["load"]
        res["example_with_numbers_s"] = res["example_request_s"] + res["example_numbers_s"]
        res["example_plot_method"] = plot_method(out[8])
        res["example_status"] = out[0].split("\n")[0]
        res.update(example_numbers(out, nums))
        out2, res["repeat_s"], _, res["repeat_numbers_s"], _ = request(url, fargs, args.evaluation)
        res["repeat_restored"] = "restored from the cache" in out2[0]
        m2 = re.search(r"restored from the cache\*\* in ([\d.]+) s", out2[0])
        res["repeat_server_s"] = float(m2.group(1)) if m2 else None
        res.update(new_example(url, warm_paths, fargs, proc, "warm"))
        res["load_avg_after_warm"] = os.getloadavg()
        # A server warmed up: UMAP's warm-up (a worker process at nice 19, numba compiling for ~30 s on a fresh
        # cache) ran beside the requests above; one more new example once the app's log says it ended.
        res["umap_warmup_wait_s"] = wait_for_log(tmp / "app.log", "UMAP warmed up", 120)
        res.update(new_example(url, example_files(folder, args.settled_character), fargs, proc, "settled"))
        stop(proc)
        proc, res["serving_after_restart_s"] = start(port, data, tmp, log, root)
        fargs = (upload(url, paths)[0], *fargs[1:])  # a new server: the page's files are sent again
        out3, res["repeat_after_restart_s"], _, res["repeat_after_restart_numbers_s"], _ = request(url, fargs, args.evaluation)
        res["repeat_after_restart_restored"] = "restored from the cache" in out3[0]
        stop(proc)
    except BaseException:
        print("the app's log (tail):\n" + (tmp / "app.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if proc is not None and proc.poll() is None:
            stop(proc)
        log.close()
        res["log_tail"] = (tmp / "app.log").read_text()[-1500:]
        if not args.data_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    report(res, Path(args.json))
    return 0


def new_example(url: str, paths: list, fargs: tuple, proc, name: str) -> dict:
    """A new example from a new session (no evaluation): its ``{name}_...`` numbers."""
    files, upload_s = upload(url, paths)
    out, seconds, stages, _, _ = request(url, (files, *fargs[1:]), "none", proc)
    return {f"{name}_upload_s": upload_s, f"{name}_new_example_s": seconds, f"{name}_stages": stages,
            f"{name}_new_example_cpu_s": CPU["forget"], f"{name}_load_avg": CPU["load"],
            f"{name}_new_example_status": out[0].split("\n")[0], f"{name}_plot_method": plot_method(out[8]),
            f"{name}_job_line": numbers(out[10]).get("job time (s)", ["", ""])[1]}  # fmt: skip


def report(res: dict, path: Path) -> None:
    """The targets, the JSON file, and the numbers printed."""
    res["targets"] = targets(res)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    stages = ("example_stages", "warm_stages", "settled_stages")
    for k, v in res.items():
        if k not in ("log_tail", *stages):
            print(f"{k}: {v}")
    for k in stages:
        print(f"{k} (first seen, s after submit):", ", ".join(f"{d}@{t}" for d, t in res[k]))


if __name__ == "__main__":
    raise SystemExit(main())
