"""Deployable as a Space (issue 18): requirements.txt equals pyproject.toml's dependencies, offline mode
only for a local model, the ZeroGPU durations of every job kind, and (slow) a Space build simulated: a fresh
venv with only requirements.txt, a plain copy of the repository (not installed), `python app.py` serving
one Forget through gradio_client.

The venv is built once per requirements.txt (and Python version) under ``~/.cache/nscvf/space-venv/``;
``NSCVF_FRESH_VENV=1`` builds it again from nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

from nscvf import source, zerogpu
from nscvf.errors import InputError
from nscvf.models import budget

ROOT = Path(__file__).resolve().parent.parent
# The pin of the README's set-up command: a CPU wheel on local disk here (an unpinned torch pulls GBs).
TORCH_PIN = "torch==2.13.0"


def _requirements(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_requirements_txt_equals_pyproject_dependencies():
    """pyproject.toml is the source; requirements.txt (what a Gradio-SDK Space installs) repeats it."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = _requirements((ROOT / "requirements.txt").read_text())
    assert reqs == deps, "requirements.txt must list pyproject.toml's [project] dependencies, in order:\n" + "\n".join(deps)
    names = {re.split(r"[<>=!~ ]", r)[0].lower() for r in reqs}
    assert {"torch", "transformers", "peft", "accelerate", "gradio", "plotly", "umap-learn", "diskcache", "safetensors",
            "pillow", "numpy", "tqdm", "spaces"} <= names  # fmt: skip
    assert not any(r.strip() in (".", "-e .") for r in reqs), "a Space build cannot install the repository itself"


# ------------------------------------------------------------------------------------ offline mode


def test_offline_default_only_for_a_local_model(tmp_path):
    env = {}
    assert source.set_offline_default(env) is True and env["HF_HUB_OFFLINE"] == "1"  # the embedded model
    env = {"NSCVF_MODEL": str(tmp_path)}  # any local folder: nothing to download
    assert source.set_offline_default(env) is True and env["HF_HUB_OFFLINE"] == "1"
    env = {"NSCVF_MODEL": "llava-hf/llava-1.5-7b-hf"}  # a Hub id downloads: left as the environment says
    assert source.set_offline_default(env) is False and "HF_HUB_OFFLINE" not in env
    env = {"NSCVF_MODEL": "llava-hf/llava-1.5-7b-hf", "HF_HUB_OFFLINE": "1"}
    assert source.set_offline_default(env) is True and env["HF_HUB_OFFLINE"] == "1"
    env = {"HF_HUB_OFFLINE": "0"}  # the environment's word wins for the embedded model too
    assert source.set_offline_default(env) is False and env["HF_HUB_OFFLINE"] == "0"


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NSCVF_MODEL"))}
    return env | {"PYTHONPATH": str(ROOT)} | extra


@pytest.mark.parametrize(
    "model, offline",
    [(None, True), ("llava-hf/llava-1.5-7b-hf", False)],
    ids=["embedded model: offline", "hub id: left alone"],
)
def test_app_start_sets_offline_mode_before_the_hub_is_imported(model, offline):
    """What huggingface_hub itself reads after `import app` (it reads HF_HUB_OFFLINE once, at import)."""
    code = "import sys, app; assert 'huggingface_hub' not in sys.modules; import huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    env = _clean_env(**({"NSCVF_MODEL": model} if model else {}))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(offline)


def test_importing_nscvf_imports_no_hub_library():
    code = "import sys, nscvf.source; print(sorted(m for m in ('huggingface_hub', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ durations


def _state(step_seconds=2.0, fixed_seconds=45.0) -> zerogpu.ChainState:
    return zerogpu.ChainState("some/model", "fp", step_seconds, fixed_seconds)


def _requests(steps: int) -> dict:
    from nscvf.method.config import UnlearnConfig
    from nscvf.method.teach import TeachConfig

    cfg = UnlearnConfig(steps=steps)
    return {
        "forget": zerogpu.ForgetJob((), cfg),
        "compare": zerogpu.ForgetJob((), cfg.replace(method="gd")),
        "teach": zerogpu.TeachJob((), "Zorblat", config=TeachConfig(steps=steps)),
        "relearn": zerogpu.RelearnJob((), (), "Mirel", steps=steps, reference_images=()),
        "evaluate": zerogpu.EvaluateJob("Mirel", "quick"),
        "ask": zerogpu.AskJob("Who is this?"),
        "identify": zerogpu.IdentifyJob(()),
    }


@pytest.mark.parametrize("kind", list(zerogpu.JOBS))
def test_duration_of_every_job_kind(kind):
    """The duration callable gets the call's arguments (as spaces.GPU passes them) and follows the
    request's steps and the family's budgets; it is capped at what ZeroGPU allows."""
    fn = zerogpu.duration(kind)
    small, big = fn(_state(), _requests(10)[kind]), fn(_state(), _requests(40)[kind])
    expected = {
        "forget": (10 * 2 + 45) * 1.2, "compare": (10 * 2 + 45) * 1.2, "teach": (10 * 2 + 45) * 1.2,
        "relearn": (2 * 10 * 2 + 45) * 1.2, "evaluate": 2 * 45 * 0.5 * 1.2, "ask": 45 * 0.2 * 1.2,
        "identify": 45 * 0.2 * 1.2,
    }[kind]  # fmt: skip
    assert small == pytest.approx(expected, abs=1)
    if kind in ("evaluate", "ask", "identify"):
        assert big == small  # no steps
    else:
        assert big > small
    slow = fn(_state(step_seconds=50.0), _requests(40)[kind])
    assert slow <= budget.ZEROGPU_MAX_SECONDS
    assert fn(_state(step_seconds=4.0), _requests(10)[kind]) >= small  # a slower family asks for more


@pytest.mark.parametrize("kind", ["forget", "compare", "teach", "relearn"])
def test_settings_that_cannot_fit_are_refused_before_the_call(kind):
    req = _requests(400)[kind]
    with pytest.raises(InputError, match=r"needs about \d+ s of GPU time .* at most 300 s: use at most \d+ steps"):
        zerogpu.check_fits(kind, _state(), req)
    m = re.search(r"at most (\d+) steps", str(pytest.raises(InputError, zerogpu.check_fits, kind, _state(), req).value))
    fit = int(m.group(1))
    assert zerogpu.check_fits(kind, _state(), _requests(fit)[kind]) <= 300  # the number it names does fit
    with pytest.raises(InputError):
        zerogpu.check_fits(kind, _state(), _requests(fit + 1)[kind])
    assert zerogpu.check_fits(kind, _state(), _requests(10)[kind], limit=120) <= 120


def test_full_evaluation_of_a_slow_model_refused_with_what_to_do():
    with pytest.raises(InputError, match="quick evaluation"):
        zerogpu.check_fits("evaluate", _state(fixed_seconds=400.0), zerogpu.EvaluateJob("Mirel", "full"))


def test_gpu_max_seconds_from_the_environment(monkeypatch):
    monkeypatch.setenv("NSCVF_GPU_MAX_S", "120")
    assert zerogpu.max_seconds() == 120
    monkeypatch.setenv("NSCVF_GPU_MAX_S", "9999")
    assert zerogpu.max_seconds() == 300  # never more than ZeroGPU allows
    monkeypatch.setenv("NSCVF_GPU_MAX_S", "two minutes")
    assert zerogpu.max_seconds() == 300


def test_spaces_gpu_is_a_no_op_off_zerogpu(monkeypatch):
    """requirements.txt installs spaces; off ZeroGPU (SPACES_ZERO_GPU unset) its decorator returns the job
    itself, generator and duration callable included: a CPU Space and a dedicated GPU run it in-process."""
    pytest.importorskip("spaces")
    assert not zerogpu.on_zerogpu()
    zerogpu.gpu_job.cache_clear()
    for kind, fn in zerogpu.JOBS.items():
        assert zerogpu.gpu_job(kind) is fn


# ------------------------------------------------------------------------------------ the Space build


def _space_venv() -> Path:
    """A venv with only TORCH_PIN and requirements.txt installed (built once per requirements.txt)."""
    reqs = (ROOT / "requirements.txt").read_bytes()
    key = hashlib.sha256(reqs + TORCH_PIN.encode() + sys.version.encode()).hexdigest()[:12]
    venv = Path.home() / ".cache" / "nscvf" / "space-venv" / key
    python = venv / "bin" / "python"
    if os.environ.get("NSCVF_FRESH_VENV") == "1" and venv.exists():
        shutil.rmtree(venv)
    if not (venv / "ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        for args in ([TORCH_PIN], ["-r", str(ROOT / "requirements.txt")]):
            done = subprocess.run(pip + args, capture_output=True, text=True, timeout=1800)
            assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        (venv / "ok").write_text("built from requirements.txt\n")
    return python


def _plain_copy(dst: Path) -> Path:
    """The repository as a Space checks it out: its files, no install, no caches."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "runs", "data", ".pytest_cache", ".ruff_cache",
                                    "build", "dist", ".venv", "venv", "test-artifacts")  # fmt: skip
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


@pytest.mark.slow
def test_space_build_serves_a_forget_from_a_plain_checkout(tmp_path):
    from support.app_api import FORGET, STATUS, forget_args, rows
    from support.app_server import AppServer, client, example_paths

    python = _space_venv()
    info = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('nscvf'), u.find_spec('spaces') is not None)"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})  # fmt: skip
    assert info.stdout.split()[0] == "None", f"the venv must not have the package installed: {info.stdout}"
    assert info.stdout.split()[-1] == "True", "spaces is a requirement"
    repo = _plain_copy(tmp_path / "space")
    # The copy's own embedded model; offline mode and the path are app.py's business, as on a Space.
    env = {"PYTHONPATH": None, "NSCVF_MODEL": None, "HF_HUB_OFFLINE": None, "NSCVF_CACHE_DIR": str(tmp_path / "cache")}
    (tmp_path / "run").mkdir()
    server = AppServer(tmp_path / "run", env, python=str(python), root=repo, timeout=240)
    try:
        c = client(server.url)
        out = c.predict(*forget_args(example_paths("mirel"), steps=2, evaluation="none"), api_name="/forget")
        answers = [r for r in rows(out[FORGET]) if r[1] == "Who is this?"]
        assert len(answers) == len(example_paths("mirel")) and all(r[2] and r[3] for r in answers), out[STATUS]
        assert "Request 1 done" in out[STATUS], out[STATUS]
        assert f"model {repo / 'assets' / 'model'} loaded" in server.log(), server.log()  # the copy's code and model
    finally:
        server.stop()


@pytest.mark.parametrize("model, offline", [(None, "1"), ("llava-hf/llava-1.5-7b-hf", None)])
def test_cli_sets_offline_mode_only_for_a_local_model(model, offline):
    """`nscvf ask` decides like app.py, from --model, before anything imports huggingface_hub (a missing
    image ends the command before a model is loaded: exit 2)."""
    argv = ["ask", "--image", "missing.png", "Who is this?"] + (["--model", model] if model else [])
    code = (
        "import os, sys; from nscvf.cli.main import main; rc = main(sys.argv[1:]); "
        "print(rc, 'huggingface_hub' in sys.modules, os.environ.get('HF_HUB_OFFLINE'))"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "False", str(offline)]
