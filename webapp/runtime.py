"""The process's singletons, made by :func:`create` (called by ``ui.launch``), never at import: the one
base model (loaded in a background thread while the page already serves), the result cache, UMAP's
warm-up and the session registry."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass

from nscvf.errors import NSCVFError
from webapp.sessions import Registry
from webapp.settings import Settings

log = logging.getLogger("nscvf.app")

try:  # Hugging Face ZeroGPU: the compute function runs with a GPU attached; elsewhere a no-op.
    import spaces  # type: ignore

    gpu = spaces.GPU(duration=120)
except Exception:  # noqa: BLE001  (not installed, or not on a Space)

    def gpu(fn):
        return fn


class NotReady(NSCVFError):
    """The model is still loading, or could not be loaded."""


class Warmup:
    """Compile UMAP exactly as the plots use it (cosine metric, fit *and* transform: ~25 s of numba JIT on
    first use, ~0.3 s after), in the background, so that the first plots come at once."""

    def __init__(self):
        self.done = threading.Event()
        self.seconds: float | None = None
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name="umap-warmup", daemon=True).start()

    def _run(self) -> None:
        try:
            import numpy as np

            from nscvf import plots

            rng = np.random.default_rng(0)
            before = rng.normal(size=(40, 32)).astype(np.float32)
            after = before + 0.1 * rng.normal(size=before.shape).astype(np.float32)
            groups = ["forget"] * 8 + ["retain"] * 22 + ["unknown"] * 10
            t = time.time()
            plots.embedding_figures(before, after, groups, [str(i) for i in range(40)], method="umap")
            self.seconds = round(time.time() - t, 2)
            log.info("UMAP warmed up in %.1f s", self.seconds)
        except Exception:  # noqa: BLE001  (PCA still works without UMAP)
            log.warning("UMAP warm-up failed:\n%s", traceback.format_exc())
        finally:
            self.done.set()

    def wait(self, seconds: float) -> bool:
        """Start the warm-up if needed; True once it is done (waiting at most ``seconds``)."""
        self.start()
        return self.done.wait(seconds)


class ModelHolder:
    """The shared base model, loaded once in a background thread; then UMAP's warm-up starts (after the
    model, not beside it: on 2 cores both would be slower)."""

    def __init__(self, settings: Settings, warmup: Warmup, vlm=None, cache=None):
        self.settings = settings
        self.warmup = warmup
        self._ready = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self.vlm, self.cache = vlm, cache
        self.error: str | None = None
        self.seconds: float | None = None
        if vlm is not None:  # already loaded (tests)
            self._started = True
            self._ready.set()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def _load(self) -> None:
        t = time.time()
        try:
            from nscvf.cache import Cache
            from nscvf.method.chain import UnlearningChain  # noqa: F401  (import the engine now, not on click)
            from nscvf.models import load_model

            self.cache = Cache(self.settings.data_dir / "cache")
            vlm = load_model()
            _ = vlm.fingerprint  # computed once here, not on the first click
            self.vlm = vlm
            log.info("model %s loaded on %s (%s) in %.1f s", vlm.source, vlm.device, vlm.dtype, time.time() - t)
        except NSCVFError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001
            log.error("model load failed:\n%s", traceback.format_exc())
            self.error = f"the model could not be loaded ({type(e).__name__}); see the server log"
        finally:
            self.seconds = round(time.time() - t, 2)
            self._ready.set()
            self.warmup.start()

    def get(self, timeout: float = 600):
        """The loaded model (waiting for the loader), or :class:`NotReady` with a message for the page."""
        self.start()
        if not self._ready.wait(timeout):
            raise NotReady("the model is still loading; try again in a moment")
        if self.error:
            raise NotReady(self.error)
        return self.vlm

    def wait(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None


@dataclass
class Runtime:
    settings: Settings
    model: ModelHolder
    warmup: Warmup
    sessions: Registry


_current: Runtime | None = None
_lock = threading.Lock()


def create(settings: Settings, vlm=None, cache=None) -> Runtime:
    """The process's runtime (made once; later calls return it). ``vlm``/``cache``: an already loaded model
    (tests); otherwise :meth:`ModelHolder.start` loads ``load_model()`` in the background."""
    global _current
    with _lock:
        if _current is None:
            warmup = Warmup()
            _current = Runtime(settings, ModelHolder(settings, warmup, vlm, cache), warmup, Registry(settings.max_sessions))
        return _current


def local(settings: Settings, vlm, cache, warm_up: bool = True) -> Runtime:
    """A private runtime around an already loaded model (not the process's: tests, scripts). Without
    ``warm_up`` UMAP is never compiled: the plots are PCA, labelled as drawn during the warm-up."""
    warmup = Warmup()
    warmup._started = not warm_up
    return Runtime(settings, ModelHolder(settings, warmup, vlm, cache), warmup, Registry(settings.max_sessions))


def current() -> Runtime:
    if _current is None:
        raise NotReady("the app is not started (webapp.ui.launch() creates the runtime)")
    return _current
