import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As app.py: torch's OpenMP threads spin-waiting for each other made every test ~10x slower while another
# process held a core (a small request: 5.2 s with this, 58 s without, at load 7 on 2 cores).
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
