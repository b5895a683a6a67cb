"""Section 1 of the page, "What to forget": the example characters, the upload, the gallery of the images
as the model sees them, the name box (filled with who the base model says the images show) and the images
to keep; and their handlers (preview, name inference, name check, an example picked)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from nscvf.errors import InputError, NSCVFError
from nscvf.images import load_image
from webapp.page.ask import question_for
from webapp.page.common import Page, lanes, session_of
from webapp.service.ask import identify
from webapp.service.form import image_paths
from webapp.service.models import current_model
from webapp.state import runtime
from webapp.state.settings import IMAGE_TYPES, Settings
from webapp.views.verdict import identify_note

log = logging.getLogger("nscvf.app")


class Upload(NamedTuple):
    examples_note: gr.Markdown
    examples: gr.Gallery
    files: gr.File
    gallery: gr.Gallery
    name: gr.Textbox
    name_note: gr.Markdown
    retain_files: gr.File


def example_items(settings: Settings, model: str | None = None) -> list[tuple[str, str]]:
    """The examples gallery of ``model`` (its key; None: the default): each example's first image, its name."""
    return [(e.files[0], e.name) for e in settings.examples(model) if e.files]


def examples_note(model: str | None) -> str:
    if model == "photo":
        return ("**Examples of real photos:** click one to forget it (8 crops of a public-domain photograph, or views "
                "of an emoji, fill the upload; `assets/photo_examples/README.md` says where each comes from)")  # fmt: skip
    return "**Examples from the embedded world:** click a character to forget it (its 8 training renders fill the upload)"


def build_examples(settings: Settings) -> tuple[gr.Markdown, gr.Gallery]:
    """The default model's examples (one click fills the upload); a model switch replaces them."""
    note = gr.Markdown(examples_note(settings.default_model), elem_id="examples_note", elem_classes="small-note")
    gallery = gr.Gallery(
        value=example_items(settings), label="Examples", show_label=False, elem_id="examples", columns=16,
        height="auto", allow_preview=False, interactive=False, object_fit="contain", buttons=[],
    )  # fmt: skip
    return note, gallery


def build(settings: Settings, examples: tuple[gr.Markdown, gr.Gallery]) -> Upload:
    """The column "1 · What to forget" (inside the page's first row)."""
    gr.Markdown("### 1 · What to forget")
    files = gr.File(
        label=f"Images of what to forget (drag and drop, up to {settings.max_files})", file_count="multiple",
        file_types=IMAGE_TYPES, type="filepath", elem_id="images", height=150,
    )  # fmt: skip
    gr.Markdown("**As the model sees them** (after a run: who it says it is, before → after)", elem_classes="small-note")
    gallery = gr.Gallery(
        label="As the model sees them", show_label=False, elem_id="preview", columns=4, height="auto",
        allow_preview=True, interactive=False, buttons=["fullscreen"],
    )  # fmt: skip
    name = gr.Textbox(
        label="Name (inferred from the base model's answers when the images change; optional)", elem_id="target", max_lines=1
    )
    name_note = gr.Markdown("", elem_id="identify_note", elem_classes="small-note")
    with gr.Accordion("Images to keep (optional)", open=False, elem_id="keep"):
        gr.Markdown(
            "With the embedded model the other characters are kept by default. Other models need images of what must not change.",
            elem_classes="small-note",
        )
        retain_files = gr.File(
            label=f"Images of what must not change (up to {settings.max_files})", file_count="multiple",
            file_types=IMAGE_TYPES, type="filepath", elem_id="retain_images", height=120,
        )  # fmt: skip
    return Upload(*examples, files, gallery, name, name_note, retain_files)


# ---------------------------------------------------------------------------------------- handlers


def preview(files):
    """Show the uploaded images as the model will see them (RGB, EXIF-rotated); warn about bad files."""
    if not files:
        return []
    max_files = runtime.current().settings.max_files
    out, bad = [], []
    try:
        paths = image_paths(files, max_files)
    except InputError as e:
        gr.Warning(str(e))
        paths = image_paths(files[:max_files], max_files)
    for i, p in enumerate(paths):
        try:
            out.append((load_image(p), f"#{i + 1} {Path(p).name}"))
        except InputError as e:
            bad.append(str(e))
    for msg in bad[:5]:
        gr.Warning(msg)
    return out


def _model_of(sid) -> str | None:
    """The model key of the session ``sid`` (the default while it has none: nothing is made for it here)."""
    rt = runtime.current()
    return current_model(rt, rt.sessions.peek(sid))


def identify_upload(files, sid=None):
    """After the upload changed: the name the session's base model gives the images (filling the name box) and a
    warning line (several characters, nobody). Returns (name, note). A name typed afterwards is checked
    against the images by the request itself (the status says when it disagrees)."""
    if not files:
        return "", ""
    try:
        ident = identify(runtime.current(), files, model=_model_of(sid))
    except NSCVFError as e:
        log.info("identify: %s", e)
        return gr.skip(), ""
    if ident is None or not (ident.counts or ident.warnings):  # nothing read, or a model that names nobody
        return gr.skip(), ""
    return ident.inferred or "", identify_note(ident)


def check_name(files, name, sid=None):
    """The name box lost focus: warn when the typed name is not who the base model says the images show."""
    typed = (name or "").strip()
    if not files or not typed:
        return gr.skip()
    try:
        ident = identify(runtime.current(), files, typed, wait_s=0, model=_model_of(sid))
    except NSCVFError:
        return gr.skip()
    return identify_note(ident) if ident is not None and (ident.counts or ident.warnings) else gr.skip()


def pick_example(sid, evt: gr.SelectData, request: gr.Request):
    """One click on an example of the session's model: its images fill the upload and its name the name box;
    the Ask section gets its held-out image and the identity question."""
    sid, sess = session_of(sid, request)
    rt = runtime.current()
    model = current_model(rt, sess)
    e = rt.settings.examples(model)[evt.index]
    return sid, list(e.files), e.name, e.heldout, question_for(model)


def wire(page: Page, settings: Settings) -> None:
    up, light, lane = page.upload, lanes(settings).light, lanes(settings).lane
    # .upload/.delete/.clear, not .change: Undo and Reset set the upload themselves, with their own gallery.
    for i, event in enumerate((up.files.upload, up.files.delete, up.files.clear)):
        api = {"api_name": "preview"} if i == 0 else {"api_visibility": "private"}
        shown = event(preview, up.files, up.gallery, **api, **light)
        api = {"api_name": "identify"} if i == 0 else {"api_visibility": "private"}
        shown.then(identify_upload, [up.files, page.sid], [up.name, up.name_note], show_progress="hidden", **api, **lane)
    # An example picked: the same preview, then who the base model says it is (registered after the
    # upload's events, which own the /preview and /identify API names).
    ask = page.ask
    picked = up.examples.select(pick_example, page.sid, [page.sid, up.files, up.name, ask.ask_file, ask.ask_q],
                                api_visibility="private", **light)  # fmt: skip
    picked.then(preview, up.files, up.gallery, api_visibility="private", **light).then(
        identify_upload, [up.files, page.sid], [up.name, up.name_note], api_visibility="private", show_progress="hidden",
        **lane,
    )
    up.name.blur(check_name, None, up.name_note, inputs_kwargs={"files": up.files, "name": up.name, "sid": page.sid},
                 api_visibility="private", show_progress="hidden", **lane)  # fmt: skip
