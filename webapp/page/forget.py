"""Section 2 of the page, "Forget" (method, Advanced settings, Forget / Cancel / Undo / Reset, the status
line), the result panels it fills (3 · Before / after, 4 · the feature space, 5 · Numbers, the null
space), and their handlers: read the form, call :mod:`webapp.service.forget`, turn errors into
``gr.Error`` and the views' :class:`~webapp.views.forget.Outputs` into component values."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from webapp.page.common import Page, emit, lanes, page_error, session_of, sid_of
from webapp.service import forget as service
from webapp.service.jobs import shown_images
from webapp.state import runtime
from webapp.state.settings import ADVANCED, Settings, config_fields, method_choices
from webapp.views import forget as views
from webapp.views.format import table


class Forget(NamedTuple):
    method: gr.Dropdown
    advanced: dict  # UnlearnConfig field -> gr.Number (the Advanced settings, in ADVANCED's order)
    evaluation: gr.Radio
    forget_btn: gr.Button
    cancel_btn: gr.Button
    undo_btn: gr.Button
    reset_btn: gr.Button
    status: gr.Markdown


class Results(NamedTuple):
    forget_table: gr.Dataframe
    retain_table: gr.Dataframe
    text_note: gr.Markdown
    text_table: gr.Dataframe
    plot_before: gr.Plot
    plot_after: gr.Plot
    plot_note: gr.Markdown
    numbers: gr.Dataframe
    numbers_note: gr.Markdown
    numbers_btn: gr.Button


class NullSpace(NamedTuple):
    null_plot: gr.Plot
    null_note: gr.Markdown


class Numbers(NamedTuple):
    """The outputs of Evaluate (and of the evaluation that follows a Forget)."""

    numbers: object
    history: object
    numbers_note: object
    status: object


def build_controls(settings: Settings, steps_hi: int) -> Forget:
    """The column "2 · Forget" (inside the page's first row). ``steps_hi``: the most steps that fit the time limit."""
    fields = config_fields()
    gr.Markdown("### 2 · Forget")
    method = gr.Dropdown(choices=method_choices(), value="nscvf", label="Method", elem_id="method")
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        advanced = {}
        for f, label, integer in ADVANCED:
            m = dict(fields[f], hi=steps_hi) if f == "steps" else fields[f]
            advanced[f] = gr.Number(value=m["default"], label=label, precision=0 if integer else None,
                                    info=f"{m['lo']:g} to {m['hi']:g}; default {m['default']:g}. {m['help']}",
                                    elem_id=f"adv_{f}")  # fmt: skip
        evaluation = gr.Radio(["quick", "none", "full"], value="quick", label="Evaluation before/after",
                              info="quick: 2 renders per character; full adds multiple choice", elem_id="adv_evaluate")  # fmt: skip
    with gr.Row():
        forget_btn = gr.Button("Forget", variant="primary", elem_id="forget")
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
    with gr.Row():
        undo_btn = gr.Button("Undo last", size="sm", elem_id="undo")
        reset_btn = gr.Button("Reset to base", size="sm", elem_id="reset")
    status = gr.Markdown("Pick an example or upload images, then press **Forget**.", elem_id="status")
    return Forget(method, advanced, evaluation, forget_btn, cancel_btn, undo_btn, reset_btn, status)


def build_results() -> Results:
    """Sections 3 (before / after), 4 (the feature space) and 5 (numbers)."""
    gr.Markdown("### 3 · Before / after")
    frame = {"interactive": False, "wrap": True}
    forget_table = gr.Dataframe(table([], views.FORGET_HEADERS), label="The forget images: identity and a fact question",
                                elem_id="forget_answers", max_height=420, **frame)  # fmt: skip
    retain_table = gr.Dataframe(table([], views.RETAIN_HEADERS), label="Retained characters and things (should not change)",
                                elem_id="retain_answers", **frame)  # fmt: skip
    text_note = gr.Markdown("", elem_id="text_note")
    text_table = gr.Dataframe(table([], views.TEXT_HEADERS), label="Text-only questions about the target (no image)",
                              elem_id="text_answers", max_height=300, **frame)  # fmt: skip
    gr.Markdown("### 4 · Where the images sit in the model's visual feature space")
    with gr.Row():
        plot_before = gr.Plot(label="Before", elem_id="plot_before")
        plot_after = gr.Plot(label="After", elem_id="plot_after")
    plot_note = gr.Markdown("", elem_id="plot_note", elem_classes="small-note")
    gr.Markdown("### 5 · Numbers (all measured in this run)")
    numbers = gr.Dataframe(table([], views.NUMBER_HEADERS), label="Accuracy before → after, drift, null space, time",
                           elem_id="numbers", **frame)  # fmt: skip
    with gr.Row():
        numbers_note = gr.Markdown("", elem_id="numbers_note", elem_classes="small-note")
        numbers_btn = gr.Button("Evaluate", size="sm", elem_id="evaluate", scale=0, min_width=160)
    return Results(forget_table, retain_table, text_note, text_table, plot_before, plot_after, plot_note, numbers,
                   numbers_note, numbers_btn)  # fmt: skip


def build_nullspace() -> NullSpace:
    with gr.Accordion("Null space of this request", open=True, elem_id="null_space"):
        null_plot = gr.Plot(label="Per layer: kept rank and energy inside the null space", elem_id="null_plot")
        null_note = gr.Markdown("", elem_id="null_note", elem_classes="small-note")
    return NullSpace(null_plot, null_note)


# ---------------------------------------------------------------------------------------- handlers


def mark_pending(sid, request: gr.Request):
    """Browser click, before the queued Forget: count it (so that Cancel can drop it while it waits) and
    disable the button until it ends."""
    sid, sess = session_of(sid, request)
    sess.queued()
    return sid, gr.update(interactive=False), ""


def enable_forget():
    return gr.update(interactive=True)


def forget_failed(sid, request: gr.Request):
    """After a failed Forget (``.failure``): the button back, and the error in the status, where it stays
    readable after the toast has gone."""
    sess = runtime.current().sessions.peek(sid_of(sid, request))
    msg = (sess.last_error if sess is not None else None) or "The request failed; the model is unchanged."
    return gr.update(interactive=True), f"**Not done:** {msg}"


def forget(request: gr.Request, progress=gr.Progress(), **form):
    """Forget the concept shown in the images (one request of this session's chain). ``form``: the Forget
    form by name (``files``, ``name``, ``method``, the Advanced fields, ``evaluation``, ``retain_files``) and
    the session id ``sid``."""
    sid, sess = session_of(form.pop("sid", None), request)
    rt = runtime.current()
    sess.last_error = None
    try:
        out = service.forget(rt, sess, form, progress)
    except BaseException as e:
        err = page_error(e)
        sess.last_error = err.message
        raise err from None
    if out.stopped:
        return emit(sid, views.status_only(views.stopped_status(out.stopped, out.k, out.seconds, rt.settings.time_limit)))
    status = views.forget_status(out.record, out.k)
    items = views.gallery(out.record, out.request.images, out.request.paths)
    return emit(sid, views.render(out.record, sess.records, status, items))


def numbers(evaluation, sid, request: gr.Request, progress=gr.Progress()):
    """Accuracies before and after the last request, evaluated after the answers are shown; the status is
    assessed again with the accuracies (:class:`Numbers`)."""
    sid, sess = session_of(sid, request)
    try:
        out = service.evaluate(runtime.current(), sess, evaluation, progress)
    except BaseException as e:
        raise page_error(e) from None
    rec, keep = out.record, views.KEEP
    if rec is None:
        return emit(sid, Numbers(keep, keep, "Nothing to evaluate yet: run Forget first.", keep))
    if out.superseded:  # an Undo or Reset stopped it and shows the session's state itself
        return emit(sid, Numbers(keep, keep, keep, keep))
    note = "Evaluation is off (Advanced)." if rec.evaluation == "none" else views.numbers_note(rec)
    if out.cancelled:
        note = "Evaluation cancelled: press **Evaluate** to measure the accuracies."
    history = table(views.history_rows(sess.records), views.HISTORY_HEADERS)
    status = views.forget_status(rec, len(sess.records))
    return emit(sid, Numbers(table(views.number_rows(rec), views.NUMBER_HEADERS), history, note, status))


def numbers_after_forget(evaluation, sid, request: gr.Request, progress=gr.Progress()):
    """The browser's follow-up of a Forget: evaluate only when the Forget produced a new result."""
    sess = runtime.current().sessions.peek(sid_of(sid, request))
    if sess is None or not sess.numbers_due:
        return emit(sid, Numbers(*[views.KEEP] * len(Numbers._fields)))
    return numbers(evaluation, sid, request, progress)


def cancel(sid, request: gr.Request):
    """Stop this session's running request (or drop the one waiting in the queue)."""
    sess = runtime.current().sessions.peek(sid_of(sid, request))
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


def shown(rec, records, status: str) -> views.Outputs:
    """A record shown again (after Undo or an import): its panels, its images back in the upload."""
    images, paths = shown_images(rec)
    items = views.gallery(rec, images, paths) if images else []
    return views.render(rec, records, status, items, form=True)


def rewind(sid, request, reset: bool):
    sid, sess = session_of(sid, request)
    try:
        rec = service.rewind(runtime.current(), sess, reset)
    except BaseException as e:
        raise page_error(e) from None
    if rec is False:
        return emit(sid, views.status_only("Nothing to undo: this session's model is the base model."))
    if reset:
        return emit(sid, views.empty("Reset: this session's model is the base model again.", sess.records))
    if rec is None:
        return emit(sid, views.empty("Undone: this session's model is the base model again.", sess.records))
    k = len(sess.records)
    status = f"Undone: back to the model after request {k}; its results are shown.\n\n{views.forget_status(rec, k)}"
    return emit(sid, shown(rec, sess.records, status))


def undo(sid, request: gr.Request):
    """Drop this session's last request (back to the model before it)."""
    return rewind(sid, request, reset=False)


def reset(sid, request: gr.Request):
    """Drop every request of this session (back to the base model)."""
    return rewind(sid, request, reset=True)


def wire(page: Page, settings: Settings) -> None:
    fc, up, res = page.forget, page.upload, page.results
    compute, lane, light = lanes(settings)
    outputs = page.outputs()
    # The /forget API's parameters, in this order: the upload, the name, the method, the Advanced fields,
    # the evaluation, the images to keep (the session id is the State, not a parameter).
    form = {"files": up.files, "name": up.name, "method": fc.method, **fc.advanced, "evaluation": fc.evaluation,
            "retain_files": up.retain_files, "sid": page.sid}  # fmt: skip
    click = fc.forget_btn.click(mark_pending, page.sid, [page.sid, fc.forget_btn, fc.status], api_visibility="private",
                                **light)  # fmt: skip
    done = click.then(forget, None, outputs, inputs_kwargs=form, api_name="forget", show_progress_on=[fc.status],
                      time_limit=2 * settings.time_limit + 120, **compute)  # a turn (one long job ahead) and the job; the app stops the job itself  # fmt: skip
    done.failure(forget_failed, page.sid, [fc.forget_btn, fc.status], api_visibility="private", **light)
    done.success(enable_forget, None, fc.forget_btn, api_visibility="private", **light)
    evaluate = {"evaluation": fc.evaluation, "sid": page.sid}
    done.success(numbers_after_forget, None, page.outputs(Numbers._fields), inputs_kwargs=evaluate,
                 api_visibility="private", show_progress_on=[res.numbers], **lane)  # fmt: skip
    res.numbers_btn.click(numbers, None, page.outputs(Numbers._fields), inputs_kwargs=evaluate, api_name="numbers",
                          show_progress_on=[res.numbers], **lane)  # fmt: skip
    fc.cancel_btn.click(cancel, page.sid, None, api_name="cancel", **light)
    fc.undo_btn.click(undo, page.sid, outputs, api_name="undo", show_progress_on=[fc.status], **lane)
    fc.reset_btn.click(reset, page.sid, outputs, api_name="reset", show_progress_on=[fc.status], **lane)
