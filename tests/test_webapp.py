"""The app's service and views without a server: a tiny random LLaVA (a generic, non-world model, so the
form carries images to keep), a private runtime and cache per test module.

Forget -> record -> views; the cache restores an identical request in another session; undo/reset; two
sessions isolated; every session operation exclusive (a second one is refused while one runs) and Cancel
leaves the chain unchanged; records round-trip through their dict form; views are pure.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # webapp/ is the app's package, next to app.py (not installed)

from nscvf.errors import InputError  # noqa: E402
from webapp import records, runtime, service, views  # noqa: E402
from webapp.sessions import Busy, Registry  # noqa: E402
from webapp.settings import Settings, method_choices  # noqa: E402

STEPS = 3


def _images(tmp: Path, prefix: str, colours) -> list[str]:
    paths = []
    for i, c in enumerate(colours):
        p = tmp / f"{prefix}_{i}.png"
        Image.new("RGB", (40, 40), c).save(p)
        paths.append(str(p))
    return paths


def form(files, keep, steps=STEPS, **changes) -> dict:
    f = {"files": files, "name": "", "method": "nscvf", "steps": steps, "lr": 2e-3, "lora_rank": 4, "energy": 0.05,
         "tau": 0.07, "retain_weight": 1.0, "evaluation": "none", "retain_files": keep}  # fmt: skip
    return {**f, **changes}


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    from tiny_models import build_llava_clip

    from nscvf.cache import Cache
    from nscvf.models import wrap_model

    tmp = tmp_path_factory.mktemp("webapp")
    model, processor = build_llava_clip()
    settings = Settings(data_dir=tmp / "data", examples_dir=ROOT / "assets" / "examples", model_dir=ROOT / "assets" / "model")
    return runtime.local(settings, wrap_model(model, processor), Cache(tmp / "data" / "cache"), warm_up=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    return {
        "red": _images(d, "red", [(200, 30, 30), (180, 40, 20), (220, 60, 50)]),
        "green": _images(d, "green", [(30, 200, 30), (40, 170, 60)]),
        "keep": _images(d, "keep", [(30, 30, 200), (60, 40, 180), (20, 90, 210)]),
    }


@pytest.fixture(scope="module")
def first(rt, files):
    """Session A's first request (trained), shared by the tests below."""
    sess = rt.sessions.get("a")
    seen = []
    out = service.forget(rt, sess, form(files["red"], files["keep"], name="Red"), lambda f, desc="": seen.append(desc))
    return sess, out, seen


def test_form_errors_name_the_field():
    with pytest.raises(InputError, match="steps=0 is out of range"):
        service.make_config(form([], [], steps=0))
    with pytest.raises(InputError, match="steps is empty"):
        service.make_config(form([], [], steps=None))
    with pytest.raises(InputError, match="nope"):
        service.make_config(form([], [], method="nope"))
    with pytest.raises(InputError, match="no images: upload"):
        service.parse_forget(form([], []), 32)
    with pytest.raises(InputError, match="3 images is too many"):
        service.image_paths(["a.png", "b.png", "c.png"], 2)


def test_method_menu_is_the_catalogue():
    from nscvf.method.methods import all_methods

    assert [name for _, name in method_choices()] == list(all_methods())
    assert "nscvf_feature" in dict((v, k) for k, v in method_choices())


def test_forget_makes_a_record_and_the_views_show_it(first, files):
    sess, out, seen = first
    assert out.record is not None and not out.restored and out.stopped is None and out.k == 1
    assert len(sess.chain) == 1 and sess.records == [out.record] and sess.numbers_due
    assert any(d.startswith("step ") for d in seen) and "reading images" in seen
    rec = out.record
    assert rec.target == "Red" and rec.names == ("red_0.png", "red_1.png", "red_2.png") and not rec.evaluable
    assert rec.key is not None and rec.adapter_state.keys() == sess.chain.adapter_state().keys()

    o = views.render(rec, sess.records, views.forget_status(rec, out.k, out.seconds, False),
                     views.gallery(rec, out.request.images, out.request.paths))  # fmt: skip
    assert o.status.startswith("**Request 1 done**") and "forgot **Red** with nscvf" in o.status
    assert o.history.values.tolist()[0][:4] == [1, "Red", "nscvf", STEPS]
    assert len(o.forget_table) == 2 * 3 and list(o.forget_table.columns) == views.FORGET_HEADERS
    assert len(o.retain_table) == 3 * 2 and set(o.retain_table["change"]) <= {"same", "CHANGED"}
    assert o.retain_table["character"].iloc[0] == "kept image #1"
    assert len(o.gallery) == 3 and "→" in o.gallery[0][1]
    n_points = sum(len(t.x) for t in o.plot_before.data)
    assert n_points == sum(len(t.x) for t in o.plot_after.data) >= 6
    assert "**PCA**" in o.plot_note and "warming up" in o.plot_note  # the runtime never warms UMAP up here
    measures = dict(zip(o.numbers["measure"], o.numbers["after"]))
    assert measures["accuracies"] == "(set Evaluation to quick or full)"
    assert measures["steps run"] == str(STEPS) and "retain drift of visual features (mean / max)" in measures


def test_views_are_pure(first):
    _, out, _ = first
    rec = out.record
    a = views.render(rec, [rec], "s")
    b = views.render(rec, [rec], "s")
    for x, y in zip(a, b):
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y)
        elif hasattr(x, "to_json"):
            assert x.to_json() == y.to_json()
        else:
            assert x == y
    assert views.number_rows(rec) == views.number_rows(rec) and views.history_rows([rec]) == views.history_rows([rec])
    with pytest.raises(AttributeError):
        rec.evaluation = "full"  # frozen: the service replaces records


def test_record_round_trips_through_its_dict(first):
    rec = first[1].record.replace(evals=records.Evaluation("quick", {"summary": {"retain_acc": 1.0}}, {}, 1.5, 2.0))
    d = rec.to_dict()
    assert d["version"] == records.RECORD_VERSION and "names" not in d
    back = records.RequestRecord.from_dict(d)
    assert back.evals == rec.evals and back.evals.seconds == 3.5
    assert back.replace(adapter_state={}) == rec.replace(names=(), adapter_state={})
    assert all((back.adapter_state[k] == v).all() for k, v in rec.adapter_state.items())
    assert records.RequestRecord.from_dict({**d, "version": 1}) is None and records.RequestRecord.from_dict(None) is None


def test_identical_request_restored_in_another_session(rt, first, files):
    a, out_a, _ = first
    b = rt.sessions.get("b")
    out = service.forget(rt, b, form(files["red"], files["keep"], name="Red"))
    assert out.restored and out.k == 1 and "restored from the cache" in views.forget_status(out.record, 1, 0.1, True)
    assert b.chain is not a.chain and b.chain.state_fingerprint == a.chain.state_fingerprint
    assert out.record.result == out_a.record.result
    img = Image.open(files["red"][0])
    assert b.chain.vlm.generate(["Who is this?"], [img]) == a.chain.vlm.generate(["Who is this?"], [img])


def test_undo_reset_and_two_sessions_isolated(rt, first, files):
    a, _, _ = first
    c = rt.sessions.get("c")
    service.forget(rt, c, form(files["red"], files["keep"], name="Red"))  # restored: c is at A's request 1
    fp1 = a.chain.state_fingerprint
    out = service.forget(rt, a, form(files["green"], files["keep"], name="Green"))
    assert out.k == 2 and not out.restored and [r.target for r in a.records] == ["Red", "Green"]
    assert len(c.chain) == 1 and c.chain.state_fingerprint == fp1  # C untouched by A's second request

    rec = service.rewind(rt, a)
    assert rec is a.records[-1] and rec.target == "Red" and len(a.chain) == 1 and a.chain.state_fingerprint == fp1
    assert service.rewind(rt, a, reset=True) is None and len(a.chain) == 0 and a.records == []
    assert service.rewind(rt, a) is False  # nothing to undo
    assert len(c.chain) == 1 and c.chain.state_fingerprint == fp1
    answers = service.ask(rt, a, "What is this?")
    assert answers.k == 0 and answers.current == answers.base


def test_evaluate_skips_what_it_cannot_ask(rt, first):
    sess = rt.sessions.get("d")
    assert service.evaluate(rt, sess, "quick").record is None  # nothing to evaluate yet
    b = rt.sessions.get("b")
    out = service.evaluate(rt, b, "quick")  # a generic model: no questions about its target
    assert out.record.evals is None and not b.numbers_due
    assert views.number_rows(out.record)[0][1] == "not available"


def test_session_operations_are_exclusive_and_cancel_leaves_the_chain(rt, files):
    sess = rt.sessions.get("e")
    stepping = threading.Event()
    res = {}

    def progress(fraction, desc=""):
        if desc.startswith("step "):
            stepping.set()

    def run():
        res["out"] = service.forget(rt, sess, form(files["red"], files["keep"], steps=2000, name="Red"), progress)

    t = threading.Thread(target=run)
    t.start()
    assert stepping.wait(120), "never reached the optimisation steps"
    with pytest.raises(Busy, match="already running"):
        service.ask(rt, sess, "Who is this?")
    with pytest.raises(Busy):
        service.rewind(rt, sess)
    with pytest.raises(Busy):
        service.evaluate(rt, sess, "quick")
    sess.queued()
    with pytest.raises(Busy):
        service.forget(rt, sess, form(files["green"], files["keep"]))
    assert sess.cancel() == "running"
    t.join(60)
    out = res["out"]
    assert out.stopped == "cancelled" and out.record is None and len(sess.chain) == 0 and sess.records == []
    assert "Request 1 cancelled" in views.stopped_status(out.stopped, out.k, out.seconds, 600)
    assert service.ask(rt, sess, "Who is this?").k == 0  # the session works again


def test_cancel_while_queued_drops_the_request(rt, files):
    sess = rt.sessions.get("f")
    sess.queued()
    assert sess.cancel() == "queued"
    out = service.forget(rt, sess, form(files["red"], files["keep"]))
    assert out.stopped == "queued" and sess.chain is None


def test_freeing_a_session_frees_its_adapters(rt, files):
    sess = rt.sessions.get("g")
    service.forget(rt, sess, form(files["red"], files["keep"], name="Red"))
    chain = sess.chain
    shared = chain.shared
    mine = set(shared.adapter_names()) - {a for s in ("a", "b", "c") for a in _adapters(rt.sessions.peek(s))}
    assert mine
    rt.sessions.free("g")
    assert sess.chain is None and not (mine & shared.adapter_names()) and "g" not in rt.sessions
    with pytest.raises(Busy, match="ended"):
        service.ask(rt, sess, "Who is this?")


def _adapters(sess) -> set:
    return set(sess.chain.vlm.adapters) if sess is not None and sess.chain is not None else set()


def test_registry_never_evicts_a_busy_session():
    reg = Registry(capacity=1)
    busy = reg.get("x")
    with busy.exclusive():
        reg.get("y")
        assert "x" in reg and "y" in reg  # over capacity rather than drop a running job
    reg.get("z")
    assert "x" not in reg and len(reg) <= 2
