"""NSCVF, the web app: make a vision-language model forget what it sees, and watch what changes.

    python app.py          # serves on $GRADIO_SERVER_PORT (default 7860)

The app composes the library (``nscvf``), which knows nothing of Gradio. Every visitor gets a private
:class:`~nscvf.method.unlearn.UnlearningChain` (a copy of the shared base model; the base is never
modified), kept in a per-session registry keyed by an id held in ``gr.State`` and freed on unload.
Compute runs in one queue (``concurrency_id="compute"``); each Forget runs in a worker thread so that the
progress bar names the stage at least every second and Cancel stops it cleanly between stages/steps.
Finished requests are stored in a diskcache under ``$NSCVF_DATA_DIR`` (default ``./data``), keyed by the
chain state (model fingerprint + earlier adapters), the image-set fingerprint, the settings and the
name: a repeated request is restored (adapter weights included) without retraining, also after a restart.

Environment: ``NSCVF_MODEL`` (model folder or id; default the embedded model), ``NSCVF_DATA_DIR``,
``NSCVF_MAX_QUEUE`` (16), ``NSCVF_TIME_LIMIT`` (seconds per request, 600), ``NSCVF_MAX_FILES`` (32),
``NSCVF_MAX_FILE_MB`` (20), ``NSCVF_MAX_SESSIONS`` (32), ``NSCVF_CONCURRENCY`` (1),
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``.
"""

import os

# Offline and quiet before anything imports gradio or huggingface_hub.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("GRADIO_SERVER_PORT", None) == "":  # an empty value crashes `import gradio`
    del os.environ["GRADIO_SERVER_PORT"]

import contextvars  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections import OrderedDict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("NSCVF_DATA_DIR") or "data").expanduser().resolve()
os.environ.setdefault("NUMBA_CACHE_DIR", str(DATA_DIR / "numba"))  # UMAP's JIT survives restarts

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from nscvf import world  # noqa: E402  (light: numpy + PIL; torch is imported by the model loader thread)
from nscvf.errors import Cancelled, InputError, NSCVFError  # noqa: E402
from nscvf.images import MAX_FILE_BYTES, load_image  # noqa: E402

log = logging.getLogger("nscvf.app")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default


MAX_QUEUE = _env_int("NSCVF_MAX_QUEUE", 16)
TIME_LIMIT = _env_int("NSCVF_TIME_LIMIT", 600)
MAX_FILES = _env_int("NSCVF_MAX_FILES", 32)
MAX_FILE_MB = _env_int("NSCVF_MAX_FILE_MB", MAX_FILE_BYTES // 2**20)
MAX_SESSIONS = _env_int("NSCVF_MAX_SESSIONS", 32)
CONCURRENCY = max(1, _env_int("NSCVF_CONCURRENCY", 1))
EXAMPLES_DIR = ROOT / "assets" / "examples"
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
RECORD_VERSION = 1
POLL_S = 0.5  # progress refresh period of a running request

# The methods the app offers (the engine's registry; checked against it once the model is loaded).
METHOD_CHOICES = [
    ("NSCVF (null-space constrained contrastive visual forgetting)", "nscvf"),
    ("CVF: NSCVF without the null space", "cvf"),
    ("NSCVF on the projector only", "nscvf_projector"),
    ("GA: gradient ascent (baseline)", "ga"),
    ("GD: gradient difference (baseline)", "gd"),
    ("KL: ascent + KL on retained (baseline)", "kl"),
    ("NPO (baseline)", "npo"),
]


def _config_fields() -> dict[str, dict]:
    """UnlearnConfig's defaults and ranges, read without importing the engine (torch) at start-up."""
    import importlib.util

    spec = importlib.util.find_spec("nscvf.method")
    path = Path(spec.submodule_search_locations[0]) / "config.py"
    mod_spec = importlib.util.spec_from_file_location("_nscvf_config_fields", path)
    mod = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = mod  # dataclasses look the module up while building the class
    try:
        mod_spec.loader.exec_module(mod)
        return mod.UnlearnConfig.fields_help()
    finally:
        sys.modules.pop(mod_spec.name, None)


FIELDS = _config_fields()
# The Advanced settings: (field, label, integer?)
ADVANCED = [
    ("steps", "Steps", True),
    ("lr", "Learning rate", False),
    ("lora_rank", "LoRA rank", True),
    ("energy", "Null-space energy threshold", False),
    ("tau", "Temperature (InfoNCE)", False),
    ("retain_weight", "Retain weight", False),
]


# ------------------------------------------------------------------------------------------ ZeroGPU

try:  # Hugging Face ZeroGPU: the compute function runs with a GPU attached; elsewhere a no-op.
    import spaces  # type: ignore

    _gpu = spaces.GPU(duration=120)
except Exception:  # noqa: BLE001  (not installed, or not on a Space)

    def _gpu(fn):
        return fn


# -------------------------------------------------------------------------------------- the model


class ModelHolder:
    """The shared base model, loaded once in a background thread (the page serves meanwhile)."""

    def __init__(self):
        self._ready = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self.vlm = None
        self.error: str | None = None
        self.seconds: float | None = None
        self.cache = None

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
            from nscvf.method.registry import all_methods
            from nscvf.method.unlearn import UnlearningChain  # noqa: F401  (import the engine now, not on click)
            from nscvf.models import load_model

            self.cache = Cache(DATA_DIR / "cache")
            vlm = load_model()
            _ = vlm.fingerprint  # computed once here, not on the first click
            missing = [m for _, m in METHOD_CHOICES if m not in all_methods()]
            if missing:
                log.warning("methods offered by the app but not registered: %s", missing)
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
            CHAINS.refill()
            start_warm_up()  # after the model, not beside it: on 2 cores both would be slower

    def get(self, timeout: float = 600):
        self.start()
        if not self._ready.wait(timeout):
            raise gr.Error("The model is still loading; try again in a moment.")
        if self.error:
            raise gr.Error(self.error)
        return self.vlm

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None


MODEL = ModelHolder()


class ChainPool:
    """One spare fresh chain (a private copy of the base model), made in the background, so that a new
    session's first request does not wait for the copy."""

    def __init__(self):
        self._spare = None
        self._lock = threading.Lock()
        self._making = False

    def take(self):
        from nscvf.method.unlearn import UnlearningChain

        with self._lock:
            chain, self._spare = self._spare, None
        if chain is None:
            chain = UnlearningChain(MODEL.get(), MODEL.cache)
        self.refill()
        return chain

    def refill(self) -> None:
        with self._lock:
            if self._making or self._spare is not None or not MODEL.ready:
                return
            self._making = True

        def make():
            from nscvf.method.unlearn import UnlearningChain

            try:
                chain = UnlearningChain(MODEL.vlm, MODEL.cache)
                with self._lock:
                    self._spare = chain
            except Exception:  # noqa: BLE001  (take() makes one itself)
                log.warning("could not prepare a spare chain:\n%s", traceback.format_exc())
            finally:
                with self._lock:
                    self._making = False

        threading.Thread(target=make, name="spare-chain", daemon=True).start()


CHAINS = ChainPool()


def _warm_plots() -> None:
    """Compile UMAP exactly as the plots use it (cosine metric, fit *and* transform: ~25 s of numba JIT on
    first use, ~0.3 s after), in the background at start-up, so that the first plots come at once."""
    try:
        import numpy as np

        from nscvf import plots

        rng = np.random.default_rng(0)
        before = rng.normal(size=(40, 32)).astype(np.float32)
        after = before + 0.1 * rng.normal(size=before.shape).astype(np.float32)
        groups = ["forget"] * 8 + ["retain"] * 22 + ["unknown"] * 10
        t = time.time()
        plots.embedding_figures(before, after, groups, [str(i) for i in range(40)], method="umap")
        WARM["umap_s"] = round(time.time() - t, 2)
        log.info("UMAP warmed up in %.1f s", time.time() - t)
    except Exception:  # noqa: BLE001  (PCA still works without UMAP)
        log.warning("UMAP warm-up failed:\n%s", traceback.format_exc())
    finally:
        WARM["done"].set()


WARM: dict = {"done": threading.Event(), "started": False, "lock": threading.Lock()}
UMAP_WAIT_S = 1.0  # a plot waits this long for the warm-up before falling back to PCA (labelled)


def start_warm_up() -> None:
    with WARM["lock"]:
        if WARM["started"]:
            return
        WARM["started"] = True
    threading.Thread(target=_warm_plots, name="umap-warmup", daemon=True).start()


# ----------------------------------------------------------------------------------------- sessions


@dataclass
class Job:
    """One running Forget: its progress (written by the engine's callback) and its cancel flag."""

    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stage: str = "waiting"
    step: int = 0
    total: int = 1
    started: float = field(default_factory=time.time)
    record: dict | None = None
    error: BaseException | None = None
    timed_out: bool = False

    def update(self, stage: str, done: int, total: int) -> None:
        self.stage, self.step, self.total = stage, done, max(1, total)


@dataclass
class Session:
    sid: str
    chain: Any = None
    records: list = field(default_factory=list)  # one display record per request of the chain
    job: Job | None = None
    pending: int = 0  # requests of this session waiting in the queue (browser clicks)
    numbers_due: bool = False  # the last Forget succeeded and its accuracies are still to show
    cancel_pending: bool = False
    last_used: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sessions:
    """The per-session registry: chains and results live here; gr.State holds only the id."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._s: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sid: str) -> Session:
        with self._lock:
            s = self._s.get(sid)
            if s is None:
                s = self._s[sid] = Session(sid)
            self._s.move_to_end(sid)
            s.last_used = time.time()
            while len(self._s) > self.capacity:
                idle = next((k for k, v in self._s.items() if v.job is None and k != sid), None)
                if idle is None:
                    break
                self._s.pop(idle)
                log.info("session %s evicted (registry full)", idle[:8])
            return s

    def peek(self, sid: str | None) -> Session | None:
        with self._lock:
            return self._s.get(sid) if sid else None

    def free(self, sid: str | None) -> None:
        with self._lock:
            s = self._s.pop(sid, None) if sid else None
        if s is not None:
            if s.job is not None:
                s.job.cancel.set()
            log.info("session %s freed", sid[:8])

    def __len__(self) -> int:
        return len(self._s)

    def __contains__(self, sid) -> bool:
        return sid in self._s


SESSIONS = Sessions(MAX_SESSIONS)


def _sid(sid: str | None, request: gr.Request | None) -> str:
    if sid:
        return sid
    h = getattr(request, "session_hash", None) if request is not None else None
    return h or uuid.uuid4().hex


def free_session(request: gr.Request):
    """demo.unload: the tab was closed; drop its chain and cancel its job."""
    SESSIONS.free(getattr(request, "session_hash", None))


def _free_state(sid) -> None:
    """gr.State delete_callback (the session expired)."""
    SESSIONS.free(sid)


# ------------------------------------------------------------------------------------ input checks


def _paths(files, what: str = "images") -> list[str]:
    if not files:
        raise InputError("no images: upload one or more images of what to forget, or click an example character")
    if not isinstance(files, (list, tuple)):
        files = [files]
    paths = []
    for f in files:
        p = f if isinstance(f, (str, os.PathLike)) else (f.get("path") if isinstance(f, dict) else getattr(f, "name", None))
        if p:
            paths.append(str(p))
    if not paths:
        raise InputError("no images: upload one or more images of what to forget, or click an example character")
    if len(paths) > MAX_FILES:
        raise InputError(f"{len(paths)} {what} is too many: upload at most {MAX_FILES}")
    return paths


def _load_images(paths: list[str]) -> list:
    """Every image or one clear error naming the file (its own name, never a server path)."""
    return [load_image(p) for p in paths]


def _number(name: str, value, integer: bool):
    meta = FIELDS[name]
    if value is None or value == "":
        raise InputError(f"{name} is empty; enter a number from {meta['lo']:g} to {meta['hi']:g}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise InputError(f"{name}={value!r} is not a number")
    if integer:
        if v != int(v):
            raise InputError(f"{name}={value:g} must be a whole number")
        return int(v)
    return v


def make_config(method: str, steps, lr, lora_rank, energy, tau, retain_weight, evaluation: str = "quick"):
    """UnlearnConfig from the form, validated (InputError with the field, its range and its meaning).
    ``evaluation`` is validated here but run by the app after the answers are shown (see :func:`numbers`),
    so the engine gets ``evaluate="none"``."""
    from nscvf.method.config import UnlearnConfig
    from nscvf.method.registry import method_config

    values = dict(zip([f for f, _, _ in ADVANCED], (steps, lr, lora_rank, energy, tau, retain_weight)))
    changes = {f: _number(f, values[f], integer) for f, _, integer in ADVANCED}
    method = (method or "nscvf").strip()
    changes["method"] = method
    if (evaluation or "quick") not in FIELDS["evaluate"]["choices"]:
        raise InputError(f"evaluation={evaluation!r} is not valid; choose one of {', '.join(FIELDS['evaluate']['choices'])}")
    changes["evaluate"] = "none"
    return method_config(UnlearnConfig().replace(**changes).validate())


def _target(name: str | None, vlm) -> str | None:
    from nscvf.method.unlearn import is_world_model

    name = (name or "").strip()
    if not name:
        return None
    if len(name) > 80:
        raise InputError("the name is too long (at most 80 characters)")
    if is_world_model(vlm):
        return world.get_character(name).name  # InputError listing the known names
    return name


# -------------------------------------------------------------------------------------- the records


def _result_key(chain, images, cfg, target, retain=None) -> tuple:
    from nscvf.cache import image_set_fingerprint

    return (
        "app-result",
        RECORD_VERSION,
        chain.state_fingerprint,
        image_set_fingerprint(images),
        cfg.key(),
        target or "",
        image_set_fingerprint(retain) if retain else "",
    )


def _retained_characters(target: str | None, forgotten: list[str]) -> list:
    """A few characters that must not change: those sharing the target's shape or colour first."""
    out = [c for c in world.CHARACTERS if c.name not in forgotten]
    if target:
        t = world.get_character(target)
        out.sort(key=lambda c: (c.shape != t.shape and c.colour != t.colour, world.CHARACTERS.index(c)))
    return out[:3]


def _retain_rows(chain, target: str | None, retain=None) -> list[list[str]]:
    from nscvf.method.unlearn import is_world_model, probe_questions

    if not is_world_model(chain.vlm):  # another model: the first uploaded images to keep
        imgs = list(retain or [])[:3]
        qs = probe_questions(chain.vlm)
        flat_q = [q for _ in imgs for q in qs]
        flat_i = [im for im in imgs for _ in qs]
        if not imgs:
            return []
        before = chain.base_vlm.generate(flat_q, flat_i)
        after = chain.vlm.generate(flat_q, flat_i)
        return [
            [f"kept image #{k // len(qs) + 1}", q, before[k], after[k], "same" if before[k] == after[k] else "CHANGED"]
            for k, q in enumerate(flat_q)
        ]
    forgotten = chain.forgotten_targets
    chars = _retained_characters(target, forgotten + ([target] if target else []))
    qs = ["Who is this?", world.IMAGE_FACT_TEMPLATES["town"]["train"][0]]
    imgs = [world.render(c, world.HELDOUT_SEED_BASE + 9000 + i) for i, c in enumerate(chars)]
    flat_q = [q for _ in chars for q in qs]
    flat_i = [im for im in imgs for _ in qs]
    before = chain.base_vlm.generate(flat_q, flat_i)
    after = chain.vlm.generate(flat_q, flat_i)
    return [
        [f"{c.name} (held-out render)", q, before[k], after[k], "same" if before[k] == after[k] else "CHANGED"]
        for k, (c, q) in enumerate((c, q) for c in chars for q in qs)
    ]


def _figures(emb: dict) -> dict:
    """The two embedding figures (as plotly JSON). UMAP once warmed up; while UMAP is still compiling
    (the first ~30-60 s after start on a small CPU) PCA, labelled as such and redrawn on a later view."""
    import numpy as np

    from nscvf import plots

    if not emb or not emb.get("before"):
        return {"before": None, "after": None, "method": "none"}
    start_warm_up()
    small = len(emb["before"]) < plots.MIN_UMAP_POINTS
    warm = small or WARM["done"].wait(UMAP_WAIT_S)
    fb, fa, method = plots.embedding_figures(
        np.asarray(emb["before"]), np.asarray(emb["after"]), emb["groups"], emb["labels"], method="auto" if warm else "pca"
    )
    if not warm:
        for title, fig in (("Before", fb), ("After", fa)):
            fig.update_layout(title=f"{title} (PCA: UMAP is still warming up)")
    return {"before": fb.to_json(), "after": fa.to_json(), "method": method, "warming_up": not warm}


@_gpu
def _compute(chain, images, cfg, target, job: Job, retain=None) -> dict:
    """One request, start to finish (the function ZeroGPU would give a GPU): train, probe, draw."""
    t0 = time.time()
    r = chain.forget(images, retain, cfg, progress=job.update, cancel=job.cancel, target=target)
    step = chain.steps[-1]
    try:
        job.update("retained characters", 0, 1)
        if job.cancel.is_set():
            raise Cancelled("cancelled; the model is unchanged")
        retain_rows = _retain_rows(chain, r.target, retain)
        job.update("drawing plots", 0, 1)
        if job.cancel.is_set():
            raise Cancelled("cancelled; the model is unchanged")
        tp = time.time()
        figures = _figures(r.embeddings)
        plot_s = round(time.time() - tp, 3)
    except BaseException:
        chain.undo()  # cancelled (or failed) after training: leave the chain as it was
        raise
    return {
        "version": RECORD_VERSION,
        "result": r.to_dict(),
        "adapter": step.name,
        "state_dict": {k: v.detach().cpu().clone() for k, v in step.state_dict.items()},
        "retain_rows": retain_rows,
        "figures": figures,
        "app_timings": {"job": round(time.time() - t0, 3), "plots": plot_s},
        "created": time.time(),
    }


def restore_step(chain, rec: dict, images) -> None:
    """Append a finished request to ``chain`` from its record (no retraining): its adapter weights,
    configuration and result, so that later requests, Undo and Ask see exactly the trained model."""
    chain.restore(rec["result"], rec["state_dict"], images)


# -------------------------------------------------------------------------------------- rendering

FORGET_HEADERS = ["image", "question", "before", "after", "named before", "named after"]
RETAIN_HEADERS = ["character", "question", "before", "after", "change"]
TEXT_HEADERS = ["question (text only, no image)", "before", "after", "change"]
NUMBER_HEADERS = ["measure", "before", "after"]
HISTORY_HEADERS = ["request", "target", "method", "steps", "target named (held-out)", "others named", "time (s)"]


def _df(rows, headers) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _names(answer: str) -> str:
    from nscvf.eval import names_in

    n = sorted(names_in(answer))
    return ", ".join(n) if n else "-"


def _forget_rows(r: dict, names: list[str]) -> list[list[str]]:
    pb, pa = r["probes_before"]["forget"], r["probes_after"]["forget"]
    qs = pb["questions"]
    rows = []
    for i in range(r["n_forget"]):
        fact_q = qs[1 + i % (len(qs) - 1)] if len(qs) > 1 else None
        for q in [qs[0]] + ([fact_q] if fact_q else []):
            b, a = pb["answers"][q][i], pa["answers"][q][i]
            label = f"#{i + 1} {names[i]}" if i < len(names) else f"#{i + 1}"
            rows.append([label, q, b, a, _names(b), _names(a)])
    return rows


def _text_rows(r: dict) -> tuple[list[list[str]], str]:
    tb, ta = r["probes_before"].get("text"), r["probes_after"].get("text")
    if r.get("text_logits_identical"):
        logits = " and the next-token logits are bit-identical"
    else:
        logits = "; the next-token logits differ"
    if not tb or not ta:
        note = "**Text-only:** this model has no text probes; " + (
            "the next-token logits of text prompts are bit-identical: unlearning touched only the visual path."
            if r.get("text_logits_identical")
            else "text logits changed."
        )
        return [], note
    target = r.get("target")
    pairs = list(zip(tb["questions"], tb["answers"], ta["answers"]))
    about = [p for p in pairs if target and target in p[0]] or pairs[:6]
    rows = [[q, b, a, "same" if a == b else "CHANGED"] for q, b, a in about]
    n = len(pairs)
    if r.get("text_identical"):
        note = (
            f"**Text-only answers are identical before and after** on all {n} text questions{logits}: "
            "unlearning touched only the visual path, so the model still knows the facts when asked by name."
        )
    else:
        changed = sum(1 for _, b, a in pairs if a != b)
        note = f"**Text-only answers changed** on {changed} of {n} text questions{logits}."
    return rows, note


def _eval_summaries(rec: dict) -> tuple[dict, dict]:
    ev = rec.get("evals") or {}
    r = rec["result"]
    before = ev.get("before") or r.get("eval_before") or {}
    after = ev.get("after") or r.get("eval_after") or {}
    return before.get("summary") or {}, after.get("summary") or {}


def _number_rows(r: dict, rec: dict) -> list[list[str]]:
    eb, ea = _eval_summaries(rec)
    rows = []
    for key, label in (
        ("target_name_acc", "forget: target named (training renders)"),
        ("target_name_acc_heldout", "forget: target named (held-out renders)"),
        ("target_fact_image_acc_heldout", "forget: target's facts from image (held-out)"),
        ("target_unknown_rate", 'forget: target answered "I don\'t know"'),
        ("retain_acc", "retain: other characters named / facts"),
        ("fact_text_acc", "text: facts asked by name (no image)"),
        ("unknown_rate_unseen_distractors", 'unknown: unseen characters answered "I don\'t know"'),
    ):
        if key in eb or key in ea:
            rows.append([label, _pct(eb.get(key)), _pct(ea.get(key))])
    if not rows:
        if rec.get("evaluation", "none") == "none":
            rows.append(["accuracies", "not evaluated", "(set Evaluation to quick or full)"])
        else:
            rows.append(["accuracies", "evaluating…", "(the accuracies follow the answers)"])
    d = r.get("retain_drift") or {}
    rows.append(["retain drift of visual features (mean / max)", "0", f"{d.get('mean', 'n/a')} / {d.get('max', 'n/a')}"])
    ns = (r.get("null_space") or {}).get("summary") or {}
    if ns.get("layers"):
        rows.append(
            [
                "null space: mean kept rank (share of dims)",
                "",
                f"{ns['mean_kept_rank']} ({100 * ns['mean_kept_fraction']:.1f}%) over {ns['layers']} layers",
            ]
        )
    else:
        rows.append(["null space", "", "not used by this method"])
    rows.append(
        ["text answers identical / logits identical", "", f"{r.get('text_identical')} / {r.get('text_logits_identical')}"]
    )
    rows.append(["steps run", "", f"{r.get('steps_run')}{' (stopped early: forgotten)' if r.get('stopped_early') else ''}"])
    t = r.get("timings") or {}
    rows.append(
        [
            "job time (s)",
            "",
            f"{rec.get('app_timings', {}).get('job', t.get('total', 'n/a'))} (engine {t.get('total', 'n/a')}: "
            f"optimise {t.get('optimise', 'n/a')}, {t.get('seconds_per_step', 'n/a')} s/step; plots "
            f"{rec.get('app_timings', {}).get('plots', 'n/a')})",
        ]
    )
    ev = rec.get("evals") or {}
    if ev.get("seconds") is not None:
        rows.append([f"evaluation time (s, {ev['mode']})", f"{ev['seconds_before']}", f"{ev['seconds_after']}"])
    cache = r.get("cache") or {}
    if cache:
        rows.append(["reused from the cache", "", ", ".join(f"{k}: {v}" for k, v in cache.items())])
    return rows


def _history_rows(sess: Session) -> list[list]:
    rows = []
    for i, rec in enumerate(sess.records):
        r = rec["result"]
        s = _eval_summaries(rec)[1]
        rows.append(
            [
                i + 1,
                r.get("target") or "?",
                r["method"],
                r["steps_run"],
                _pct(s.get("target_name_acc_heldout")),
                _pct(s.get("retain_acc")),
                (r.get("timings") or {}).get("total"),
            ]
        )
    return rows


OUTPUT_NAMES = [
    "sid",
    "status",
    "history",
    "gallery",
    "forget_table",
    "retain_table",
    "text_note",
    "text_table",
    "plot_before",
    "plot_after",
    "plot_note",
    "numbers",
]


def _empty_outputs(sid: str, status: str, sess: Session | None = None) -> tuple:
    return (
        sid,
        status,
        _df(_history_rows(sess) if sess else [], HISTORY_HEADERS),
        gr.skip(),
        _df([], FORGET_HEADERS),
        _df([], RETAIN_HEADERS),
        "",
        _df([], TEXT_HEADERS),
        None,
        None,
        "",
        _df([], NUMBER_HEADERS),
    )


BROWSER_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


def _shown(image, paths, i):
    """The uploaded file itself where a browser shows it as is (no re-encoding), else the decoded image."""
    p = paths[i] if paths and i < len(paths) else None
    return p if p and Path(p).suffix.lower() in BROWSER_TYPES else image


def _render(sid: str, sess: Session, rec: dict, status: str, images=None, names=None, paths=None) -> tuple:
    import plotly.io as pio

    r = rec["result"]
    names = names or rec.get("names") or []
    forget_rows = _forget_rows(r, names)
    text_rows, text_note = _text_rows(r)
    figs = rec.get("figures") or {}
    if figs.get("warming_up") and WARM["done"].is_set():  # drawn with PCA during the warm-up: UMAP now
        figs = rec["figures"] = _figures(r.get("embeddings") or {})
    fb = pio.from_json(figs["before"]) if figs.get("before") else None
    fa = pio.from_json(figs["after"]) if figs.get("after") else None
    emb = r.get("embeddings") or {}
    if fb is not None:
        counts = {g: emb["groups"].count(g) for g in ("forget", "retain", "unknown")}
        pnote = (
            f"**{figs['method']}** of the pooled visual features z(x) (fitted on *before*, applied to *after*, same axes): "
            f"{counts['forget']} forget images (red stars), {counts['retain']} retained renders (blue), "
            f'{counts["unknown"]} renders of the "unknown" region (grey). Hover a point for its label.'
            + (
                " UMAP is still warming up (numba compiles it once after start): PCA is shown instead; "
                "the plots switch to UMAP when this result is shown again (repeat or undo)."
                if figs.get("warming_up")
                else " Too few points for UMAP: PCA is shown instead."
                if figs["method"] == "PCA"
                else ""
            )
        )
    else:
        pnote = "No embedding data for this request."
    gallery = gr.skip()
    if images is not None:
        pb, pa = r["probes_before"]["forget"], r["probes_after"]["forget"]
        q0 = pb["questions"][0]
        gallery = [
            (_shown(im, paths, i), f"#{i + 1}: {pb['answers'][q0][i] or '(empty)'} → {pa['answers'][q0][i] or '(empty)'}")
            for i, im in enumerate(images)
        ]
    return (
        sid,
        status,
        _df(_history_rows(sess), HISTORY_HEADERS),
        gallery,
        _df(forget_rows, FORGET_HEADERS),
        _df(rec.get("retain_rows") or [], RETAIN_HEADERS),
        text_note,
        _df(text_rows, TEXT_HEADERS),
        fb,
        fa,
        pnote,
        _df(_number_rows(r, rec), NUMBER_HEADERS),
    )


def _status(rec: dict, k: int, seconds: float, restored: bool) -> str:
    r = rec["result"]
    ev = rec.get("evals") or {}
    follow = (
        ""
        if rec.get("evaluation", "quick") == "none" or ev.get("mode") == rec.get("evaluation", "quick")
        else " Accuracies: section 5, evaluated right after these answers."
    )
    target = f"**{r['target']}**" if r.get("target") else "the concept (the base model did not name anyone)"
    early = " (stopped early: forgotten)" if r.get("stopped_early") else ""
    if restored:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.get("created", time.time())))
        return (
            f"**Request {k} restored from the cache** in {seconds:.1f} s: this exact request (same model state, images "
            f"and settings) finished on {when}. No retraining: its adapter weights were restored, so Ask, Undo and a "
            f"further Forget continue from it. Forgot {target} with {r['method']}, {r['steps_run']} steps{early}.{follow}"
        )
    return (
        f"**Request {k} done** in {seconds:.1f} s: forgot {target} with {r['method']}, {r['steps_run']} of "
        f"{r['config']['steps']} steps{early}. The base model is unchanged; this session's model now has {k} "
        f"adapter(s). Saved: repeating this request is instant, also after a restart.{follow}"
    )


# -------------------------------------------------------------------------------------- handlers


def _error(e: BaseException) -> gr.Error:
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, NSCVFError):
        return gr.Error(str(e))
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(e)))
    return gr.Error(
        f"Something went wrong ({type(e).__name__}); the model is unchanged and the app keeps working. "
        "Details are in the server log."
    )


def mark_pending(sid, request: gr.Request):
    """Browser click, before the queued Forget: count it (so Cancel can drop it while it waits) and
    disable the button until it ends."""
    sid = _sid(sid, request)
    sess = SESSIONS.get(sid)
    with sess.lock:
        sess.pending += 1
        sess.cancel_pending = False
    return sid, gr.update(interactive=False), ""


def enable_forget():
    return gr.update(interactive=True)


def forget(
    files,
    name,
    method,
    steps,
    lr,
    lora_rank,
    energy,
    tau,
    retain_weight,
    evaluation,
    retain_files,
    sid,
    request: gr.Request,
    progress=gr.Progress(),
):
    """Forget the concept shown in the images (one request of this session's chain)."""
    sid = _sid(sid, request)
    sess = SESSIONS.get(sid)
    t0 = time.time()
    with sess.lock:
        sess.pending = max(0, sess.pending - 1)
        if sess.cancel_pending:
            sess.cancel_pending = False
            return _empty_outputs(sid, "Cancelled before it started; the model is unchanged.", sess)[:2] + (gr.skip(),) * 10
        if sess.job is not None:
            raise gr.Error("A request is already running in this session; wait for it to finish or press Cancel.")
        job = sess.job = Job()
    try:
        try:
            progress(0.0, desc="reading images")
            paths = _paths(files)
            images = _load_images(paths)
            names = [Path(p).name for p in paths]
            cfg = make_config(method, steps, lr, lora_rank, energy, tau, retain_weight, evaluation)
            retain = None
            if retain_files:
                retain = _load_images(_paths(retain_files, what="images to keep"))
            progress(0.01, desc="waiting for the model to load" if not MODEL.ready else "preparing")
            vlm = MODEL.get()
            target = _target(name, vlm)
            if sess.chain is None:
                sess.chain = CHAINS.take()
            chain = sess.chain
            key = _result_key(chain, images, cfg, target, retain)
            rec = MODEL.cache.get(key)
            sess.numbers_due = False
        except BaseException as e:
            raise _error(e) from None

        if rec is not None and rec.get("version") == RECORD_VERSION:
            progress(0.5, desc="restoring the finished request from the cache")
            restore_step(chain, rec, images)
            rec = dict(rec, names=names, evaluation=evaluation or "quick")
            sess.records.append(rec)
            sess.numbers_due = True
            return _render(sid, sess, rec, _status(rec, len(chain.steps), time.time() - t0, True), images, names, paths)

        n_before = len(chain.steps)
        _run_job(job, lambda: _compute(chain, images, cfg, target, job, retain), progress, t0, f"forget-{sid[:8]}")
        if job.error is not None:
            if isinstance(job.error, Cancelled):
                why = f"stopped at the time limit of {TIME_LIMIT} s" if job.timed_out else "cancelled"
                return (sid, f"Request {n_before + 1} {why} after {time.time() - t0:.1f} s; the model is unchanged.") + (
                    gr.skip(),
                ) * 10
            raise _error(job.error) from None
        rec = job.record
        if len(chain.steps) == n_before:  # the compute ran elsewhere (ZeroGPU): apply its adapter here
            restore_step(chain, rec, images)
        rec.update(key=key, state_before=key[2], evaluation=evaluation or "quick")
        try:
            MODEL.cache.set(key, rec)
        except Exception:  # noqa: BLE001  (a full disk must not lose the shown result)
            log.warning("could not store the result:\n%s", traceback.format_exc())
        rec = dict(rec, names=names)
        sess.records.append(rec)
        sess.numbers_due = True
        return _render(sid, sess, rec, _status(rec, len(chain.steps), time.time() - t0, False), images, names, paths)
    finally:
        with sess.lock:
            sess.job = None


def _run_job(job: Job, fn, progress, t0: float, name: str) -> None:
    """Run ``fn`` in a worker thread; meanwhile refresh the progress bar (stage, fraction, seconds) every
    POLL_S and enforce the time limit through the job's cancel flag. Sets job.record or job.error."""
    ctx = contextvars.copy_context()  # carries the request context (ZeroGPU's spaces.GPU reads it)

    def work():
        try:
            job.record = ctx.run(fn)
        except BaseException as e:  # noqa: BLE001  (reported by the handler)
            job.error = e
        finally:
            job.done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    while not job.done.wait(POLL_S):
        elapsed = time.time() - t0
        if elapsed > TIME_LIMIT and not job.cancel.is_set():
            job.timed_out = True
            job.cancel.set()
        progress(_fraction(job), desc=f"{job.stage} · {elapsed:.0f} s")


@_gpu
def _evaluate_states(chain, target, mode: str, state_before: str, job: Job) -> dict:
    """The engine's evaluation (nscvf.eval.evaluate, as the engine calls it) of the model before and after
    the last request. Cached per (chain state, target, mode): request k's *before* is request k-1's *after*,
    and every session forgetting the same target from the base model shares one *before*."""
    from nscvf.eval import evaluate

    out = {"mode": mode}
    for which, state in (("before", state_before), ("after", chain.state_fingerprint)):
        key = ("app-eval", RECORD_VERSION, state, target or "", mode)
        hit = MODEL.cache.get(key)
        t = time.time()
        if hit is None:
            n = len(chain.steps)
            vlm = chain.model_at(n if which == "after" else max(n - 1, 0))  # a private copy; the chain is not touched

            def cb(done, total, which=which):
                if job.cancel.is_set():
                    raise Cancelled("evaluation cancelled")
                job.update(f"evaluating {which}", done, total)

            cb(0, 1)
            hit = evaluate(vlm, target, renders=2 if mode == "quick" else 3, mc=mode == "full", progress=cb)
            MODEL.cache.set(key, hit)
        out[which] = hit
        out[f"seconds_{which}"] = round(time.time() - t, 2)
    out["seconds"] = round(out["seconds_before"] + out["seconds_after"], 2)
    return out


def numbers(evaluation, sid, request: gr.Request, progress=gr.Progress()):
    """Accuracies before and after the last request (forget, retain, text), from the engine's evaluation,
    run after the answers are shown. Returns (numbers, history, note)."""
    sid = _sid(sid, request)
    sess = SESSIONS.get(sid)
    mode = evaluation or "quick"
    if not sess.records or sess.chain is None:
        return sid, gr.skip(), gr.skip(), "Nothing to evaluate yet: run Forget first."
    rec = sess.records[-1]
    rec["evaluation"] = mode
    ev = rec.get("evals") or {}
    if mode == "none" or ev.get("mode") == mode:
        sess.numbers_due = False
        note = "Evaluation is off (Advanced)." if mode == "none" else _numbers_note(rec)
        return sid, _df(_number_rows(rec["result"], rec), NUMBER_HEADERS), _df(_history_rows(sess), HISTORY_HEADERS), note
    with sess.lock:
        if sess.job is not None:
            raise gr.Error("A request is running in this session; wait for it to finish or press Cancel.")
        job = sess.job = Job()
    t0 = time.time()
    try:
        target = rec["result"].get("target")
        state_before = rec.get("state_before") or (rec.get("key") or [None, None, None])[2]
        _run_job(job, lambda: _evaluate_states(sess.chain, target, mode, state_before, job), progress, t0, f"numbers-{sid[:8]}")
        if job.error is not None:
            if isinstance(job.error, Cancelled):
                return sid, gr.skip(), gr.skip(), "Evaluation cancelled; press Forget again or call /numbers to evaluate."
            raise _error(job.error) from None
        rec["evals"] = job.record
        sess.numbers_due = False
        if rec.get("key") is not None:  # a repeat (also after a restart) shows the numbers at once
            try:
                stored = MODEL.cache.get(rec["key"])
                if stored is not None:
                    stored["evals"] = job.record
                    MODEL.cache.set(rec["key"], stored)
            except Exception:  # noqa: BLE001
                log.warning("could not store the evaluation:\n%s", traceback.format_exc())
        return (
            sid,
            _df(_number_rows(rec["result"], rec), NUMBER_HEADERS),
            _df(_history_rows(sess), HISTORY_HEADERS),
            _numbers_note(rec),
        )
    finally:
        with sess.lock:
            sess.job = None


def numbers_after_forget(evaluation, sid, request: gr.Request, progress=gr.Progress()):
    """The browser's follow-up of a Forget: evaluate only when the Forget produced a new result."""
    sess = SESSIONS.peek(_sid(sid, request))
    if sess is None or not sess.numbers_due:
        return sid, gr.skip(), gr.skip(), gr.skip()
    return numbers(evaluation, sid, request, progress)


def _numbers_note(rec: dict) -> str:
    ev = rec.get("evals") or {}
    if not ev:
        return ""
    b, a = ev.get("before", {}), ev.get("after", {})
    return (
        f"Evaluation ({ev['mode']}): {b.get('n_items', '?')} questions per model on renders of every character, "
        f"held-out renders and paraphrases included; before {ev['seconds_before']} s, after {ev['seconds_after']} s "
        f"(0 s = reused from the cache){'' if a else '; no result after'}."
    )


_STAGE_SPAN = {
    "reading images": (0.0, 0.02),
    "base answers": (0.02, 0.12),
    "evaluating (before)": (0.12, 0.3),
    "null space": (0.12, 0.35),
    "step": (0.35, 0.85),
    "evaluating": (0.85, 0.96),
    "retained characters": (0.96, 0.98),
    "drawing plots": (0.98, 1.0),
    "evaluating before": (0.0, 0.5),
    "evaluating after": (0.5, 1.0),
}


def _fraction(job: Job) -> float:
    key = "step" if job.stage.startswith("step ") else job.stage
    lo, hi = _STAGE_SPAN.get(key, (0.0, 0.0))
    return min(1.0, lo + (hi - lo) * min(1.0, job.step / job.total))


def cancel(sid, request: gr.Request):
    """Stop this session's running request (or drop the one waiting in the queue)."""
    sess = SESSIONS.peek(_sid(sid, request))
    if sess is None:
        gr.Info("Nothing to cancel.")
        return
    with sess.lock:
        job = sess.job
        if job is None:
            if sess.pending > 0:
                sess.cancel_pending = True
                gr.Info("Your request will be cancelled before it starts.")
            else:
                gr.Info("Nothing is running.")
            return
        job.cancel.set()
    gr.Info("Cancelling…")
    job.done.wait(60)


def undo(sid, request: gr.Request):
    """Drop this session's last request (back to the model before it)."""
    return _rewind(sid, request, reset=False)


def reset(sid, request: gr.Request):
    """Drop every request of this session (back to the base model)."""
    return _rewind(sid, request, reset=True)


def _rewind(sid, request, reset: bool):
    sid = _sid(sid, request)
    sess = SESSIONS.get(sid)
    if sess.job is not None:
        raise gr.Error("A request is running; wait for it to finish or press Cancel first.")
    if sess.chain is None or not sess.chain.steps:
        return _empty_outputs(sid, "Nothing to undo: this session's model is the base model.", sess)
    try:
        if reset:
            sess.chain.reset()
            sess.records.clear()
        else:
            sess.chain.undo()
            sess.records.pop()
    except BaseException as e:
        raise _error(e) from None
    k = len(sess.chain.steps)
    if reset:
        return _empty_outputs(sid, "Reset: this session's model is the base model again.", sess)
    if k == 0:
        return _empty_outputs(sid, "Undone: this session's model is the base model again.", sess)
    rec = sess.records[-1]
    return _render(sid, sess, rec, f"Undone: back to the model after request {k} (its results are shown).")


def ask(file, question, sid, request: gr.Request):
    """Ask the base model and this session's current model the same question (about an image, or text only)."""
    sid = _sid(sid, request)
    q = (question or "").strip()
    try:
        if not q:
            raise InputError("the question is empty: type a question")
        if len(q) > 300:
            raise InputError(f"the question is {len(q)} characters long; use at most 300")
        path = _paths(file)[0] if file else None
        image = load_image(path) if path else None
        vlm = MODEL.get()
        sess = SESSIONS.get(sid)
        if sess.job is not None:
            raise InputError("a request is running in this session; ask again when it has finished")
        imgs = None if image is None else [image]
        base = vlm.generate([q], imgs, max_new_tokens=24)[0]
        chain = sess.chain
        if chain is not None and chain.steps:
            current = chain.vlm.generate([q], imgs, max_new_tokens=24)[0]
            note = f"Current = this session's model after {len(chain.steps)} request(s)."
        else:
            current = base
            note = "Nothing forgotten yet in this session: the current model is the base model."
    except BaseException as e:
        raise _error(e) from None
    return sid, base or "(empty answer)", current or "(empty answer)", note


def preview(files):
    """Show the uploaded images as the model will see them (RGB, EXIF-rotated); warn about bad files."""
    if not files:
        return []
    out, bad = [], []
    try:
        paths = _paths(files)
    except InputError as e:
        gr.Warning(str(e))
        paths = _paths(files[:MAX_FILES])
    for i, p in enumerate(paths):
        try:
            out.append((load_image(p), f"#{i + 1} {Path(p).name}"))
        except InputError as e:
            bad.append(str(e))
    for msg in bad[:5]:
        gr.Warning(msg)
    return out


def _example_chars():
    return [c for c in world.CHARACTERS if (EXAMPLES_DIR / c.key).is_dir()]


def example_files(key: str) -> list[str]:
    return sorted(str(p) for p in (EXAMPLES_DIR / key).glob("*.png"))


def pick_example(evt: gr.SelectData):
    """One click on a character: its renders fill the upload and its name the name box."""
    chars = _example_chars()
    c = chars[evt.index]
    held = EXAMPLES_DIR / "heldout" / f"{c.key}.png"
    return example_files(c.key), c.name, str(held) if held.exists() else None, "Who is this?"


def model_info() -> str:
    if not MODEL.ready:
        return "Model: loading…" if not MODEL.error else f"Model: {MODEL.error}"
    v = MODEL.vlm
    src = v.source
    shown = (
        "the embedded model (assets/model)" if Path(src).resolve() == (ROOT / "assets" / "model").resolve() else Path(src).name
    )
    return f"Model: {shown} ({v.family}, {v.device}, {str(v.dtype).replace('torch.', '')}, fingerprint {v.fingerprint})"


def wait_model_info():
    """Page load: show which model answers, once it is loaded."""
    MODEL._ready.wait(600)
    return model_info()


# ------------------------------------------------------------------------------------------ the UI

CSS = """
#status {min-height: 4.5em}
#examples .grid-container {grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)) !important}
#preview .grid-container {grid-template-columns: repeat(auto-fill, minmax(80px, 1fr)) !important}
.small-note {font-size: 0.9em; opacity: 0.85}
"""

THEME_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]


def build() -> gr.Blocks:
    with gr.Blocks(title="NSCVF: visual forgetting for MLLMs", delete_cache=(1800, 3600)) as demo:
        sid = gr.State(None, delete_callback=_free_state)
        gr.Markdown(
            "# NSCVF: make a vision-language model forget what it sees\n"
            "Upload images of a person, object or character (or click an example), press **Forget**, and compare the "
            "model before and after. The model stops recognising the concept *in images*, while other characters and "
            "text-only questions stay exactly as they were (null-space constrained contrastive visual forgetting). "
            "Each visitor works on a private copy; the shared model is never modified."
        )
        info = gr.Markdown(model_info(), elem_id="model_info", elem_classes="small-note")
        chars = _example_chars()
        examples = gr.Gallery(
            value=[(example_files(c.key)[0], c.name) for c in chars],
            label="Examples from the embedded world: click a character to forget it (its 8 training renders fill the upload)",
            elem_id="examples",
            columns=16,
            rows=1,
            height=125,
            allow_preview=False,
            interactive=False,
            object_fit="contain",
            buttons=[],
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.Markdown("### 1 · What to forget")
                files = gr.File(
                    label=f"Images of what to forget (drag and drop, up to {MAX_FILES})",
                    file_count="multiple",
                    file_types=IMAGE_TYPES,
                    type="filepath",
                    elem_id="images",
                    height=150,
                )
                gallery = gr.Gallery(
                    label="As the model sees them (after a run: who it says it is, before → after)",
                    elem_id="preview",
                    columns=8,
                    height=200,
                    allow_preview=True,
                    interactive=False,
                    buttons=["fullscreen"],
                )
                name = gr.Textbox(
                    label="Name (optional; inferred from the base model's answers when empty)", elem_id="target", max_lines=1
                )
                with gr.Accordion("Images to keep (optional)", open=False, elem_id="keep"):
                    gr.Markdown(
                        "With the embedded model the other characters are kept by default. Other models need "
                        "images of what must not change.",
                        elem_classes="small-note",
                    )
                    retain_files = gr.File(
                        label=f"Images of what must not change (up to {MAX_FILES})",
                        file_count="multiple",
                        file_types=IMAGE_TYPES,
                        type="filepath",
                        elem_id="retain_images",
                        height=120,
                    )
            with gr.Column(scale=2):
                gr.Markdown("### 2 · Forget")
                method = gr.Dropdown(choices=METHOD_CHOICES, value="nscvf", label="Method", elem_id="method")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    adv = []
                    for f, label, integer in ADVANCED:
                        m = FIELDS[f]
                        adv.append(
                            gr.Number(
                                value=m["default"],
                                label=label,
                                precision=0 if integer else None,
                                info=f"{m['lo']:g} to {m['hi']:g}; default {m['default']:g}. {m['help']}",
                                elem_id=f"adv_{f}",
                            )
                        )
                    evaluation = gr.Radio(
                        ["quick", "none", "full"],
                        value="quick",
                        label="Evaluation before/after",
                        info="quick: 2 renders per character; full adds multiple choice",
                        elem_id="adv_evaluate",
                    )
                with gr.Row():
                    forget_btn = gr.Button("Forget", variant="primary", elem_id="forget")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Row():
                    undo_btn = gr.Button("Undo last", size="sm", elem_id="undo")
                    reset_btn = gr.Button("Reset to base", size="sm", elem_id="reset")
                status = gr.Markdown("Pick an example or upload images, then press **Forget**.", elem_id="status")
                history = gr.Dataframe(
                    _df([], HISTORY_HEADERS),
                    label="This session's requests (continual unlearning)",
                    elem_id="history",
                    interactive=False,
                    wrap=True,
                )

        gr.Markdown("### 3 · Before / after")
        forget_table = gr.Dataframe(
            _df([], FORGET_HEADERS),
            label="The forget images: identity and a fact question",
            elem_id="forget_answers",
            interactive=False,
            wrap=True,
            max_height=420,
        )
        retain_table = gr.Dataframe(
            _df([], RETAIN_HEADERS),
            label="Retained characters (should not change)",
            elem_id="retain_answers",
            interactive=False,
            wrap=True,
        )
        text_note = gr.Markdown("", elem_id="text_note")
        text_table = gr.Dataframe(
            _df([], TEXT_HEADERS),
            label="Text-only questions about the target (no image)",
            elem_id="text_answers",
            interactive=False,
            wrap=True,
            max_height=300,
        )

        gr.Markdown("### 4 · Where the images sit in the model's visual feature space")
        with gr.Row():
            plot_before = gr.Plot(label="Before", elem_id="plot_before")
            plot_after = gr.Plot(label="After", elem_id="plot_after")
        plot_note = gr.Markdown("", elem_id="plot_note", elem_classes="small-note")

        gr.Markdown("### 5 · Numbers (all measured in this run)")
        numbers_table = gr.Dataframe(
            _df([], NUMBER_HEADERS),
            label="Accuracy before → after, drift, null space, time",
            elem_id="numbers",
            interactive=False,
            wrap=True,
        )
        with gr.Row():
            numbers_note = gr.Markdown("", elem_id="numbers_note", elem_classes="small-note")
            numbers_btn = gr.Button("Evaluate", size="sm", elem_id="evaluate", scale=0, min_width=160)

        gr.Markdown("### Ask both models")
        with gr.Row():
            ask_file = gr.File(
                label="An image (optional: leave empty for a text-only question)",
                file_count="single",
                file_types=IMAGE_TYPES,
                type="filepath",
                elem_id="ask_image",
                height=110,
            )
            with gr.Column():
                ask_q = gr.Textbox(label="Question", value="Who is this?", elem_id="ask_question", max_lines=2)
                ask_btn = gr.Button("Ask base and current", elem_id="ask")
        with gr.Row():
            ask_base = gr.Textbox(label="Base model", elem_id="ask_base", interactive=False)
            ask_current = gr.Textbox(label="Current model (this session)", elem_id="ask_current", interactive=False)
        ask_note = gr.Markdown("", elem_id="ask_note", elem_classes="small-note")

        outputs = [
            sid,
            status,
            history,
            gallery,
            forget_table,
            retain_table,
            text_note,
            text_table,
            plot_before,
            plot_after,
            plot_note,
            numbers_table,
        ]
        compute = {"concurrency_id": "compute", "concurrency_limit": CONCURRENCY}
        light = {"concurrency_limit": None, "show_progress": "hidden"}

        examples.select(pick_example, None, [files, name, ask_file, ask_q], api_visibility="private", **light)
        files.change(preview, files, gallery, api_name="preview", **light)
        click = forget_btn.click(mark_pending, sid, [sid, forget_btn, status], api_visibility="private", **light)
        done = click.then(
            forget,
            [files, name, method, *adv, evaluation, retain_files, sid],
            outputs,
            api_name="forget",
            show_progress_on=[status],
            time_limit=TIME_LIMIT,
            **compute,
        )
        done.then(enable_forget, None, forget_btn, api_visibility="private", **light)
        done.success(
            numbers_after_forget,
            [evaluation, sid],
            [sid, numbers_table, history, numbers_note],
            api_visibility="private",
            show_progress_on=[numbers_table],
            **compute,
        )
        numbers_btn.click(
            numbers,
            [evaluation, sid],
            [sid, numbers_table, history, numbers_note],
            api_name="numbers",
            show_progress_on=[numbers_table],
            **compute,
        )
        cancel_btn.click(cancel, sid, None, api_name="cancel", **light)
        undo_btn.click(undo, sid, outputs, api_name="undo", show_progress_on=[status], **compute)
        reset_btn.click(reset, sid, outputs, api_name="reset", show_progress_on=[status], **compute)
        ask_btn.click(
            ask,
            [ask_file, ask_q, sid],
            [sid, ask_base, ask_current, ask_note],
            api_name="ask",
            show_progress_on=[ask_base, ask_current],
            **compute,
        )
        demo.load(wait_model_info, None, info, api_visibility="private", concurrency_limit=None, show_progress="hidden")
        demo.unload(free_session)
    return demo


demo = build()


def launch(**kwargs):
    """Queue and serve; start loading the model and warming up UMAP once the page answers."""
    demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=CONCURRENCY)
    opts = dict(
        ssr_mode=False,
        max_file_size=MAX_FILE_MB * 2**20,
        allowed_paths=[str(EXAMPLES_DIR)],
        show_error=False,
        theme=gr.themes.Default(font=THEME_FONTS, font_mono=MONO_FONTS),
        css=CSS,
    )
    opts.update(kwargs)
    out = demo.launch(prevent_thread_lock=True, **opts)
    MODEL.start()  # then UMAP's warm-up
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    launch()
    demo.block_thread()
