"""What every section of the page shares: the look (:data:`CSS`, fonts), the :class:`Page` (the sections'
named components, and the outputs of an event from one list of names), the queue lanes, and the helpers
that turn a session id, an error and a view's values into what Gradio takes.

Each section module (``upload``, ``forget``, ``teach``, ``timeline``, ``compare``, ``ask``) has a
``build...`` function returning its components as a NamedTuple (the field names are the names the views
use: :class:`webapp.views.forget.Outputs`), its handlers, and a ``wire(page, settings)`` that registers
its events with inputs by name (``inputs_kwargs``) and outputs by name (:meth:`Page.outputs`).
"""

from __future__ import annotations

import logging
import traceback
import uuid
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import gradio as gr

from nscvf.errors import NSCVFError
from webapp.state import runtime
from webapp.state.settings import Settings
from webapp.views.forget import KEEP, Outputs

log = logging.getLogger("nscvf.app")

CSS = """
#status {min-height: 4.5em}
#examples .grid-container {grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)) !important}
#preview .grid-container {grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)) !important}
#examples .caption-label, #preview .caption-label {white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; max-width: 100% !important; position: static !important; line-height: 1.2}
#examples .thumbnail-item, #preview .thumbnail-item {height: auto !important; flex-direction: column}
#examples .grid-wrap, #preview .grid-wrap, #examples .gallery-container, #preview .gallery-container {
  height: auto !important; max-height: none !important; min-height: 0 !important}
table td, table th, table td span, table th span {word-break: normal !important; overflow-wrap: normal !important;
  hyphens: none}
.small-note {font-size: 0.9em; opacity: 0.85}
#method .secondary-wrap input, #compare_method .secondary-wrap input {text-overflow: ellipsis; min-width: 0;
  padding-right: 0.5em}
#method .icon-wrap, #compare_method .icon-wrap {flex-shrink: 0}
#compare_table table {table-layout: fixed; width: 100% !important}
#compare_table td, #compare_table th {white-space: normal !important; overflow-wrap: anywhere !important}
"""

THEME_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]


# ------------------------------------------------------------------------------------------ the page


@dataclass
class Page:
    """The built page: the session-id State and every section's named components."""

    sid: gr.State
    info: gr.Markdown
    upload: NamedTuple
    forget: NamedTuple
    teach: NamedTuple
    timeline: NamedTuple
    results: NamedTuple
    compare: NamedTuple
    nullspace: NamedTuple
    relearn: NamedTuple
    ask: NamedTuple
    models: NamedTuple  # the Model radio (webapp.page.models)

    def sections(self) -> dict[str, NamedTuple]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sid", "info")}

    def component(self, name: str):
        """The one component of the page called ``name`` (a field of a section); KeyError when there is
        none, ValueError when two sections both have one."""
        found = [getattr(s, name) for s in self.sections().values() if name in s._fields]
        if len(found) > 1:
            raise ValueError(f"two sections of the page have a component called {name!r}")
        if not found:
            raise KeyError(f"no section of the page has a component called {name!r}")
        return found[0]

    def outputs(self, names=Outputs._fields) -> list:
        """An event's outputs: the session id, then the components called ``names`` in that order (the
        fields of the NamedTuple the handler returns)."""
        return [self.sid, *(self.component(n) for n in names)]


class Lanes(NamedTuple):
    """The queue options of the page's events (see :mod:`webapp.page.app`)."""

    compute: dict  # Forget, Teach, relearning, comparison: admitted at once, then fair turns in code (runtime.turns)
    lane: dict  # Ask, Undo, Reset, Evaluate, name inference: their own lane
    light: dict  # instant handlers: no limit, no progress


def lanes(settings: Settings) -> Lanes:
    return Lanes(
        # Every training event is admitted (up to the queue's size) and waits for its turn in code
        # (webapp.state.turns: short and long jobs in their own lanes, the wait and ETA on the page).
        {"concurrency_id": "compute", "concurrency_limit": settings.max_queue},
        {"concurrency_id": "light", "concurrency_limit": settings.light_concurrency},
        {"concurrency_limit": None, "show_progress": "hidden"},
    )


# ---------------------------------------------------------------------------------------- handlers


def sid_of(sid: str | None, request: gr.Request | None) -> str:
    """The session id: the State's, else the browser connection's, else a new one (an API call)."""
    if sid:
        return sid
    h = getattr(request, "session_hash", None) if request is not None else None
    return h or uuid.uuid4().hex


def session_of(sid, request):
    """(sid, the session) of an event."""
    sid = sid_of(sid, request)
    return sid, runtime.current().sessions.get(sid)


def page_error(e: BaseException) -> gr.Error:
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


def emit(sid: str, values: Any) -> tuple:
    """What a handler returns for :meth:`Page.outputs`: the session id, then the view's values (a
    NamedTuple in the order of its fields), :data:`~webapp.views.forget.KEEP` as ``gr.skip()``."""
    return (sid, *(gr.skip() if v is KEEP else v for v in values))
