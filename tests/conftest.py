import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As app.py: idle OpenMP threads sleep instead of spinning. On a loaded 2-core machine torch's spinning
# threads waited for descheduled ones: tests/test_webapp_teach.py's Teach ran past the app's 600 s time
# limit without it, and passed in 206 s with it (same machine, load average ~8).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(scope="session")
def embedded():
    """The committed embedded model, loaded once."""
    from nscvf.models import load_model

    return load_model(str(ROOT / "assets" / "model"), device="cpu")


@pytest.fixture
def cache(tmp_path):
    from nscvf.cache import Cache

    return Cache(tmp_path / "cache")
