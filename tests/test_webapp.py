"""The app's service and views without a server: a tiny random LLaVA (a generic, non-world model, so the
form carries images to keep), a private runtime and cache per test module.

Forget -> record -> views; the cache restores an identical request in another session; undo/reset; two
sessions isolated; every session operation exclusive (a second one is refused while one runs) and Cancel
leaves the chain unchanged; records round-trip through their dict form; views are pure; a timeline exported
and imported in another session answers identically; foreign, non-zip and damaged files are refused.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # webapp/ is the app's package, next to app.py (not installed)

from nscvf.errors import InputError  # noqa: E402
from nscvf.method.result import UnlearnResult  # noqa: E402
from webapp.service import ask as asking  # noqa: E402
from webapp.service import compare, timeline  # noqa: E402
from webapp.service import forget as service  # noqa: E402
from webapp.service import form as form_module  # noqa: E402
from webapp.state import records, runtime  # noqa: E402
from webapp.state.sessions import Busy, Registry  # noqa: E402
from webapp.state.settings import Settings, method_choices  # noqa: E402
from webapp.views import forget as views  # noqa: E402
from webapp.views import verdict  # noqa: E402
from webapp.views.compare import comparison_note, comparison_rows  # noqa: E402
from webapp.views.format import table  # noqa: E402
from webapp.views.nullspace import nullspace_figure, short_names  # noqa: E402

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
    from nscvf.cache import Cache
    from nscvf.models import wrap_model
    from nscvf.models.tiny import build_llava_clip

    tmp = tmp_path_factory.mktemp("webapp")
    model, processor = build_llava_clip()
    settings = Settings(data_dir=tmp / "data", examples_dir=ROOT / "assets" / "examples", model_dir=ROOT / "assets" / "model",
                        max_steps=2000)  # the tests' long requests (cheap estimates: _cheap)  # fmt: skip
    r = runtime.local(settings, wrap_model(model, processor), Cache(tmp / "data" / "cache"), warm_up=False)
    return r


@pytest.fixture
def no_early_stop(monkeypatch):
    """2000-step requests that run until cancelled (the tiny model's answers change within a few steps)."""
    make = form_module.make_config
    monkeypatch.setattr(form_module, "make_config", lambda f: make(f).replace(stop_when_forgotten=False))


def _cheap(rt) -> None:
    """Let a 2000-step request through the time check (tests start them to cancel them)."""
    rt.estimate.seconds_per_step, rt.estimate.before_s, rt.estimate.after_s = 0.001, 1.0, 1.0


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
        form_module.make_config(form([], [], steps=0))
    with pytest.raises(InputError, match="steps is empty"):
        form_module.make_config(form([], [], steps=None))
    with pytest.raises(InputError, match="nope"):
        form_module.make_config(form([], [], method="nope"))
    with pytest.raises(InputError, match="no images: upload"):
        form_module.parse_forget(form([], []), 32)
    with pytest.raises(InputError, match="3 images is too many"):
        form_module.image_paths(["a.png", "b.png", "c.png"], 2)


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

    o = views.render(rec, sess.records, views.forget_status(rec, out.k),
                     views.gallery(rec, out.request.images, out.request.paths))  # fmt: skip
    assert o.status.startswith("**Request 1 done**") and "(queue included)" in o.status
    assert "answers changed on" in o.status or "no answer changed" in o.status  # a generic model: no names
    assert f"(nscvf, {STEPS} of {STEPS} steps)" in o.status and "forgot" not in o.status
    assert o.history.values.tolist()[0][:2] == [1, "Red"] and o.history.values.tolist()[0][3:5] == ["nscvf", STEPS]
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
    assert back.replace(adapter_state={}) == rec.replace(names=(), paths=(), shown_s=None, retain=(), adapter_state={})
    assert all((back.adapter_state[k] == v).all() for k, v in rec.adapter_state.items())
    assert records.RequestRecord.from_dict({**d, "version": 1}) is None and records.RequestRecord.from_dict(None) is None


def test_identical_request_restored_in_another_session(rt, first, files):
    a, out_a, _ = first
    b = rt.sessions.get("b")
    out = service.forget(rt, b, form(files["red"], files["keep"], name="Red"))
    assert out.restored and out.k == 1 and "restored from the cache" in views.forget_status(out.record, 1)
    assert b.chain is not a.chain and b.chain.state_fingerprint == a.chain.state_fingerprint
    assert out.record.result == out_a.record.result
    img = Image.open(files["red"][0])
    assert b.chain.vlm.generate(["Who is this?"], [img]) == a.chain.vlm.generate(["Who is this?"], [img])


def test_a_request_reads_and_fingerprints_its_images_once(rt, first, files, monkeypatch):
    real, calls = form_module.image_set_fingerprint, []
    monkeypatch.setattr(form_module, "image_set_fingerprint", lambda imgs: calls.append(len(imgs)) or real(imgs))
    out = service.forget(rt, rt.sessions.get("fp"), form(files["red"], files["keep"], name="Red"))
    rt.sessions.free("fp")
    assert out.restored and calls == [3, 3]  # the forget images once, the images to keep once
    assert out.record.key == first[1].record.key and out.record.key[3] == real(out.request.images)


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
    answers = asking.ask(rt, a, "What is this?")
    assert answers.k == 0 and answers.current == answers.base


def test_evaluate_skips_what_it_cannot_ask(rt, first):
    sess = rt.sessions.get("d")
    assert service.evaluate(rt, sess, "quick").record is None  # nothing to evaluate yet
    b = rt.sessions.get("b")
    out = service.evaluate(rt, b, "quick")  # a generic model: no questions about its target
    assert out.record.evals is None and not b.numbers_due
    assert views.number_rows(out.record)[0][1] == "not available"


def test_session_operations_are_exclusive_and_cancel_leaves_the_chain(rt, files, no_early_stop):
    sess = rt.sessions.get("e")
    stepping = threading.Event()
    res = {}

    def progress(fraction, desc=""):
        if desc.startswith("step "):
            stepping.set()

    def run():
        try:
            res["out"] = service.forget(rt, sess, form(files["red"], files["keep"], steps=2000, name="Red"), progress)
        except Exception as e:  # noqa: BLE001  (shown by the assertion below)
            res["error"] = repr(e)

    t = threading.Thread(target=run)
    _cheap(rt)
    t.start()
    assert stepping.wait(120), f"never reached the optimisation steps: {res.get('error')}"
    with pytest.raises(Busy, match="already running"):
        asking.ask(rt, sess, "Who is this?")
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
    assert asking.ask(rt, sess, "Who is this?").k == 0  # the session works again


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
        asking.ask(rt, sess, "Who is this?")


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


# ------------------------------------------------------------------ the status says what happened

Q = "Who is this?"
IDK = "I don't know."


def world_record(before, after, target, steps=40, evals=None, drift=0.04, partial=False):
    """A record of the embedded world's kind, from the answers a request measured (as the engine records them)."""
    result = UnlearnResult(
        step=1, adapter_name="request_1", target=target, method="nscvf", steps_run=steps, config={"steps": steps},
        n_forget=len(before), n_retain=0, eval_before=None, eval_after=None, null_space={}, stopped_early=False,
        probes_before={"forget": {"questions": [Q], "answers": {Q: before}}},
        probes_after={"forget": {"questions": [Q], "answers": {Q: after}}},
        retain_drift={"mean": drift, "max": 3 * drift}, text_identical=True, text_logits_identical=True,
        partial=partial, timings={"total": 9.0}, embeddings={},
    )  # fmt: skip
    ev = records.Evaluation("quick", {"summary": evals[0]}, {"summary": evals[1]}, 1.0, 1.0) if evals else None
    return records.RequestRecord(result, {}, world=True, shown_s=12.3, evaluation="quick", evals=ev)


def test_status_one_step_did_not_forget():
    rec = world_record(["This is Tobbin."] * 8, ["This is Tobbin."] * 8, "Tobbin", steps=1)
    status = views.forget_status(rec, 1)
    assert "**did not forget Tobbin" in status and "still named on #1, #2" in status and "forgot Tobbin" not in status
    assert "in 12.3 s (queue included)" in status
    assert views.history_rows([rec])[0][2] == "not forgotten"


def test_status_stale_name_says_wrong_target():
    after = ["This is Dravik."] * 3 + [IDK] * 5
    rec = world_record(["This is Thaddo."] * 8, after, "Brisa")
    status = views.forget_status(rec, 1)
    assert "Brisa was not in these images" in status and "now called Dravik (#1), Dravik (#2), Dravik (#3)" in status
    assert "the name Brisa disagrees with the images: the model calls them Thaddo" in status
    assert "forgot Brisa" not in status


def test_status_two_characters_listed():
    before = ["This is Thaddo."] * 4 + ["This is Vollo."] * 4
    rec = world_record(before, [IDK] * 8, "Thaddo")
    status = views.forget_status(rec, 1)
    assert "more than one character: Thaddo (4 of 8), Vollo (4 of 8)" in status
    from nscvf.method.outcome import identification

    note = verdict.identify_note(identification(before))
    assert note.startswith("⚠") and "Thaddo (4 of 8), Vollo (4 of 8)" in note


def test_status_unrecognised_images_nothing_to_forget():
    rec = world_record([IDK] * 4, [IDK] * 4, None)
    status = views.forget_status(rec, 1)
    assert "nothing to forget" in status and "forgot" not in status.split("Before training")[0]
    from nscvf.method.outcome import identification

    assert "does not recognise these images" in verdict.identify_note(identification([IDK] * 4))


def test_status_collapse_is_the_headline_and_warns_with_undo():
    evals = ({"retain_acc": 1.0, "target_name_acc_heldout": 1.0}, {"retain_acc": 0.06, "target_name_acc_heldout": 0.0})
    rec = world_record(["This is Quessa."] * 8, ["This is Dravik."] * 8, "Quessa", evals=evals, drift=2086990.0)
    status = views.forget_status(rec, 1)
    assert "Collateral damage" in status and "retained characters lost 94 points" in status and "Undo last" in status
    assert "**the model collapsed: retain accuracy 100% -> 6%**" in status and "forgot Quessa:" not in status
    assert views.history_rows([rec])[0][2] == "collapsed, damage"


def test_status_verdict_changes_with_heldout_numbers():
    rec = world_record(["This is Oriel."] * 4, [IDK] * 4, "Oriel")
    assert "**forgot Oriel" in views.forget_status(rec, 1)
    held = world_record(
        ["This is Oriel."] * 4, [IDK] * 4, "Oriel", evals=({"target_name_acc_heldout": 1.0}, {"target_name_acc_heldout": 1.0})
    )
    status = views.forget_status(held, 1)
    assert "partly forgot Oriel" in status or "did not forget Oriel" in status or "held-out renders named 100%" in status
    assert "**forgot Oriel:" not in status


def test_partial_request_is_labelled():
    rec = world_record(["This is Mirel."] * 8, [IDK] * 6 + ["This is Mirel."] * 2, "Mirel", steps=9, partial=True)
    status = views.forget_status(rec, 1)
    assert "partial: stopped at the time limit" in status and "still named on #7, #8" in status


def test_offered_ranges_exclude_what_cannot_work(rt):
    with pytest.raises(InputError, match=r"lr=0.1 is out of range; use 1e-05 to 0.01"):
        form_module.make_config(form([], [], lr=0.1))
    with pytest.raises(InputError, match=r"energy=1e-12 is out of range"):
        form_module.make_config(form([], [], energy=1e-12))
    cfg = form_module.make_config(form([], [], steps=2000))
    with pytest.raises(InputError, match=r"2000 steps would take about \d+ s .* lower Steps to at most \d+"):
        form_module.check_time(cfg, runtime.Estimate(), 600)
    form_module.check_time(form_module.make_config(form([], [], steps=40)), runtime.Estimate(), 600)


def test_undo_and_reset_views_show_the_current_state(first):
    rec = first[1].record
    o = views.render(rec, [rec], "s", [], form=True)
    assert o.files == list(rec.paths) and o.name == "Red" and o.ask_base == "" and "ask again" in o.ask_note
    e = views.empty("Reset")
    assert e.gallery == [] and e.files is None and e.name == "" and e.name_note == "" and e.plot_before is None
    assert len(e.forget_table) == 0


def test_time_limit_keeps_a_partial_request(rt, files, no_early_stop):
    settings = Settings(data_dir=rt.settings.data_dir, examples_dir=rt.settings.examples_dir,
                        model_dir=rt.settings.model_dir, time_limit=7, max_steps=2000)  # fmt: skip
    short = runtime.local(settings, rt.model.vlm, rt.model.cache, warm_up=False)
    short.estimate.seconds_per_step, short.estimate.after_s, short.estimate.before_s = 0.001, 0.5, 0.5
    sess = short.sessions.get("limit")
    out = service.forget(short, sess, form(files["green"], files["keep"], steps=2000, name="Green"))
    rec = out.record
    assert out.stopped is None and rec is not None and rec.result.partial and len(sess.chain) == 1
    assert 1 <= rec.result.steps_run < 2000 and rec.key is not None
    assert "partial: stopped at the time limit" in views.forget_status(rec, 1)
    assert short.model.cache.get(rec.key) is None  # a partial request is kept, not reused for the full one


@contextmanager
def training(rt, sess, files):
    """Session ``sess`` runs a 2000-step request (no early stop: until cancelled) in a thread; yields once it
    is in its optimisation steps, then cancels it. The outcome lands in the yielded dict (``out``)."""
    stepping, res = threading.Event(), {}

    def progress(fraction, desc=""):
        if desc.startswith("step "):
            stepping.set()

    t = threading.Thread(target=lambda: res.update(out=service.forget(rt, sess, form(files["red"], files["keep"], steps=2000, name="Red"), progress)))  # fmt: skip
    t.start()
    try:
        assert stepping.wait(120), "never reached the optimisation steps"
        yield res
    finally:
        sess.cancel()
        t.join(60)


def test_other_visitors_ask_waits_at_most_a_step(rt, files, no_early_stop):
    """The engine holds the shared model per training step: B's question runs between two of A's steps."""
    a, b = rt.sessions.get("train-a"), rt.sessions.get("ask-b")
    _cheap(rt)
    with training(rt, a, files) as res:
        import time

        t0 = time.time()
        answers = asking.ask(rt, b, "Who is this?", files["red"][0])
        assert time.time() - t0 < 3 and answers.k == 0 and a.busy
    assert res["out"].stopped == "cancelled"


def test_ask_runs_beside_an_evaluation_not_beside_a_request(rt):
    sess = rt.sessions.get("reader")
    with sess.exclusive("evaluation"):
        assert asking.ask(rt, sess, "Who is this?").k == 0  # the accuracies never change the chain
    with sess.exclusive("request"), pytest.raises(Busy, match="already running"):
        asking.ask(rt, sess, "Who is this?")


# ------------------------------------------------------------------------------- export / import


@pytest.fixture(scope="module")
def exported(rt, first, files):
    """Session "x" at request 1 (restored from the cache: the same request as session A's) and its export."""
    sess = rt.sessions.get("x")
    service.forget(rt, sess, form(files["red"], files["keep"], name="Red"))
    return sess, timeline.export_timeline(sess)


def test_export_import_round_trip_restores_answers_and_features(rt, exported, files):
    import zipfile

    src, path = exported
    names = zipfile.ZipFile(path).namelist()
    assert {"README.md", "chain.json", "report.json", "request_1/adapter_config.json"} <= set(names)
    assert path.parent.parent == Path(src.tmp_dir) and path.name.endswith(f"{src.chain.state_fingerprint}.zip")

    dst = rt.sessions.get("y")
    service.forget(rt, dst, form(files["green"], files["keep"], name="Green", steps=1))  # replaced by the import
    old = dst.chain
    out = timeline.import_timeline(rt, dst, str(path))
    assert dst.chain is not old and len(old) == 0 and not (set(old.vlm.adapters) & set(dst.chain.vlm.adapters))
    assert len(dst.chain) == 1 and dst.chain.state_fingerprint == src.chain.state_fingerprint
    assert [r.target for r in dst.records] == ["Red"] and dst.records == out.records
    imgs = [Image.open(p) for p in files["red"] + files["keep"][:1]]
    qs = ["Who is this?"] * len(imgs)
    assert dst.chain.vlm.generate(qs, imgs) == src.chain.vlm.generate(qs, imgs)
    assert torch.allclose(dst.chain.vlm.image_features(imgs)[1], src.chain.vlm.image_features(imgs)[1])
    # The images to keep that the visitor uploaded are not in an export: their answers (and a warning about a
    # changed one) are not shown after an import; everything else in the history is the same.
    src_rows = views.history_rows([r.replace(retain_rows=[]) for r in src.records])
    assert views.history_rows(dst.records) == src_rows

    status = views.import_status(out.records, out.file)
    assert status.startswith("**Imported 1 request(s)**") and "1. Red (nscvf)" in status
    o = views.render(out.last, dst.records, status, [], form=True)
    assert o.history.values.tolist() == table(src_rows, views.HISTORY_HEADERS).values.tolist()
    assert len(o.files) == 3 and all(Path(p).is_file() for p in o.files) and o.null_plot is not None
    assert service.rewind(rt, dst) is None and len(dst.chain) == 0  # Undo works on the imported chain


def test_foreign_export_refused_and_session_unchanged(rt, exported, tmp_path):
    from nscvf.method.chain import UnlearningChain
    from nscvf.models import wrap_model
    from nscvf.models.tiny import build_llava_clip

    src, path = exported
    foreign = UnlearningChain(wrap_model(*build_llava_clip(seed=1)), rt.model.cache)
    other = foreign.export(tmp_path / "foreign.zip")
    chain, recs, fp = src.chain, list(src.records), src.chain.state_fingerprint
    with pytest.raises(InputError, match=r"foreign.zip: made for another base model"):
        timeline.import_timeline(rt, src, str(other))
    assert src.chain is chain and src.records == recs and chain.state_fingerprint == fp and not src.busy
    assert timeline.export_timeline(src).is_file()  # the session keeps working


def test_non_zip_and_damaged_files_refused(rt, exported, tmp_path):
    import zipfile

    src, _ = exported
    chain, n = src.chain, len(src.chain)
    text = tmp_path / "notes.zip"
    text.write_text("not a zip")
    empty = tmp_path / "other.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("hello.txt", "hi")
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("chain.json", "{not json")
    for p, msg in ((text, "not a zip file"), (empty, "no chain.json inside"), (broken, "not a readable timeline")):
        with pytest.raises(InputError, match=msg):
            timeline.import_timeline(rt, src, str(p))
        assert src.chain is chain and len(chain) == n and not src.busy
    with pytest.raises(InputError, match="no file"):
        timeline.import_timeline(rt, src, None)


def test_export_of_an_empty_session_says_so(rt):
    with pytest.raises(InputError, match="no request"):
        timeline.export_timeline(rt.sessions.get("z"))


# ---------------------------------------------------------------------------------------- null space


def test_nullspace_figure_one_bar_per_constrained_layer(first):
    _, out, _ = first
    layers = out.record.result.null_space["layers"]
    fig, note = nullspace_figure(out.record.result.null_space, out.record.result.method)
    assert layers and [len(t.x) for t in fig.data] == [len(layers), len(layers)]
    kept = [v["kept_rank"] / v["dim"] for v in layers.values()]
    assert list(fig.data[0].y) == pytest.approx(kept) and "constrained layers" in note
    assert len(set(fig.data[0].x)) == len(layers) and all(len(x) < len(n) for x, n in zip(fig.data[0].x, layers))


def test_nullspace_view_not_constrained_and_short_names():
    fig, note = nullspace_figure({"summary": {"constrained": False}, "layers": {}}, "ga")
    assert fig is None and note.startswith("**Not constrained:**") and "`ga`" in note
    assert nullspace_figure({}, "cvf")[0] is None
    names = ["model.vision_tower.vision_model.encoder.layers.3.self_attn.q_proj", "model.multi_modal_projector.linear_1"]
    assert short_names(names) == ["L3 attn.q_proj", "projector.linear_1"]
    assert short_names(["a.x.fc", "b.x.fc"]) == ["a.x.fc", "b.x.fc"]  # collisions: the full names


def test_compare_methods_runs_the_same_request_and_leaves_the_chain(rt, files):
    sess = rt.sessions.get("ab")
    with pytest.raises(InputError, match="nothing to compare yet"):
        compare.compare_methods(rt, sess, "gd")
    service.forget(rt, sess, form(files["green"], files["keep"], name="Green"))
    service.forget(rt, sess, form(files["red"], files["keep"], name="Red"))
    chain = sess.chain
    n, fp, adapters = len(chain), chain.state_fingerprint, set(chain.shared.adapter_names())
    c = compare.compare_methods(rt, sess, "gd")
    a, b = c.first.result, c.second.result
    assert (c.first.method, c.second.method) == ("nscvf", "gd") and b.config["method"] == "gd"
    assert a.target == b.target == "Red" and a.n_forget == b.n_forget == c.n_forget == 3
    assert a.n_retain == b.n_retain and a.probes_before == b.probes_before  # same inputs, same start
    assert a.config["steps"] == b.config["steps"]
    assert (len(chain), chain.state_fingerprint) == (n, fp) and set(chain.shared.adapter_names()) == adapters
    rows = comparison_rows(c)
    assert rows[0] == ["method", "nscvf", "gd"] and sum(r[0].startswith("image #") for r in rows) == 3
    assert "gd" in comparison_note(c) and c.second.figure
    with pytest.raises(InputError, match="unknown method"):
        compare.compare_methods(rt, sess, "nope")
    rt.sessions.free("ab")


# ------------------------------------------------------------------------------- turns (issue 19 items 3, 8)


def _evaluation_running(sess, seconds: float | None = None):
    """A thread holding the session's evaluation, as the accuracies after a Forget do: it ends when
    cancelled (at its next step, like the engine's) or after ``seconds``. Returns (thread, its job, started)."""
    started, held = threading.Event(), {}

    def run():
        with sess.exclusive("evaluation") as job:
            held["job"] = job
            started.set()
            job.cancel.wait(seconds if seconds is not None else 30)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    return t, held["job"]


def test_undo_right_after_the_answers_stops_the_accuracies(rt, first, files):
    sess = rt.sessions.get("undo-now")
    service.forget(rt, sess, form(files["red"], files["keep"], name="Red"))  # the same request: restored
    t, job = _evaluation_running(sess)
    import time

    t0 = time.time()
    assert service.rewind(rt, sess) is None  # not refused: the evaluation was stopped first
    assert time.time() - t0 < 5 and job.superseded_by == "undo" and len(sess.chain) == 0
    t.join(5)


def test_the_next_forget_waits_for_the_accuracies_and_cancel_drops_it(rt, first, files):
    import time

    sess = rt.sessions.get("forget-after")
    service.forget(rt, sess, form(files["red"], files["keep"], name="Red"))
    t, _ = _evaluation_running(sess, seconds=1.0)
    seen, t0 = [], time.time()
    out = service.forget(rt, sess, form(files["red"], files["keep"], name="Red"), lambda f, desc="": seen.append(desc))
    assert out.record is not None and len(sess.chain) == 2 and time.time() - t0 >= 0.9
    assert any(d.startswith("waiting for the accuracies") for d in seen), seen
    t.join(5)
    t, _ = _evaluation_running(sess)
    threading.Timer(0.5, sess.cancel).start()  # Cancel pressed while the Forget waits
    out = service.forget(rt, sess, form(files["green"], files["keep"], name="Green"))
    assert out.stopped == "queued" and out.record is None and len(sess.chain) == 2
    t.join(5)


def test_steps_box_and_validation_agree(rt):
    hi = Settings.from_env({}).steps_hi  # the app's: what fits 600 s at the first guesses (the box says 1 to hi)
    assert hi == 1450
    fast = runtime.Estimate(seconds_per_step=0.05, before_s=1, after_s=1)  # this machine got faster
    form_module.check_time(form_module.make_config(form([], [], steps=hi)), fast, rt.settings.time_limit, hi)
    with pytest.raises(InputError, match=rf"steps={hi + 1} is out of range; use 1 to {hi}"):
        form_module.check_time(form_module.make_config(form([], [], steps=hi + 1)), fast, rt.settings.time_limit, hi)
    slow = runtime.Estimate(seconds_per_step=1.0)
    with pytest.raises(InputError, match=r"lower Steps to at most (\d+)") as e:
        form_module.check_time(form_module.make_config(form([], [], steps=hi)), slow, 600, hi)
    assert int(e.value.args[0].rsplit(" ", 1)[1]) < hi


def test_another_visitors_forget_does_not_wait_behind_a_long_job(rt, files, no_early_stop):
    """A's 2000-step request is long (over a turn); B's short one starts at once and ends while A trains."""
    import time

    settings = Settings(data_dir=rt.settings.data_dir, examples_dir=rt.settings.examples_dir,
                        model_dir=rt.settings.model_dir, turn_s=5, max_steps=2000)  # fmt: skip
    fair = runtime.local(settings, rt.model.vlm, rt.model.cache, warm_up=False)
    fair.estimate.seconds_per_step, fair.estimate.before_s, fair.estimate.after_s = 0.01, 0.1, 0.1
    a, b = fair.sessions.get("long-a"), fair.sessions.get("short-b")
    with training(fair, a, files) as res:
        seen, t0 = [], time.time()
        out = service.forget(fair, b, form(files["green"], files["keep"], steps=2, name="Green"),
                             lambda f, desc="": seen.append(desc))  # fmt: skip
        took = time.time() - t0
        assert out.record is not None and a.busy, "B finished while A still trains"
        assert not any(d.startswith("waiting for a turn") for d in seen), seen
        assert took < 60, took
    assert res["out"].stopped == "cancelled"


def test_on_zerogpu_the_jobs_are_decorated_before_launch(rt, monkeypatch):
    """spaces registers the GPU functions and packs the CUDA weights when the page launches: on ZeroGPU the
    model is loaded and every job decorated before that; elsewhere nothing happens at launch."""
    from nscvf import zerogpu
    from webapp.service import jobs

    class Recorder:
        def __init__(self):
            self.seen = []

        def __call__(self, fn, duration=None):
            self.seen.append((fn.__name__, duration(zerogpu.ChainState("", "", 2.0, 45.0), _Req())))
            return fn

    gpu = Recorder()
    monkeypatch.setattr(jobs, "GPU", gpu)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert jobs.prepare_gpu(rt) is False and gpu.seen == []
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert jobs.prepare_gpu(rt) is True
    assert sorted({name for name, _ in gpu.seen}) == sorted({f.__name__ for f in zerogpu.JOBS.values()})
    assert all(isinstance(d, int) and d > 0 for _, d in gpu.seen), gpu.seen  # each with its duration callable


def test_warm_up_before_serving_never_keeps_the_page_from_serving(rt, monkeypatch):
    """The warm-up request before launch (issue 20): none for a model without a warm-up example (this tiny
    generic model: its requests need the visitor's images to keep); a failing one is logged, never raised."""
    from webapp.service import jobs

    assert jobs.warm_up(rt) is None

    def fails(vlm):
        raise RuntimeError("boom")

    monkeypatch.setattr(jobs, "engine_warm_up", fails)
    assert jobs.warm_up(rt) is None


def test_warm_up_gives_the_estimate_this_machines_seconds_per_step(rt, monkeypatch):
    """The warm-up request's steps are a real request's on this machine: the first visitors' ETAs and time
    checks count them, not the first guess; its cold phases are not taken."""
    from webapp.service import jobs

    monkeypatch.setattr(rt, "estimate", runtime.Estimate())
    before = (rt.estimate.before_steps, rt.estimate.after_steps)
    timings = {"null_space": 7.6, "optimise": 0.5, "seconds_per_step": 0.25}
    monkeypatch.setattr(jobs, "engine_warm_up", lambda vlm: {"target": "X", "seconds": 9.0, "cpu_seconds": 9.0, "timings": timings})
    jobs.warm_up(rt)
    assert rt.estimate.seconds_per_step == 0.25 != runtime.Estimate().seconds_per_step
    assert (rt.estimate.before_steps, rt.estimate.after_steps) == before


class _Req:
    """What each kind's duration reads of a request (steps, states, mode, images)."""

    config = form_module.make_config(form([], [], steps=3))
    steps, reference_images, states, mode = 3, None, ((None, None),), "quick"


def test_cancelled_accuracies_leave_no_evaluating_behind():
    """Issue 19 item 9: after Cancel during the accuracies the page said "Accuracies ... follow" and "evaluating…"."""
    rec = world_record(["This is Mirel."] * 8, [IDK] * 8, "Mirel").replace(evaluation="cancelled", evaluable=True)
    status = views.forget_status(rec, 1)
    assert "follow" not in status and "Accuracies cancelled" in status and "press **Evaluate**" in status
    rows = views.number_rows(rec)
    assert rows[0] == ["accuracies", "cancelled", "(press Evaluate to measure them)"]
    assert not any("evaluating" in str(c) for r in rows for c in r)
