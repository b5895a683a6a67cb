"""The session's timeline: the history table (one row per request) and "download or import" (one zip of
the requests' adapters and records), with their handlers (:mod:`webapp.service.timeline`)."""

from __future__ import annotations

import logging
from typing import NamedTuple

import gradio as gr

from nscvf.errors import NSCVFError
from webapp.page.common import Page, emit, lanes, page_error, session_of
from webapp.page.forget import shown
from webapp.service import timeline as service
from webapp.state import runtime
from webapp.state.settings import Settings
from webapp.views import forget as views
from webapp.views.format import table

log = logging.getLogger("nscvf.app")


class Timeline(NamedTuple):
    history: gr.Dataframe
    download_btn: gr.Button
    download_file: gr.File
    download_note: gr.Markdown
    import_file: gr.File


class Download(NamedTuple):
    """The outputs of a download."""

    download_file: object
    download_note: object


def build() -> Timeline:
    history = gr.Dataframe(
        table([], views.HISTORY_HEADERS), label="This session's requests (continual unlearning): what each one measured",
        elem_id="history", interactive=False, wrap=True,
    )  # fmt: skip
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
    return Timeline(history, download_btn, download_file, download_note, import_file)


def download(sid, request: gr.Request):
    """Export this session's timeline (adapters, model card, records) to one zip (:class:`Download`)."""
    sid, sess = session_of(sid, request)
    try:
        path = service.export_timeline(sess)
    except NSCVFError as e:
        log.info("download refused: %s", e)
        return emit(sid, Download(gr.update(value=None, visible=False), f"**Not exported:** {e}"))
    except BaseException as e:
        raise page_error(e) from None
    note = (f"`{path.name}`: {len(sess.records)} request(s); `UnlearningChain.load`, `nscvf ask --adapter` and "
            "`nscvf forget --continue-from` accept it, and **Import a timeline** restores it in another session.")  # fmt: skip
    return emit(sid, Download(gr.update(value=str(path), visible=True), note))


def import_timeline(file, sid, request: gr.Request):
    """Replace this session's chain with the uploaded timeline and show it. A refused file (another base
    model, not a zip, damaged) leaves everything as it was and says why in the status line. Returns the
    page's outputs and the upload, cleared."""
    sid, sess = session_of(sid, request)
    if not file:
        return (*emit(sid, views.status_only(views.KEEP)), gr.skip())
    try:
        out = service.import_timeline(runtime.current(), sess, file)
    except NSCVFError as e:
        log.info("import refused: %s", e)
        gr.Warning(str(e))
        return (*emit(sid, views.status_only(f"**Not imported:** {e}. This session is unchanged.")), None)
    except BaseException as e:
        raise page_error(e) from None
    status = views.import_status(out.records, out.file)
    if out.last is None:
        return (*emit(sid, views.empty(status, out.records)), None)
    return (*emit(sid, shown(out.last, out.records, status)), None)


def wire(page: Page, settings: Settings) -> None:
    t, lane = page.timeline, lanes(settings).lane
    t.download_btn.click(download, page.sid, page.outputs(Download._fields), api_name="download", **lane)
    t.import_file.upload(import_timeline, None, [*page.outputs(), t.import_file], api_name="import_timeline",
                         inputs_kwargs={"file": t.import_file, "sid": page.sid}, show_progress_on=[page.forget.status],
                         **lane)  # fmt: skip
