"""The Gradio handlers of "Teach it something new" and "Try to bring it back": read the form, call
:mod:`webapp.teach`, turn the outcome into the page's outputs. A refused request (too few images, no name,
a file that is not an image) returns its message in the status line and leaves every control usable."""

from __future__ import annotations

import logging

import gradio as gr

from nscvf.errors import NSCVFError
from webapp import runtime, teach, teach_view, views
from webapp.handlers import _error, _outputs, _session

log = logging.getLogger("nscvf.app")

TEACH_INPUTS = ["files", "name", "town", "job", "food", "sid"]


def teach_concept(request: gr.Request, progress=gr.Progress(), *values):
    """Teach this session's model the concept in the uploaded images under the given name. Returns the
    page's outputs (the result shown like a Forget's; the forget form filled with the taught images and
    name, so that Forget forgets it)."""
    form = dict(zip(TEACH_INPUTS, values))
    sid, sess = _session(form.pop("sid"), request)
    rt = runtime.current()
    try:
        out = teach.teach(rt, sess, form, progress)
    except NSCVFError as e:
        log.info("teach refused: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        gr.Warning(str(e))
        return _outputs(sid, views.status_only(f"**Not taught:** {e}. This session's model is unchanged."))
    except BaseException as e:
        raise _error(e) from None
    if out.stopped:
        why = "stopped at the time limit" if out.stopped == "time limit" else "cancelled"
        return _outputs(sid, views.status_only(f"Teaching {why} after {out.seconds:.1f} s; the model is unchanged."))
    status = views.forget_status(out.record, out.k)
    items = views.gallery(out.record, out.request.images, out.request.paths)
    return _outputs(sid, views.render(out.record, sess.records, status, items, form=True))


def bring_back(k, sid, request: gr.Request, progress=gr.Progress()):
    """Relearn the last forgotten concept from k of its images; returns (sid, plot, note)."""
    sid, sess = _session(sid, request)
    try:
        probe = teach.relearn_probe(runtime.current(), sess, k, progress)
    except NSCVFError as e:
        log.info("relearning probe refused: %s", e)
        return sid, gr.skip(), f"**Not run:** {e}"
    except BaseException as e:
        raise _error(e) from None
    if probe is None:
        return sid, gr.skip(), "Cancelled; nothing changed."
    return sid, teach_view.relearn_figure(probe), teach_view.relearn_note(probe)
