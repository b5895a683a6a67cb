"""NSCVF, the web app: make a vision-language model forget what it sees, and watch what changes.

    python app.py          # serves on $GRADIO_SERVER_PORT (default 7860)

The Space's entry file, run from a plain checkout (a Space does not pip-install the repository: the
``nscvf`` and ``webapp`` packages import from this folder). It sets the environment's defaults before
Gradio or huggingface_hub are imported (offline mode for a local model only: a Hub id in ``NSCVF_MODEL``
downloads), imports ``spaces`` before anything can initialise CUDA (ZeroGPU requires it; elsewhere a
no-op), then serves :func:`webapp.page.app.launch`. The app itself is the ``webapp`` package, in four
layers (``state``, ``service``, ``views``, ``page``: ARCHITECTURE.md); ``app.demo`` is the page, built on
first access. Environment: see :mod:`webapp.state.settings`, plus ``GRADIO_SERVER_NAME`` /
``GRADIO_SERVER_PORT``.
"""

import os

# Quiet, and offline for a local model, before anything imports gradio or huggingface_hub.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine a spinning torch thread waits
# for a descheduled one, and a 256x256 matmul loop ran 10x slower with 2 threads than with 1 (6.5 s vs
# 0.6 s; 0.64 s with PASSIVE). Measured 6.1 s/step instead of 0.16 while another process held one core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if os.environ.get("GRADIO_SERVER_PORT", None) == "":  # an empty value crashes `import gradio`
    del os.environ["GRADIO_SERVER_PORT"]

from nscvf.source import set_offline_default  # noqa: E402  (standard library only)

set_offline_default()

try:  # ZeroGPU: `import spaces` must come before anything initialises CUDA (a no-op off ZeroGPU)
    import spaces  # noqa: E402, F401
except ImportError:  # not installed (pip install -e . without it): no ZeroGPU, nothing else changes
    pass


def __getattr__(name: str):
    """``app.demo``: the page, built on first access (Spaces and tools that look for it)."""
    if name == "demo":
        from webapp.page import app  # imports gradio: only after the environment above is set

        return app.demo()
    raise AttributeError(f"module 'app' has no attribute {name!r}")


if __name__ == "__main__":
    from webapp.page import app  # imports gradio: only after the environment above is set

    app.main()
