""" "Compare two methods on this request": its layout and handler (calls
:func:`webapp.service.compare.compare_methods`, shows :mod:`webapp.views.compare`). A refused request
(nothing forgotten yet, a busy session) returns its message in the note; every control stays usable."""

from __future__ import annotations

import logging
from typing import NamedTuple

import gradio as gr
import plotly.io as pio

from nscvf.errors import NSCVFError
from webapp.page.common import Page, emit, lanes, page_error, session_of
from webapp.service.compare import compare_methods as run_comparison
from webapp.state import runtime
from webapp.state.settings import Settings, method_choices
from webapp.views.compare import comparison_note, comparison_table
from webapp.views.forget import KEEP

log = logging.getLogger("nscvf.app")


class Compare(NamedTuple):
    compare_method: gr.Dropdown
    compare_btn: gr.Button
    compare_note: gr.Markdown
    compare_table: gr.Dataframe
    compare_a: gr.Plot
    compare_b: gr.Plot


class Compared(NamedTuple):
    """The outputs of a comparison."""

    compare_table: object
    compare_a: object
    compare_b: object
    compare_note: object


def build() -> Compare:
    with gr.Accordion("Compare two methods on this request", open=False, elem_id="compare"):
        gr.Markdown(
            "Run the last forget request again (same images, target and settings) with another method, from the "
            "state before it, on a throwaway copy: this session's model is unchanged.",
            elem_classes="small-note",
        )
        with gr.Row():
            method = gr.Dropdown(choices=method_choices(), value="gd", label="Method B", elem_id="compare_method", scale=2)
            btn = gr.Button("Run it with this method too", elem_id="compare_btn", scale=1)
        note = gr.Markdown("", elem_id="compare_note", elem_classes="small-note")
        table = gr.Dataframe(
            headers=["", "A", "B"], elem_id="compare_table", interactive=False, wrap=True, column_widths=["30%", "35%", "35%"]
        )  # B was cut off at 1400 px (issue 19)
        with gr.Row():
            a = gr.Plot(label="A: after (embeddings)", elem_id="compare_plot_a")
            b = gr.Plot(label="B: after (embeddings)", elem_id="compare_plot_b")
    return Compare(method, btn, note, table, a, b)


def _figure(js):
    return pio.from_json(js) if js else None


def compare_methods(method, sid, request: gr.Request, progress=gr.Progress()):
    """Run the session's last forget request again with ``method`` (:class:`Compared`)."""
    sid, sess = session_of(sid, request)
    try:
        c = run_comparison(runtime.current(), sess, method, progress)
    except NSCVFError as e:
        log.info("comparison refused: %s", e)
        return emit(sid, Compared(KEEP, KEEP, KEEP, f"**Not run:** {e}"))
    except BaseException as e:
        raise page_error(e) from None
    if c is None:
        return emit(sid, Compared(KEEP, KEEP, KEEP, "Cancelled; nothing changed."))
    return emit(sid, Compared(comparison_table(c), _figure(c.first.figure), _figure(c.second.figure), comparison_note(c)))


def wire(page: Page, settings: Settings) -> None:
    c = page.compare
    c.compare_btn.click(compare_methods, None, page.outputs(Compared._fields),
                        inputs_kwargs={"method": c.compare_method, "sid": page.sid}, api_name="compare",
                        show_progress_on=[c.compare_note], **lanes(settings).compute)  # fmt: skip
