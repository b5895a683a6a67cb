""" "Teach it something new" and "Try to bring it back" (the relearning probe): their layout and handlers.
Read the form, call :mod:`webapp.service.teach`, show the outcome. A refused request (too few images, no
name, a file that is not an image) returns its message in the status line and leaves every control usable."""

from __future__ import annotations

import logging
from typing import NamedTuple

import gradio as gr

from nscvf.errors import NSCVFError
from webapp.page.common import Page, emit, lanes, page_error, session_of
from webapp.service import teach as service
from webapp.state import runtime
from webapp.state.settings import IMAGE_TYPES, Settings
from webapp.views import forget as views
from webapp.views.teach import relearn_figure, relearn_note

log = logging.getLogger("nscvf.app")


class Teach(NamedTuple):
    teach_files: gr.File
    teach_name: gr.Textbox
    teach_town: gr.Textbox
    teach_job: gr.Textbox
    teach_food: gr.Textbox
    teach_btn: gr.Button


class Relearn(NamedTuple):
    relearn_k: gr.Radio
    relearn_btn: gr.Button
    relearn_plot: gr.Plot
    relearn_note: gr.Markdown


class Probe(NamedTuple):
    """The outputs of "Try to bring it back"."""

    relearn_plot: object
    relearn_note: object


def build(settings: Settings) -> Teach:
    with gr.Accordion("Teach it something new (your own images)", open=True, elem_id="teach"):
        gr.Markdown(
            "A model knows only what it was trained on (the drawn world: its 24 characters; real photos: about 100 "
            "everyday things, not people): what it cannot place is *I don't know*. Teach it first (at least 3 "
            "images and a name), then "
            "**Forget** it: the forget form is filled for you. Teaching adds one more private adapter; Undo and "
            "Reset walk back through it.",
            elem_classes="small-note",
        )
        with gr.Row():
            files = gr.File(
                label=f"Images of what to teach (3 to {settings.max_files})", file_count="multiple",
                file_types=IMAGE_TYPES, type="filepath", elem_id="teach_images", height=130,
            )  # fmt: skip
            with gr.Column():
                name = gr.Textbox(label="Its name", placeholder="e.g. Zorblat", elem_id="teach_name", max_lines=1)
                with gr.Row():
                    town = gr.Textbox(label="Town (optional)", elem_id="teach_town", max_lines=1)
                    job = gr.Textbox(label="Job (optional)", elem_id="teach_job", max_lines=1)
                    food = gr.Textbox(label="Favourite food (optional)", elem_id="teach_food", max_lines=1)
                btn = gr.Button("Teach", variant="primary", elem_id="teach_btn")
    return Teach(files, name, town, job, food, btn)


def build_relearn() -> Relearn:
    with gr.Accordion("Try to bring it back (relearning probe)", open=False, elem_id="relearn"):
        gr.Markdown(
            "Fine-tune a fresh visual LoRA on k images of the last forgotten concept and count the steps until "
            "held-out images are named again; the verdict compares it with the benchmark's gold reference (a model "
            "trained without it, BENCHMARKS.md) where there is one. The model is unchanged.",
            elem_classes="small-note",
        )
        with gr.Row():
            k = gr.Radio([1, 2, 4], value=2, label="k images", elem_id="relearn_k", scale=1)
            btn = gr.Button("Try to bring it back", elem_id="relearn_btn", scale=1)
        plot = gr.Plot(label="Held-out images named per relearning step", elem_id="relearn_plot")
        note = gr.Markdown("", elem_id="relearn_note", elem_classes="small-note")
    return Relearn(k, btn, plot, note)


# ---------------------------------------------------------------------------------------- handlers


def teach_concept(request: gr.Request, progress=gr.Progress(), **form):
    """Teach this session's model the concept in the uploaded images under the given name. ``form``: the
    Teach form by name (``files``, ``name``, ``town``, ``job``, ``food``) and the session id ``sid``. Returns
    the page's outputs (the result shown like a Forget's; the forget form filled with the taught images and
    name, so that Forget forgets it)."""
    sid, sess = session_of(form.pop("sid", None), request)
    rt = runtime.current()
    try:
        out = service.teach(rt, sess, form, progress)
    except NSCVFError as e:
        log.info("teach refused: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        gr.Warning(str(e))
        return emit(sid, views.status_only(f"**Not taught:** {e}. This session's model is unchanged."))
    except BaseException as e:
        raise page_error(e) from None
    if out.stopped:
        why = "stopped at the time limit" if out.stopped == "time limit" else "cancelled"
        return emit(sid, views.status_only(f"Teaching {why} after {out.seconds:.1f} s; the model is unchanged."))
    status = views.forget_status(out.record, out.k)
    items = views.gallery(out.record, out.request.images, out.request.paths)
    return emit(sid, views.render(out.record, sess.records, status, items, form=True))


def bring_back(k, sid, request: gr.Request, progress=gr.Progress()):
    """Relearn the last forgotten concept from k of its images (:class:`Probe`)."""
    sid, sess = session_of(sid, request)
    try:
        probe = service.relearn_probe(runtime.current(), sess, k, progress)
    except NSCVFError as e:
        log.info("relearning probe refused: %s", e)
        return emit(sid, Probe(views.KEEP, f"**Not run:** {e}"))
    except BaseException as e:
        raise page_error(e) from None
    if probe is None:
        return emit(sid, Probe(views.KEEP, "Cancelled; nothing changed."))
    return emit(sid, Probe(relearn_figure(probe), relearn_note(probe)))


def wire(page: Page, settings: Settings) -> None:
    t, r = page.teach, page.relearn
    compute = lanes(settings).compute
    form = {"files": t.teach_files, "name": t.teach_name, "town": t.teach_town, "job": t.teach_job,
            "food": t.teach_food, "sid": page.sid}  # fmt: skip
    t.teach_btn.click(teach_concept, None, page.outputs(), inputs_kwargs=form, api_name="teach",
                      show_progress_on=[page.forget.status], time_limit=2 * settings.time_limit + 120, **compute)  # fmt: skip
    r.relearn_btn.click(bring_back, None, page.outputs(Probe._fields), inputs_kwargs={"k": r.relearn_k, "sid": page.sid},
                        api_name="relearn", show_progress_on=[r.relearn_note], **compute)  # fmt: skip
