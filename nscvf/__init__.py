"""nscvf: null-space constrained contrastive visual forgetting (NSCVF) for multimodal LLMs.

The library knows nothing of Gradio. Entry points: :func:`nscvf.models.load_model`,
:func:`nscvf.eval.evaluate`, :func:`nscvf.unlearn` (the engine), and the ``nscvf`` CLI.
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Quiet transformers' per-load progress bars and advisory warnings without importing it here: importing
# nscvf must not import huggingface_hub, which reads HF_HUB_OFFLINE once (nscvf.source decides it first).
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if "transformers" in sys.modules:  # imported before nscvf: its settings are read already
    from transformers.utils import logging as _hf_logging

    _hf_logging.set_verbosity_error()
    _hf_logging.disable_progress_bar()

__version__ = "0.1.0"


def unlearn(vlm, forget_images, retain_images=None, config=None, **kwargs):
    """Forget the concept shown in ``forget_images`` (see :func:`nscvf.method.chain.unlearn`)."""
    # The engine imports torch (seconds): `import nscvf` (the CLI, the app's settings) stays light without it.
    from nscvf.method.chain import unlearn as _unlearn

    return _unlearn(vlm, forget_images, retain_images, config, **kwargs)
