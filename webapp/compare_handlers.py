"""The Gradio handler of "Compare two methods on this request": calls :func:`webapp.compare.compare_methods`
and turns the comparison into the side-by-side table, the two "after" plots and a note. A refused request
(nothing forgotten yet, a busy session) returns its message in the note; every control stays usable."""

from __future__ import annotations

import logging

import gradio as gr
import pandas as pd
import plotly.io as pio

from nscvf.errors import NSCVFError
from webapp import compare, runtime
from webapp.handlers import _error, _session

log = logging.getLogger("nscvf.app")


def _figure(js):
    return pio.from_json(js) if js else None


def compare_methods(method, sid, request: gr.Request, progress=gr.Progress()):
    """Run the session's last forget request again with ``method``; returns (sid, table, plot A, plot B, note)."""
    sid, sess = _session(sid, request)
    try:
        c = compare.compare_methods(runtime.current(), sess, method, progress)
    except NSCVFError as e:
        log.info("comparison refused: %s", e)
        return sid, gr.skip(), gr.skip(), gr.skip(), f"**Not run:** {e}"
    except BaseException as e:
        raise _error(e) from None
    if c is None:
        return sid, gr.skip(), gr.skip(), gr.skip(), "Cancelled; nothing changed."
    table = pd.DataFrame(compare.comparison_rows(c), columns=["", f"A: {c.first.method}", f"B: {c.second.method}"])
    return sid, table, _figure(c.first.figure), _figure(c.second.figure), compare.comparison_note(c)
