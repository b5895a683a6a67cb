"""The model choice at the top of the page (issue 17): the drawn world or real photos (``NSCVF_MODELS``), each
loaded once and shared by every session on it. Switching keeps the session's work on the model it leaves (it
comes back on switching back) and shows the chosen model's examples, question and requests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from nscvf.errors import NSCVFError
from webapp.page import upload
from webapp.page.ask import question_for
from webapp.page.common import Page, emit, lanes, page_error, session_of
from webapp.page.forget import shown
from webapp.service.models import current_model, switch_model
from webapp.state import runtime
from webapp.state.settings import Settings
from webapp.views import forget as views

log = logging.getLogger("nscvf.app")


class Models(NamedTuple):
    model_choice: gr.Radio


class SwitchExtras(NamedTuple):
    """What a switch changes beside the result panels (:class:`~webapp.views.forget.Outputs`)."""

    model_choice: object
    examples_note: object
    examples: object
    ask_file: object
    ask_q: object
    info: object


def build(settings: Settings) -> Models:
    """The Model radio (hidden when the page offers one model only)."""
    choices = [(m.label, m.key) for m in settings.models]
    radio = gr.Radio(choices, value=settings.default_model, label="Model", elem_id="model_choice",
                     visible=len(choices) > 1, interactive=True)  # fmt: skip
    return Models(radio)


def model_info(key: str | None = None) -> str:
    """The line under the title: which model answers this session, and its state (loading, failed, loaded)."""
    rt = runtime.current()
    try:
        m = rt.holder(key)
    except NSCVFError as e:
        return f"Model: {e}"
    choice = rt.settings.model(key)
    if not m.ready:
        return f"Model: {choice.label if choice else 'the model'}: loading…" if not m.error else f"Model: {m.error}"
    v = m.vlm
    if choice is not None and choice.key in ("world", "photo"):
        shown_as = f"{choice.label} (the embedded model {'/'.join(Path(choice.source).parts[-2:])})"
    else:
        shown_as = Path(v.source).name or v.source
    return f"Model: {shown_as} ({v.family}, {v.device}, {str(v.dtype).replace('torch.', '')}, fingerprint {v.fingerprint})"


def switch(key, sid, request: gr.Request):
    """The visitor picked another model: the session switches (its work on the old one kept), the page shows the
    new model's examples, question and requests; refused while a request of the session runs."""
    sid, sess = session_of(sid, request)
    rt = runtime.current()
    try:
        out = switch_model(rt, sess, key)
    except NSCVFError as e:
        log.info("model switch refused: %s", e)
        gr.Warning(str(e))
        keep = SwitchExtras(current_model(rt, sess), *([gr.skip()] * 5))
        return (*emit(sid, views.status_only(f"**Not switched:** {e}")), *keep)
    except BaseException as e:
        raise page_error(e) from None
    k = len(out.records)
    status = f"**Model: {out.model.label}.** " + (
        f"This session's {k} request(s) on it are back; the last one's results are shown." if k else
        "No request on it yet in this session: pick an example or upload images."
    ) + (" Your work on the other model is kept: switch back to see it." if out.changed else "")  # fmt: skip
    panels = views.empty(status, out.records) if out.last is None else shown(out.last, out.records, status)
    extras = SwitchExtras(out.model.key, upload.examples_note(out.model.key), upload.example_items(rt.settings, out.model.key),
                          None, question_for(out.model.key), model_info(out.model.key))  # fmt: skip
    return (*emit(sid, panels), *extras)


def wait_info(key: str | None = None):
    """After a switch: the model line again once the chosen model is loaded (it loads in the background)."""
    rt = runtime.current()
    try:
        rt.holder(key).wait(600)
    except NSCVFError:
        pass
    return model_info(key)


def wire(page: Page, settings: Settings) -> None:
    m = page.models.model_choice
    extras = [page.component(n) if n != "info" else page.info for n in SwitchExtras._fields]
    switched = m.input(switch, [m, page.sid], [*page.outputs(), *extras], api_name="switch_model",
                       show_progress_on=[page.forget.status], **lanes(settings).lane)  # fmt: skip
    switched.then(wait_info, m, page.info, api_visibility="private", show_progress="hidden", concurrency_limit=None)
