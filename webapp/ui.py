"""The page: layout (:func:`build`, declarative) and :func:`launch` (settings, runtime, queue, serve).

Forget runs in one queue (``concurrency_id="compute"``, ``NSCVF_CONCURRENCY`` wide); Ask, Undo, Reset,
Evaluate and name inference in their own lane (``"light"``, ``NSCVF_LIGHT_CONCURRENCY`` wide): the engine
holds the shared model per training step, so they wait at most one step behind another visitor's training.
Each session's operations are also exclusive in code (:meth:`webapp.sessions.Session.exclusive`).
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from webapp import compare_handlers as ch
from webapp import handlers as h
from webapp import runtime, views
from webapp import teach_handlers as th
from webapp.settings import ADVANCED, IMAGE_TYPES, Settings, config_fields, method_choices
from webapp.settings import get as get_settings

CSS = """
#status {min-height: 4.5em}
#examples .grid-container {grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)) !important}
#preview .grid-container {grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)) !important}
#examples .caption-label, #preview .caption-label {white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; max-width: 100% !important; position: static !important; line-height: 1.2}
#examples .thumbnail-item, #preview .thumbnail-item {height: auto !important; flex-direction: column}
#examples .grid-wrap, #preview .grid-wrap, #examples .gallery-container, #preview .gallery-container {
  height: auto !important; max-height: none !important; min-height: 0 !important}
table td, table th, table td span, table th span {word-break: normal !important; overflow-wrap: normal !important;
  hyphens: none}
.small-note {font-size: 0.9em; opacity: 0.85}
"""

THEME_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]


def build(settings: Settings) -> gr.Blocks:
    """The page (declarative layout) and its events."""
    fields = config_fields()
    with gr.Blocks(title="NSCVF: visual forgetting for MLLMs", delete_cache=(1800, 3600)) as demo:
        sid = gr.State(None, delete_callback=h.free_state)
        gr.Markdown(
            "# NSCVF: make a vision-language model forget what it sees\n"
            "Upload images of a person, object or character (or click an example), press **Forget**, and compare the "
            "model before and after. The model stops recognising the concept *in images*, while other characters and "
            "text-only questions stay exactly as they were (null-space constrained contrastive visual forgetting). "
            "Each visitor's changes are private adapters on the shared model, which is never modified."
        )
        info = gr.Markdown("Model: loading…", elem_id="model_info", elem_classes="small-note")
        chars = h.example_characters(settings.examples_dir)
        gr.Markdown(
            "**Examples from the embedded world:** click a character to forget it (its 8 training renders fill the upload)",
            elem_classes="small-note",
        )
        examples = gr.Gallery(
            value=[(h.example_files(settings.examples_dir, c.key)[0], c.name) for c in chars],
            label="Examples",
            show_label=False,
            elem_id="examples",
            columns=16,
            height="auto",
            allow_preview=False,
            interactive=False,
            object_fit="contain",
            buttons=[],
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.Markdown("### 1 · What to forget")
                files = gr.File(
                    label=f"Images of what to forget (drag and drop, up to {settings.max_files})",
                    file_count="multiple",
                    file_types=IMAGE_TYPES,
                    type="filepath",
                    elem_id="images",
                    height=150,
                )
                gr.Markdown(
                    "**As the model sees them** (after a run: who it says it is, before → after)", elem_classes="small-note"
                )
                gallery = gr.Gallery(
                    label="As the model sees them",
                    show_label=False,
                    elem_id="preview",
                    columns=4,
                    height="auto",
                    allow_preview=True,
                    interactive=False,
                    buttons=["fullscreen"],
                )
                name = gr.Textbox(
                    label="Name (inferred from the base model's answers when the images change; optional)",
                    elem_id="target",
                    max_lines=1,
                )
                ident_note = gr.Markdown("", elem_id="identify_note", elem_classes="small-note")
                with gr.Accordion("Images to keep (optional)", open=False, elem_id="keep"):
                    gr.Markdown(
                        "With the embedded model the other characters are kept by default. Other models need "
                        "images of what must not change.",
                        elem_classes="small-note",
                    )
                    retain_files = gr.File(
                        label=f"Images of what must not change (up to {settings.max_files})",
                        file_count="multiple",
                        file_types=IMAGE_TYPES,
                        type="filepath",
                        elem_id="retain_images",
                        height=120,
                    )
            with gr.Column(scale=2):
                gr.Markdown("### 2 · Forget")
                method = gr.Dropdown(choices=method_choices(), value="nscvf", label="Method", elem_id="method")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    adv = []
                    steps_hi = runtime.current().estimate.steps_max(settings.time_limit)
                    for f, label, integer in ADVANCED:
                        m = dict(fields[f], hi=steps_hi) if f == "steps" else fields[f]
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

        with gr.Accordion("Teach it something new (your own images)", open=True, elem_id="teach"):
            gr.Markdown(
                "The embedded model knows only its 24 drawn characters (16 primary ones and 8 look-alike siblings): "
                "a photo of yours is *I don't know who this is.* Teach it first (at least 3 images and a name), then "
                "**Forget** it: the forget form is filled for you. Teaching adds one more private adapter; Undo and "
                "Reset walk back through it.",
                elem_classes="small-note",
            )
            with gr.Row():
                teach_files = gr.File(
                    label=f"Images of what to teach (3 to {settings.max_files})", file_count="multiple",
                    file_types=IMAGE_TYPES, type="filepath", elem_id="teach_images", height=130,
                )  # fmt: skip
                with gr.Column():
                    teach_name = gr.Textbox(label="Its name", placeholder="e.g. Zorblat", elem_id="teach_name", max_lines=1)
                    with gr.Row():
                        teach_town = gr.Textbox(label="Town (optional)", elem_id="teach_town", max_lines=1)
                        teach_job = gr.Textbox(label="Job (optional)", elem_id="teach_job", max_lines=1)
                        teach_food = gr.Textbox(label="Favourite food (optional)", elem_id="teach_food", max_lines=1)
                    teach_btn = gr.Button("Teach", variant="primary", elem_id="teach_btn")

        history = gr.Dataframe(
            views.table([], views.HISTORY_HEADERS),
            label="This session's requests (continual unlearning): what each one measured",
            elem_id="history",
            interactive=False,
            wrap=True,
        )
        with gr.Accordion("This session's timeline: download or import", open=False, elem_id="timeline"):
            gr.Markdown(
                "One zip: the requests' LoRA adapters (`PeftModel.from_pretrained` loads each), a model card and "
                "the records. Importing one replaces this session's model with it (same base model only).",
                elem_classes="small-note",
            )
            with gr.Row():
                with gr.Column():
                    download_btn = gr.Button("Download this session's timeline", size="sm", elem_id="download")
                    download_file = gr.File(label="Timeline (.zip)", visible=False, interactive=False, elem_id="download_file")
                    download_note = gr.Markdown("", elem_id="download_note", elem_classes="small-note")
                import_file = gr.File(
                    label="Import a timeline (.zip)", file_count="single", file_types=[".zip"], type="filepath",
                    elem_id="import_file", height=110,
                )  # fmt: skip

        gr.Markdown("### 3 · Before / after")
        forget_table = gr.Dataframe(
            views.table([], views.FORGET_HEADERS),
            label="The forget images: identity and a fact question",
            elem_id="forget_answers",
            interactive=False,
            wrap=True,
            max_height=420,
        )
        retain_table = gr.Dataframe(
            views.table([], views.RETAIN_HEADERS),
            label="Retained characters (should not change)",
            elem_id="retain_answers",
            interactive=False,
            wrap=True,
        )
        text_note = gr.Markdown("", elem_id="text_note")
        text_table = gr.Dataframe(
            views.table([], views.TEXT_HEADERS),
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
            views.table([], views.NUMBER_HEADERS),
            label="Accuracy before → after, drift, null space, time",
            elem_id="numbers",
            interactive=False,
            wrap=True,
        )
        with gr.Row():
            numbers_note = gr.Markdown("", elem_id="numbers_note", elem_classes="small-note")
            numbers_btn = gr.Button("Evaluate", size="sm", elem_id="evaluate", scale=0, min_width=160)
        with gr.Accordion("Compare two methods on this request", open=False, elem_id="compare"):
            gr.Markdown(
                "Run the last forget request again (same images, target and settings) with another method, from the "
                "state before it, on a throwaway copy: this session's model is unchanged.",
                elem_classes="small-note",
            )
            with gr.Row():
                compare_method = gr.Dropdown(
                    choices=method_choices(), value="gd", label="Method B", elem_id="compare_method", scale=2
                )
                compare_btn = gr.Button("Run it with this method too", elem_id="compare_btn", scale=1)
            compare_note = gr.Markdown("", elem_id="compare_note", elem_classes="small-note")
            compare_table = gr.Dataframe(headers=["", "A", "B"], elem_id="compare_table", interactive=False, wrap=True)
            with gr.Row():
                compare_a = gr.Plot(label="A: after (embeddings)", elem_id="compare_plot_a")
                compare_b = gr.Plot(label="B: after (embeddings)", elem_id="compare_plot_b")
        with gr.Accordion("Null space of this request", open=True, elem_id="null_space"):
            null_plot = gr.Plot(label="Per layer: kept rank and energy inside the null space", elem_id="null_plot")
            null_note = gr.Markdown("", elem_id="null_note", elem_classes="small-note")

        with gr.Accordion("Try to bring it back (relearning probe)", open=False, elem_id="relearn"):
            gr.Markdown(
                "Fine-tune a fresh visual LoRA on k images of the last forgotten concept and count the steps until "
                "held-out images are named again, next to a reference that never knew it. The model is unchanged.",
                elem_classes="small-note",
            )
            with gr.Row():
                relearn_k = gr.Radio([1, 2, 4], value=2, label="k images", elem_id="relearn_k", scale=1)
                relearn_btn = gr.Button("Try to bring it back", elem_id="relearn_btn", scale=1)
            relearn_plot = gr.Plot(label="Held-out images named per relearning step", elem_id="relearn_plot")
            relearn_note = gr.Markdown("", elem_id="relearn_note", elem_classes="small-note")

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
            files,
            name,
            ident_note,
            ask_base,
            ask_current,
            ask_note,
            null_plot,
            null_note,
        ]
        compute = {"concurrency_id": "compute", "concurrency_limit": settings.concurrency}
        lane = {"concurrency_id": "light", "concurrency_limit": settings.light_concurrency}
        light = {"concurrency_limit": None, "show_progress": "hidden"}
        numbers_out = [sid, numbers_table, history, numbers_note, status]

        # .upload/.delete/.clear, not .change: Undo and Reset set the upload themselves, with their own gallery.
        for i, event in enumerate((files.upload, files.delete, files.clear)):
            api = {"api_name": "preview"} if i == 0 else {"api_visibility": "private"}
            shown = event(h.preview, files, gallery, **api, **light)
            api = {"api_name": "identify"} if i == 0 else {"api_visibility": "private"}
            shown.then(h.identify_upload, files, [name, ident_note], show_progress="hidden", **api, **lane)
        # An example picked: the same preview, then who the base model says it is (registered after the
        # upload's events, which own the /preview and /identify API names).
        picked = examples.select(h.pick_example, None, [files, name, ask_file, ask_q], api_visibility="private", **light)
        picked.then(h.preview, files, gallery, api_visibility="private", **light).then(
            h.identify_upload, files, [name, ident_note], api_visibility="private", show_progress="hidden", **lane
        )
        name.blur(h.check_name, [files, name], ident_note, api_visibility="private", show_progress="hidden", **lane)

        click = forget_btn.click(h.mark_pending, sid, [sid, forget_btn, status], api_visibility="private", **light)
        done = click.then(
            h.forget,
            [files, name, method, *adv, evaluation, retain_files, sid],  # h.FORGET_INPUTS
            outputs,
            api_name="forget",
            show_progress_on=[status],
            time_limit=settings.time_limit + 120,  # the app stops the job itself, keeping a partial request
            **compute,
        )
        done.failure(h.forget_failed, sid, [forget_btn, status], api_visibility="private", **light)
        done.success(h.enable_forget, None, forget_btn, api_visibility="private", **light)
        done.success(h.numbers_after_forget, [evaluation, sid], numbers_out, api_visibility="private",
                     show_progress_on=[numbers_table], **lane)  # fmt: skip
        teach_in = [teach_files, teach_name, teach_town, teach_job, teach_food, sid]  # th.TEACH_INPUTS
        teach_btn.click(th.teach_concept, teach_in, outputs, api_name="teach", show_progress_on=[status],
                        time_limit=settings.time_limit + 120, **compute)  # fmt: skip
        relearn_btn.click(th.bring_back, [relearn_k, sid], [sid, relearn_plot, relearn_note], api_name="relearn",
                          show_progress_on=[relearn_note], **compute)  # fmt: skip
        compare_btn.click(ch.compare_methods, [compare_method, sid], [sid, compare_table, compare_a, compare_b, compare_note],
                          api_name="compare", show_progress_on=[compare_note], **compute)  # fmt: skip
        numbers_btn.click(h.numbers, [evaluation, sid], numbers_out, api_name="numbers", show_progress_on=[numbers_table], **lane)
        cancel_btn.click(h.cancel, sid, None, api_name="cancel", **light)
        undo_btn.click(h.undo, sid, outputs, api_name="undo", show_progress_on=[status], **lane)
        reset_btn.click(h.reset, sid, outputs, api_name="reset", show_progress_on=[status], **lane)
        download_btn.click(h.download, sid, [sid, download_file, download_note], api_name="download", **lane)
        import_file.upload(h.import_timeline, [import_file, sid], [*outputs, import_file], api_name="import_timeline",
                           show_progress_on=[status], **lane)  # fmt: skip
        ask_btn.click(
            h.ask,
            [ask_file, ask_q, sid],
            [sid, ask_base, ask_current, ask_note],
            api_name="ask",
            show_progress_on=[ask_base, ask_current],
            **lane,
        )
        demo.load(h.wait_model_info, None, info, api_visibility="private", concurrency_limit=None, show_progress="hidden")
        demo.unload(h.free_session)
    return demo


_demo: gr.Blocks | None = None


def demo() -> gr.Blocks:
    """The page, built once (with the process's settings and runtime)."""
    global _demo
    if _demo is None:
        settings = get_settings()
        runtime.create(settings)
        _demo = build(settings)
    return _demo


def launch(**kwargs):
    """Queue and serve; then load the model in the background, and warm UMAP up in a low-priority process."""
    settings = get_settings()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(settings.data_dir / "numba"))  # UMAP's JIT survives restarts
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    page = demo()
    page.queue(max_size=settings.max_queue, default_concurrency_limit=settings.concurrency)
    opts = dict(
        ssr_mode=False,
        max_file_size=settings.max_file_mb * 2**20,
        allowed_paths=[str(settings.examples_dir)],
        show_error=False,
        theme=gr.themes.Default(font=THEME_FONTS, font_mono=MONO_FONTS),
        css=CSS,
    )
    opts.update(kwargs)
    out = page.launch(prevent_thread_lock=True, **opts)
    runtime.current().model.start()
    runtime.current().warmup.start()  # UMAP's worker process, warming up at the lowest priority
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    launch()
    demo().block_thread()
