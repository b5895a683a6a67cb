"""The page, composed from its sections (:func:`build`), and :func:`launch` (settings, runtime, queue, serve).

Forget, Teach, the relearning probe and the comparison are admitted at once (``concurrency_id="compute"``)
and take fair turns in code (:mod:`webapp.state.turns`: a request that fits a turn never waits behind
another visitor's long one; the page shows the wait and its ETA); Ask, Undo, Reset, Evaluate and name
inference run in their own lane (``"light"``, ``NSCVF_LIGHT_CONCURRENCY`` wide): the engine holds the
shared model per training step, so they wait at most one step behind another visitor's training.
Each session's operations are also exclusive in code (:meth:`webapp.state.sessions.Session.exclusive`).
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from webapp.page import ask, compare, forget, models, teach, timeline, upload
from webapp.page.common import CSS, MONO_FONTS, THEME_FONTS, Page
from webapp.service import jobs
from webapp.state import runtime
from webapp.state.runtime import Runtime
from webapp.state.settings import Settings
from webapp.state.settings import get as get_settings

INTRO = (
    "# NSCVF: make a vision-language model forget what it sees\n"
    "Upload images of a person, object or character (or click an example), press **Forget**, and compare the "
    "model before and after. The model stops recognising the concept *in images*, while other characters and "
    "text-only questions stay exactly as they were (null-space constrained contrastive visual forgetting). "
    "Each visitor's changes are private adapters on the shared model, which is never modified."
)
SECTIONS = (upload, forget, teach, compare, timeline, ask, models)  # each registers its own events (``wire``)


model_info = models.model_info


def wait_model_info():
    """Page load: show which model answers (the default), once it is loaded."""
    return models.wait_info()


def free_session(request: gr.Request):
    """demo.unload: the tab was closed; cancel its job and free its chain's adapters."""
    runtime.current().sessions.free(getattr(request, "session_hash", None))


def free_state(sid) -> None:
    """gr.State delete_callback (the session expired)."""
    runtime.current().sessions.free(sid)


def layout(settings: Settings, rt: Runtime) -> Page:
    """The sections, top to bottom (inside an open ``gr.Blocks``)."""
    sid = gr.State(None, delete_callback=free_state)
    gr.Markdown(INTRO)
    info = gr.Markdown("Model: loading…", elem_id="model_info", elem_classes="small-note")
    chosen = models.build(settings)
    examples = upload.build_examples(settings)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            up = upload.build(settings, examples)
        with gr.Column(scale=2):
            controls = forget.build_controls(settings, settings.steps_hi)
    taught = teach.build(settings)
    history = timeline.build()
    results = forget.build_results()
    compared = compare.build()
    null = forget.build_nullspace()
    relearn = teach.build_relearn()
    asked = ask.build(settings)
    return Page(sid, info, up, controls, taught, history, results, compared, null, relearn, asked, chosen)


def build(settings: Settings, rt: Runtime) -> tuple[gr.Blocks, Page]:
    """The page (its layout, then every section's events) and its named components."""
    with gr.Blocks(title="NSCVF: visual forgetting for MLLMs", delete_cache=(1800, 3600)) as demo:
        page = layout(settings, rt)
        for section in SECTIONS:
            section.wire(page, settings)
        demo.load(wait_model_info, None, page.info, api_visibility="private", concurrency_limit=None, show_progress="hidden")
        demo.unload(free_session)
    return demo, page


_demo: gr.Blocks | None = None


def demo() -> gr.Blocks:
    """The page, built once (with the process's settings and runtime)."""
    global _demo
    if _demo is None:
        settings = get_settings()
        _demo = build(settings, runtime.create(settings))[0]
    return _demo


def launch(**kwargs):
    """Queue and serve; before that (``NSCVF_WARMUP``, default on) load the model and run the engine's warm-up
    request, else load it in the background; warm UMAP up in a low-priority process."""
    settings = get_settings()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(settings.data_dir / "numba"))  # UMAP's JIT survives restarts
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    page = demo()
    page.queue(max_size=settings.max_queue, default_concurrency_limit=settings.concurrency)
    opts = dict(
        ssr_mode=False,
        max_file_size=settings.max_file_mb * 2**20,
        allowed_paths=[str(settings.examples_dir), str(settings.photo_examples_dir)],
        show_error=False,
        theme=gr.themes.Default(font=THEME_FONTS, font_mono=MONO_FONTS),
        css=CSS,
    )
    opts.update(kwargs)
    rt = runtime.current()
    if not jobs.prepare_gpu(rt) and settings.warm_up:  # ZeroGPU: the model and the GPU functions before launch
        rt.warmup.start()  # UMAP's worker compiles beside the warm-up, at the lowest priority
        jobs.warm_up(rt)  # off ZeroGPU: the model and the engine's warm-up request before the page serves
    out = page.launch(prevent_thread_lock=True, **opts)
    runtime.current().model.start()
    runtime.current().warmup.start()  # UMAP's worker process, warming up at the lowest priority
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    launch()
    demo().block_thread()
