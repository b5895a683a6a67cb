"""The page's wiring without a server: every event's outputs are the components named by the fields of
the NamedTuple its handler returns (``Outputs._fields`` for Forget, Undo, Reset, Teach, Import), in that
order, each the component the browser knows by its element id; the inputs go by name, in the order of the
public API (the order tests/server/test_app.py and scripts/bench_app.py call /forget with); and a
rendered record's values fit the components they land in (a table in a table, a figure in a plot)."""

from __future__ import annotations

import sys
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # webapp/ is the app's package, next to app.py (not installed)

from nscvf import world  # noqa: E402
from nscvf.method.result import UnlearnResult  # noqa: E402
from webapp.page import app as page_app  # noqa: E402
from webapp.page.ask import Answered  # noqa: E402
from webapp.page.common import Page  # noqa: E402
from webapp.page.compare import Compared  # noqa: E402
from webapp.page.forget import Numbers  # noqa: E402
from webapp.page.teach import Probe  # noqa: E402
from webapp.page.timeline import Download  # noqa: E402
from webapp.state import runtime  # noqa: E402
from webapp.state.records import RequestRecord  # noqa: E402
from webapp.state.settings import ADVANCED, FIRST_EXAMPLE, Settings  # noqa: E402
from webapp.views import forget as views  # noqa: E402

# What the browser tests and a visitor know each output by (its element id): a field wired to another
# component than this fails here, not silently on the page.
ELEM_IDS = {
    "status": "status", "history": "history", "gallery": "preview", "forget_table": "forget_answers",
    "retain_table": "retain_answers", "text_note": "text_note", "text_table": "text_answers",
    "plot_before": "plot_before", "plot_after": "plot_after", "plot_note": "plot_note", "numbers": "numbers",
    "files": "images", "name": "target", "name_note": "identify_note", "ask_base": "ask_base",
    "ask_current": "ask_current", "ask_note": "ask_note", "null_plot": "null_plot", "null_note": "null_note",
}  # fmt: skip
FORGET_API = ["files", "name", "method", *[f for f, _, _ in ADVANCED], "evaluation", "retain_files"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[gr.Blocks, Page]:
    tmp = tmp_path_factory.mktemp("page")
    settings = Settings(data_dir=tmp / "data", examples_dir=ROOT / "assets" / "examples", model_dir=ROOT / "assets" / "model")
    return page_app.build(settings, runtime.local(settings, None, None, warm_up=False))


def test_default_settings_point_at_the_repository_assets(tmp_path):
    s = Settings.from_env({"NSCVF_DATA_DIR": str(tmp_path)})
    assert s.examples_dir == ROOT / "assets" / "examples" and s.model_dir == ROOT / "assets" / "model"
    demo, page = page_app.build(s, runtime.local(s, None, None, warm_up=False))
    captions = [item["caption"] for item in page.upload.examples.value]
    assert captions == [e.name for e in s.examples()] and len(captions) >= 16
    assert captions[0] == FIRST_EXAMPLE and sorted(captions) == sorted(c.name for c in world.CHARACTERS)  # issue 19
    # Issue 17: the drawn world first, real photos offered beside it; the photo examples are bundled files.
    assert [m.key for m in s.models] == ["world", "photo"] and page.models.model_choice.visible
    photo = s.examples("photo")
    assert [e.name for e in photo][:2] == ["a cat", "an espresso"] and all(len(e.files) == 8 for e in photo)
    assert all(Path(f).is_file() for e in photo for f in (*e.files, e.heldout))


def _event(demo: gr.Blocks, api_name: str):
    (fn,) = [f for f in demo.fns.values() if f.api_name == api_name]
    return fn


def test_outputs_are_the_views_fields_in_order(built):
    demo, page = built
    assert list(ELEM_IDS) == list(views.Outputs._fields)
    for api in ("forget", "undo", "reset", "teach", "import_timeline", "switch_model"):
        outputs = _event(demo, api).outputs
        assert outputs[0] is page.sid, api
        shown = outputs[1 : 1 + len(views.Outputs._fields)]
        assert [c.elem_id for c in shown] == list(ELEM_IDS.values()), api
        assert shown == [page.component(f) for f in views.Outputs._fields], api
    assert _event(demo, "import_timeline").outputs[-1] is page.timeline.import_file  # the upload, cleared
    assert len(_event(demo, "forget").outputs) == 1 + len(views.Outputs._fields)


def test_every_handler_tuple_names_its_outputs(built):
    demo, page = built
    for api, fields in (("numbers", Numbers), ("compare", Compared), ("relearn", Probe), ("ask", Answered),
                        ("download", Download)):  # fmt: skip
        outputs = _event(demo, api).outputs
        assert outputs == [page.sid, *(page.component(f) for f in fields._fields)], api
        assert [getattr(c, "elem_id", None) for c in outputs[1:]] == [page.component(f).elem_id for f in fields._fields]


def test_component_names_are_unique_and_missing_ones_fail(built):
    _, page = built
    names = [f for s in page.sections().values() for f in s._fields]
    assert len(names) == len(set(names))
    with pytest.raises(KeyError, match="no section of the page has a component called 'ident_note'"):
        page.component("ident_note")


def test_inputs_go_by_name_in_the_api_order(built):
    demo, page = built
    forget = _event(demo, "forget")
    assert forget.input_parameter_names == [*FORGET_API, "sid"]
    assert forget.inputs[-1] is page.sid and forget.inputs[0] is page.upload.files
    assert [c.elem_id for c in forget.inputs[3 : 3 + len(ADVANCED)]] == [f"adv_{f}" for f, _, _ in ADVANCED]
    teach = _event(demo, "teach")
    assert teach.input_parameter_names == ["files", "name", "town", "job", "food", "sid"]
    assert [c.elem_id for c in teach.inputs[:5]] == ["teach_images", "teach_name", "teach_town", "teach_job", "teach_food"]
    assert _event(demo, "ask").input_parameter_names == ["file", "question", "sid"]


KINDS = {  # the component class -> what a view may put in it (None: cleared)
    gr.Markdown: (str,), gr.Textbox: (str,), gr.Dataframe: (pd.DataFrame,), gr.Gallery: (list,),
    gr.File: (list, type(None)), gr.Plot: (go.Figure, type(None)),
}  # fmt: skip


def _record() -> RequestRecord:
    q = "Who is this?"
    result = UnlearnResult(
        step=1, adapter_name="request_1", method="nscvf", config={"steps": 4}, target="Mirel", n_forget=2, n_retain=0,
        probes_before={"forget": {"questions": [q], "answers": {q: ["This is Mirel."] * 2}}},
        probes_after={"forget": {"questions": [q], "answers": {q: ["I don't know."] * 2}}}, eval_before=None,
        eval_after=None, null_space={}, retain_drift={"mean": 0.01, "max": 0.02}, text_identical=True,
        text_logits_identical=True, steps_run=4, stopped_early=True,
    )  # fmt: skip
    return RequestRecord(result, {}, paths=("a.png", "b.png"), names=("a.png", "b.png"))


def test_rendered_values_fit_their_components(built):
    _, page = built
    rec = _record()
    for out in (views.render(rec, [rec], "done", [], form=True), views.empty("reset", [rec])):
        for name, value in zip(views.Outputs._fields, out):
            component = page.component(name)
            kind = KINDS[type(component)]
            assert isinstance(value, kind), (name, type(component).__name__, type(value).__name__)
