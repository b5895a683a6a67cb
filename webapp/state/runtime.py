"""The process's singletons, made by :func:`create` (called by :func:`webapp.page.app.launch`), never at
import: the one base model (loaded in a background thread while the page already serves), the result cache,
UMAP's worker process (:mod:`webapp.state.umap_worker`), the session registry, the cost estimate and the
visitors' turns (:mod:`webapp.state.turns`)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass

from nscvf.cache import Cache
from nscvf.errors import NSCVFError
from webapp.state.sessions import Registry
from webapp.state.settings import OVERHEAD_S, POLL_S, SECONDS_PER_STEP, Settings, steps_max
from webapp.state.turns import Cost, Turns
from webapp.state.umap_worker import UmapWorker

log = logging.getLogger("nscvf.app")


class NotReady(NSCVFError):
    """The model is still loading, or could not be loaded."""


@dataclass
class Estimate:
    """What a request costs on this machine: seconds per optimisation step, the rest before training, and
    what comes after it (measure, retained answers, plots). First guesses from the settings, then a moving
    average of the finished requests. Used to refuse settings that cannot finish within the time limit and
    to stop training early enough that a request at the limit is still measured and kept (partial)."""

    seconds_per_step: float = SECONDS_PER_STEP
    before_s: float = OVERHEAD_S / 2  # reading, base answers, references, null space
    after_s: float = OVERHEAD_S / 2  # measuring, retained answers, plots
    # The share of its Steps a request that stops once forgotten runs (a moving average; first guess 0.5:
    # six examples at the defaults ran 10-16 of 40 steps, one 40; issue 19's ETA, 1.9x its wait at load 13).
    steps_share: float = 0.5
    # What the turns' ETAs expect of the rest of a request, in its own steps' worth (a ratio of two times
    # measured on the same machine at the same load, so the live pace scales it: turns.Turns._pace). A moving
    # average of the finished requests; first guesses measured on the embedded model (issue 19, load ~4):
    # before its steps 2.9-4.9 steps' worth in 5 default requests alone or beside another (23 for the first
    # one of a process without a warm-up), after them 5.0-10.7. ``before_s``/``after_s`` stay the time
    # limit's (at most) figures.
    before_steps: float = 5.0
    after_steps: float = 9.0

    def seconds(self, steps: int) -> float:
        """At most: every step run (the time limit's and the lanes' figure)."""
        return self.before_s + steps * self.seconds_per_step + self.after_s

    def expected_steps(self, cfg) -> int:
        """A request that stops once forgotten (``cfg.stop_when_forgotten``) runs about :attr:`steps_share` of
        its steps, never fewer than ``cfg.min_steps``."""
        share = self.steps_share if cfg.stop_when_forgotten else 1.0
        return min(cfg.steps, max(cfg.min_steps, round(share * cfg.steps)))

    def cost(self, cfg, model: str | None = None) -> Cost:
        """What a request of ``cfg`` on ``model`` (a model key) is expected to take (the turns' ETAs): its
        expected steps and the rest before and after them (:attr:`before_steps`, :attr:`after_steps`), at this
        estimate's pace."""
        sps = self.seconds_per_step
        return Cost(self.before_steps * sps, self.expected_steps(cfg), sps, self.after_steps * sps, cfg.steps, model)

    def steps_max(self, time_limit: float) -> int:
        return steps_max(time_limit, self.seconds_per_step, self.before_s + self.after_s)

    def stop_margin(self) -> float:
        """Seconds before the time limit at which training must stop to be measured in time."""
        return max(5.0, 1.5 * self.after_s + 2 * self.seconds_per_step)

    def calibrate(self, timings: dict | None) -> None:
        """Take this machine's seconds per step from the warm-up request's timings (a real request's steps,
        before any visitor's: the first ETAs and time checks are then this machine's, not the first guess).
        Its other phases ran cold (the image sets and covariances drawn for the first time): not taken."""
        sps = (timings or {}).get("seconds_per_step")
        if sps and float(sps) > 0:
            self.seconds_per_step = round(float(sps), 4)

    def update(self, timings: dict, job_s: float | None, steps_share: float | None = None) -> None:
        """Fold in a finished request: its timings, its job's seconds, and the share of its Steps it ran
        (``steps_share``: given for a request that stops once forgotten and ran to its own end)."""
        if steps_share is not None:
            self.steps_share = round(0.5 * self.steps_share + 0.5 * min(1.0, max(0.0, float(steps_share))), 3)
        t = timings or {}
        sps, opt = t.get("seconds_per_step"), t.get("optimise")
        if sps:
            self.seconds_per_step = round(0.5 * self.seconds_per_step + 0.5 * float(sps), 4)
        before = sum(float(t.get(k) or 0) for k in ("read", "base_answers", "images", "references", "null_space"))
        self.before_s = round(0.5 * self.before_s + 0.5 * before, 2)
        after = max(0.0, job_s - before - float(opt)) if job_s is not None and opt is not None else None
        if after is not None:
            self.after_s = round(0.5 * self.after_s + 0.5 * after, 2)
        if sps and float(sps) > 0:  # the rest in this request's own steps' worth (its steps ran at its load)
            self.before_steps = round(0.5 * self.before_steps + 0.5 * before / float(sps), 2)
            if after is not None:
                self.after_steps = round(0.5 * self.after_steps + 0.5 * after / float(sps), 2)


class ModelHolder:
    """The shared base model, loaded once in a background thread."""

    def __init__(self, settings: Settings, vlm=None, cache=None, source: str | None = None):
        self.settings, self.source = settings, source  # source None: load_model()'s default ($NSCVF_MODEL)
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
            # The model families import transformers' model classes (~4 s on a small CPU): in this loader
            # thread, so that the page serves before they are loaded.
            from nscvf.models import load_model

            self.cache = Cache(self.settings.data_dir / "cache")
            vlm = load_model(self.source)
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
    warmup: UmapWorker  # UMAP, in a low-priority worker process
    sessions: Registry
    estimate: Estimate
    turns: Turns = None  # fair turns between visitors' trainings (made from the settings when None)

    def __post_init__(self):
        if self.turns is None:
            s = self.settings
            self.turns = Turns(s.concurrency, s.long_concurrency, s.turn_s, POLL_S)
        self._holders: dict[str, ModelHolder] = {}
        self._holders_lock = threading.Lock()

    def holder(self, key: str | None = None) -> ModelHolder:
        """The model of ``key`` (a :class:`~webapp.state.settings.ModelChoice` key; None or the default's: the
        process's :attr:`model`), made on first use and loaded in the background, then shared by every session
        on it. Refused (:class:`NotReady`) for a model the page does not offer."""
        if key is None or key == self.settings.default_model:
            return self.model
        choice = self.settings.model(key)
        if choice is None:
            offered = ", ".join(m.key for m in self.settings.models) or "the default model"
            raise NotReady(f"this app does not offer the model {key!r}; choose one of: {offered}")
        with self._holders_lock:
            if key not in self._holders:
                self._holders[key] = ModelHolder(self.settings, source=choice.source)
            return self._holders[key]

    def holder_of(self, sess) -> ModelHolder:
        """The model a session works on (:attr:`webapp.state.sessions.Session.model`)."""
        return self.holder(getattr(sess, "model", None))


_current: Runtime | None = None
_lock = threading.Lock()


def create(settings: Settings, vlm=None, cache=None) -> Runtime:
    """The process's runtime (made once; later calls return it). ``vlm``/``cache``: an already loaded model
    (tests); otherwise :meth:`ModelHolder.start` loads ``load_model()`` in the background."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime(
                settings, ModelHolder(settings, vlm, cache), UmapWorker(), Registry(settings.max_sessions), Estimate()
            )
        return _current


def local(settings: Settings, vlm, cache, warm_up: bool = True) -> Runtime:
    """A private runtime around an already loaded model (not the process's: tests, scripts). Without
    ``warm_up`` UMAP is never compiled: the plots are PCA, labelled as drawn during the warm-up."""
    warmup = UmapWorker()
    warmup._started = not warm_up
    return Runtime(settings, ModelHolder(settings, vlm, cache), warmup, Registry(settings.max_sessions), Estimate())


def current() -> Runtime:
    if _current is None:
        raise NotReady("the app is not started (webapp.page.app.launch() creates the runtime)")
    return _current
