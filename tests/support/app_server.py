"""Start the app for the tests under tests/server/ (gradio_client and browser): ``python app.py`` on a free
port with a fresh data dir and temp dir, wait for it, stop it by its own PID.

Which model: ``$NSCVF_MODEL`` when set, else the embedded model under assets/model. Tests that judge
forgetting quality need a trained model; they skip when the base model does not recognise the example.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"


def model_source() -> str | None:
    src = os.environ.get("NSCVF_MODEL")
    if src:
        return src
    d = ROOT / "assets" / "model"
    return str(d) if (d / "config.json").exists() else None


def example_paths(key: str) -> list[str]:
    return sorted(str(p) for p in (EXAMPLES / key).glob("*.png"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``python app.py`` of ``root`` (default this checkout) with ``python`` (default this interpreter);
    ``extra_env`` values of None remove a variable."""

    def __init__(self, tmp: Path, extra_env: dict | None = None, python: str | None = None, root: Path | None = None,
                 timeout: float = 90):  # fmt: skip
        src = model_source()
        if src is None:
            pytest.skip("no model: assets/model is missing and NSCVF_MODEL is unset")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tmp)
        env = {
            **os.environ,
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "GRADIO_TEMP_DIR": str(self.tmp / "gradio"),
            "NSCVF_DATA_DIR": str(self.tmp / "data"),
            "NSCVF_MODEL": src,
            "PYTHONUNBUFFERED": "1",
        }
        # Keep UMAP's JIT cache between runs when the caller shares one (it only holds compiled code).
        env.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "nscvf" / "numba"))
        # No warm-up request before serving (issue 20) unless a test asks for it: tests/server/test_app.py does.
        env.setdefault("NSCVF_WARMUP", "0")
        env.update(extra_env or {})
        env = {k: v for k, v in env.items() if v is not None}
        root = Path(root or ROOT)
        self.log_path = self.tmp / "app.log"
        self._log = open(self.log_path, "w")
        self.t0 = time.time()
        self.proc = subprocess.Popen(
            [python or sys.executable, str(root / "app.py")], cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.serving_s = self._wait(timeout)

    def _wait(self, timeout: float = 90) -> float:
        while time.time() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                    if r.status == 200:
                        return time.time() - self.t0
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"app did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def client(url: str):
    from gradio_client import Client

    return Client(url, analytics_enabled=False, verbose=False)
