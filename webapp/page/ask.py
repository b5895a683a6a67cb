""" "Ask both models": one question (about an image, or text only) to the base model and to this session's
model, side by side (:func:`webapp.service.ask.ask`)."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from nscvf.method.domain import WorldDomain
from nscvf.method.photo_domain import PhotoDomain
from webapp.page.common import Page, emit, lanes, page_error, session_of
from webapp.service.ask import ask as ask_both
from webapp.state import runtime
from webapp.state.settings import IMAGE_TYPES, Settings

# The question the page starts with and an example fills in: the embedded world's identity question
# (the examples are its characters).
QUESTION = WorldDomain().probe_questions()[0]


def question_for(model: str | None) -> str:
    """The identity question of a model's examples (``photo``: "What is this?"; else the world's)."""
    return PhotoDomain().probe_questions()[0] if model == "photo" else QUESTION


class Ask(NamedTuple):
    ask_file: gr.File
    ask_q: gr.Textbox
    ask_btn: gr.Button
    ask_base: gr.Textbox
    ask_current: gr.Textbox
    ask_note: gr.Markdown


class Answered(NamedTuple):
    """The outputs of a question."""

    ask_base: object
    ask_current: object
    ask_note: object


def build(settings: Settings | None = None) -> Ask:
    gr.Markdown("### Ask both models")
    with gr.Row():
        file = gr.File(
            label="An image (optional: leave empty for a text-only question)", file_count="single",
            file_types=IMAGE_TYPES, type="filepath", elem_id="ask_image", height=110,
        )  # fmt: skip
        with gr.Column():
            question = gr.Textbox(label="Question", value=question_for(settings.default_model if settings else None), elem_id="ask_question", max_lines=2)
            btn = gr.Button("Ask base and current", elem_id="ask")
    with gr.Row():
        base = gr.Textbox(label="Base model", elem_id="ask_base", interactive=False)
        current = gr.Textbox(label="Current model (this session)", elem_id="ask_current", interactive=False)
    note = gr.Markdown("", elem_id="ask_note", elem_classes="small-note")
    return Ask(file, question, btn, base, current, note)


def ask(file, question, sid, request: gr.Request):
    """Ask the base model and this session's current model the same question (:class:`Answered`)."""
    sid, sess = session_of(sid, request)
    try:
        a = ask_both(runtime.current(), sess, question, file)
    except BaseException as e:
        raise page_error(e) from None
    if a.k:
        note = f"Current = this session's model after {a.k} request(s)."
    else:
        note = "Nothing forgotten yet in this session: the current model is the base model."
    return emit(sid, Answered(a.base or "(empty answer)", a.current or "(empty answer)", note))


def wire(page: Page, settings: Settings) -> None:
    a = page.ask
    a.ask_btn.click(ask, None, page.outputs(Answered._fields), inputs_kwargs={"file": a.ask_file, "question": a.ask_q,
                    "sid": page.sid}, api_name="ask", show_progress_on=[a.ask_base, a.ask_current], **lanes(settings).lane)  # fmt: skip
