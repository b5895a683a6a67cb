"""The Gradio handlers: read the form, call :mod:`webapp.service`, turn errors into ``gr.Error`` and the
views' :class:`~webapp.views.Outputs` into component values. Nothing here touches the engine."""

from __future__ import annotations

import logging
import traceback
import uuid
from pathlib import Path

import gradio as gr

from nscvf import world
from nscvf.errors import InputError, NSCVFError
from nscvf.images import load_image
from webapp import runtime, service, timeline, views
from webapp.settings import ADVANCED

log = logging.getLogger("nscvf.app")

# The Forget form's inputs, in the order of the page's components (and of the /forget API).
FORGET_INPUTS = ["files", "name", "method", *[f for f, _, _ in ADVANCED], "evaluation", "retain_files", "sid"]


def _sid(sid: str | None, request: gr.Request | None) -> str:
    if sid:
        return sid
    h = getattr(request, "session_hash", None) if request is not None else None
    return h or uuid.uuid4().hex


def _session(sid, request):
    sid = _sid(sid, request)
    return sid, runtime.current().sessions.get(sid)


def _error(e: BaseException) -> gr.Error:
    """The message for the page. A user error (NSCVFError) is logged as one line; anything else with its
    traceback, and the page gets a short message."""
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, NSCVFError):
        log.info("refused: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return gr.Error(str(e), print_exception=False)
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(e)))
    return gr.Error(
        f"Something went wrong ({type(e).__name__}); the model is unchanged and the app keeps working. "
        "Details are in the server log."
    )


def _outputs(sid: str, out: views.Outputs) -> tuple:
    return (sid, *(gr.skip() if v is views.KEEP else v for v in out))


# ------------------------------------------------------------------------------------------ forget


def mark_pending(sid, request: gr.Request):
    """Browser click, before the queued Forget: count it (so that Cancel can drop it while it waits) and
    disable the button until it ends."""
    sid, sess = _session(sid, request)
    sess.queued()
    return sid, gr.update(interactive=False), ""


def enable_forget():
    return gr.update(interactive=True)


def forget_failed(sid, request: gr.Request):
    """After a failed Forget (``.failure``): the button back, and the error in the status, where it stays
    readable after the toast has gone."""
    sess = runtime.current().sessions.peek(_sid(sid, request))
    msg = (sess.last_error if sess is not None else None) or "The request failed; the model is unchanged."
    return gr.update(interactive=True), f"**Not done:** {msg}"


def forget(request: gr.Request, progress=gr.Progress(), *values):
    """Forget the concept shown in the images (one request of this session's chain). ``values``: the
    components named by :data:`FORGET_INPUTS`."""
    form = dict(zip(FORGET_INPUTS, values))
    sid, sess = _session(form.pop("sid"), request)
    rt = runtime.current()
    sess.last_error = None
    try:
        out = service.forget(rt, sess, form, progress)
    except BaseException as e:
        err = _error(e)
        sess.last_error = err.message
        raise err from None
    if out.stopped:
        return _outputs(sid, views.status_only(views.stopped_status(out.stopped, out.k, out.seconds, rt.settings.time_limit)))
    status = views.forget_status(out.record, out.k)
    items = views.gallery(out.record, out.request.images, out.request.paths)
    return _outputs(sid, views.render(out.record, sess.records, status, items))


def numbers(evaluation, sid, request: gr.Request, progress=gr.Progress()):
    """Accuracies before and after the last request, evaluated after the answers are shown.
    Returns (sid, numbers, history, note, status): the status is assessed again with the accuracies."""
    sid, sess = _session(sid, request)
    try:
        out = service.evaluate(runtime.current(), sess, evaluation, progress)
    except BaseException as e:
        raise _error(e) from None
    rec = out.record
    if rec is None:
        return sid, gr.skip(), gr.skip(), "Nothing to evaluate yet: run Forget first.", gr.skip()
    if out.cancelled:
        return sid, gr.skip(), gr.skip(), "Evaluation cancelled; press Forget again or call /numbers to evaluate.", gr.skip()
    note = "Evaluation is off (Advanced)." if rec.evaluation == "none" else views.numbers_note(rec)
    history = views.table(views.history_rows(sess.records), views.HISTORY_HEADERS)
    status = views.forget_status(rec, len(sess.records))
    return sid, views.table(views.number_rows(rec), views.NUMBER_HEADERS), history, note, status


def numbers_after_forget(evaluation, sid, request: gr.Request, progress=gr.Progress()):
    """The browser's follow-up of a Forget: evaluate only when the Forget produced a new result."""
    sess = runtime.current().sessions.peek(_sid(sid, request))
    if sess is None or not sess.numbers_due:
        return sid, gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return numbers(evaluation, sid, request, progress)


def cancel(sid, request: gr.Request):
    """Stop this session's running request (or drop the one waiting in the queue)."""
    sess = runtime.current().sessions.peek(_sid(sid, request))
    what = sess.cancel() if sess is not None else "nothing"
    if what == "queued":
        gr.Info("Your request will be cancelled before it starts.")
    elif what == "nothing":
        gr.Info("Nothing to cancel." if sess is None else "Nothing is running.")
    else:
        gr.Info("Cancelling…")
        job = sess.job
        if job is not None:
            job.done.wait(60)


def _rewind(sid, request, reset: bool):
    sid, sess = _session(sid, request)
    try:
        rec = service.rewind(runtime.current(), sess, reset)
    except BaseException as e:
        raise _error(e) from None
    if rec is False:
        return _outputs(sid, views.status_only("Nothing to undo: this session's model is the base model."))
    if reset:
        return _outputs(sid, views.empty("Reset: this session's model is the base model again.", sess.records))
    if rec is None:
        return _outputs(sid, views.empty("Undone: this session's model is the base model again.", sess.records))
    k = len(sess.records)
    images, paths = service.shown_images(rec)
    items = views.gallery(rec, images, paths) if images else []
    status = f"Undone: back to the model after request {k}; its results are shown.\n\n{views.forget_status(rec, k)}"
    return _outputs(sid, views.render(rec, sess.records, status, items, form=True))


def undo(sid, request: gr.Request):
    """Drop this session's last request (back to the model before it)."""
    return _rewind(sid, request, reset=False)


def reset(sid, request: gr.Request):
    """Drop every request of this session (back to the base model)."""
    return _rewind(sid, request, reset=True)


def ask(file, question, sid, request: gr.Request):
    """Ask the base model and this session's current model the same question (about an image, or text only)."""
    sid, sess = _session(sid, request)
    try:
        a = service.ask(runtime.current(), sess, question, file)
    except BaseException as e:
        raise _error(e) from None
    if a.k:
        note = f"Current = this session's model after {a.k} request(s)."
    else:
        note = "Nothing forgotten yet in this session: the current model is the base model."
    return sid, a.base or "(empty answer)", a.current or "(empty answer)", note


# ------------------------------------------------------------------------------- export / import


def download(sid, request: gr.Request):
    """Export this session's timeline (adapters, model card, records) to one zip; returns (sid, file, note)."""
    sid, sess = _session(sid, request)
    try:
        path = timeline.export_timeline(sess)
    except NSCVFError as e:
        log.info("download refused: %s", e)
        return sid, gr.update(value=None, visible=False), f"**Not exported:** {e}"
    except BaseException as e:
        raise _error(e) from None
    note = (f"`{path.name}`: {len(sess.records)} request(s); `UnlearningChain.load`, `nscvf ask --adapter` and "
            "`nscvf forget --continue-from` accept it, and **Import a timeline** restores it in another session.")  # fmt: skip
    return sid, gr.update(value=str(path), visible=True), note


def import_timeline(file, sid, request: gr.Request):
    """Replace this session's chain with the uploaded timeline and show it. A refused file (another base
    model, not a zip, damaged) leaves everything as it was and says why in the status line. Returns the
    page's outputs and the upload, cleared."""
    sid, sess = _session(sid, request)
    if not file:
        return (*_outputs(sid, views.status_only(views.KEEP)), gr.skip())
    try:
        out = timeline.import_timeline(runtime.current(), sess, file)
    except NSCVFError as e:
        log.info("import refused: %s", e)
        gr.Warning(str(e))
        return (*_outputs(sid, views.status_only(f"**Not imported:** {e}. This session is unchanged.")), None)
    except BaseException as e:
        raise _error(e) from None
    rec = out.last
    status = views.import_status(out.records, out.file)
    if rec is None:
        return (*_outputs(sid, views.empty(status, out.records)), None)
    images, paths = service.shown_images(rec)
    items = views.gallery(rec, images, paths) if images else []
    return (*_outputs(sid, views.render(rec, out.records, status, items, form=True)), None)


# ------------------------------------------------------------------------------- light handlers


def preview(files):
    """Show the uploaded images as the model will see them (RGB, EXIF-rotated); warn about bad files."""
    if not files:
        return []
    max_files = runtime.current().settings.max_files
    out, bad = [], []
    try:
        paths = service.image_paths(files, max_files)
    except InputError as e:
        gr.Warning(str(e))
        paths = service.image_paths(files[:max_files], max_files)
    for i, p in enumerate(paths):
        try:
            out.append((load_image(p), f"#{i + 1} {Path(p).name}"))
        except InputError as e:
            bad.append(str(e))
    for msg in bad[:5]:
        gr.Warning(msg)
    return out


def identify_upload(files):
    """After the upload changed: the name the base model gives the images (filling the name box) and a
    warning line (several characters, nobody). Returns (name, note). A name typed afterwards is checked
    against the images by the request itself (the status says when it disagrees)."""
    if not files:
        return "", ""
    try:
        ident = service.identify(runtime.current(), files)
    except NSCVFError as e:
        log.info("identify: %s", e)
        return gr.skip(), ""
    if ident is None or not (ident.counts or ident.warnings):  # nothing read, or a model that names nobody
        return gr.skip(), ""
    return ident.inferred or "", views.identify_note(ident)


def check_name(files, name):
    """The name box lost focus: warn when the typed name is not who the base model says the images show."""
    typed = (name or "").strip()
    if not files or not typed:
        return gr.skip()
    try:
        ident = service.identify(runtime.current(), files, typed, wait_s=0)
    except NSCVFError:
        return gr.skip()
    return views.identify_note(ident) if ident is not None and (ident.counts or ident.warnings) else gr.skip()


def example_characters(examples_dir: Path) -> list:
    return [c for c in world.CHARACTERS if (examples_dir / c.key).is_dir()]


def example_files(examples_dir: Path, key: str) -> list[str]:
    return sorted(str(p) for p in (examples_dir / key).glob("*.png"))


def pick_example(evt: gr.SelectData):
    """One click on a character: its renders fill the upload and its name the name box."""
    d = runtime.current().settings.examples_dir
    c = example_characters(d)[evt.index]
    held = d / "heldout" / f"{c.key}.png"
    return example_files(d, c.key), c.name, str(held) if held.exists() else None, "Who is this?"


def model_info() -> str:
    rt = runtime.current()
    m = rt.model
    if not m.ready:
        return "Model: loading…" if not m.error else f"Model: {m.error}"
    v = m.vlm
    embedded = Path(v.source).resolve() == rt.settings.model_dir.resolve()
    shown = "the embedded model (assets/model)" if embedded else Path(v.source).name
    return f"Model: {shown} ({v.family}, {v.device}, {str(v.dtype).replace('torch.', '')}, fingerprint {v.fingerprint})"


def wait_model_info():
    """Page load: show which model answers, once it is loaded."""
    runtime.current().model.wait(600)
    return model_info()


def free_session(request: gr.Request):
    """demo.unload: the tab was closed; cancel its job and free its chain's adapters."""
    runtime.current().sessions.free(getattr(request, "session_hash", None))


def free_state(sid) -> None:
    """gr.State delete_callback (the session expired)."""
    runtime.current().sessions.free(sid)
