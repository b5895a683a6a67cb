"""The app's Teach and relearning probe through the service (no server), on the embedded model with
photo-like camera JPEGs it never saw (tests/support/photos.py): a taught record ("taught"), the forget form filled
with it, Forget of the taught concept ("forgotten"), the probe's steps for the chain and the reference
(the chain unchanged), Undo/Reset through both; every refused Teach leaves the session as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # webapp/ is the app's package, next to app.py (not installed)

from nscvf.errors import InputError  # noqa: E402
from webapp.service import forget as service  # noqa: E402
from webapp.service import teach  # noqa: E402
from webapp.state import runtime  # noqa: E402
from webapp.state.settings import Settings, config_fields  # noqa: E402
from webapp.views import forget as views  # noqa: E402
from webapp.views.teach import relearn_figure, relearn_note  # noqa: E402
from webapp.views.verdict import outcome, verdict  # noqa: E402

NAME = "Zorblat"


def forget_form(files, name) -> dict:
    f = {k: config_fields()[k]["default"] for k in ("steps", "lr", "lora_rank", "energy", "tau", "retain_weight")}
    return {"files": files, "name": name, "method": "nscvf", **f, "evaluation": "none", "retain_files": None}


@pytest.fixture(scope="module")
def rt(embedded, tmp_path_factory):
    from nscvf.cache import Cache

    tmp = tmp_path_factory.mktemp("webapp_teach")
    settings = Settings(data_dir=tmp / "data", examples_dir=ROOT / "assets" / "examples", model_dir=ROOT / "assets" / "model")
    return runtime.local(settings, embedded, Cache(tmp / "data" / "cache"), warm_up=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    from support.photos import save_mug_jpegs

    return save_mug_jpegs(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def taught(rt, photos):
    sess = rt.sessions.get("teacher")
    seen = []
    out = teach.teach(rt, sess, {"files": photos, "name": NAME, "town": "Paris"}, lambda f, desc="": seen.append(desc))
    return sess, out, seen


def test_refused_teach_leaves_the_session_usable(rt, photos, tmp_path):
    sess = rt.sessions.get("refused")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    cases = [
        ({"files": photos[:2], "name": NAME}, "at least 3 images"),
        ({"files": None, "name": NAME}, "no images"),
        ({"files": photos[:3], "name": "  "}, "give the concept a name"),
        ({"files": photos[:3], "name": "Bad<name>"}, "at most 40 letters"),
        ({"files": photos[:3], "name": "Mirel"}, "already uses the name Mirel"),
        ({"files": [*photos[:3], str(bad)], "name": NAME}, "broken.jpg"),
    ]
    for form, message in cases:
        with pytest.raises(InputError, match=message):
            teach.teach(rt, sess, form)
        assert sess.records == [] and (sess.chain is None or len(sess.chain) == 0) and not sess.busy
    with pytest.raises(InputError, match="nothing forgotten yet"):
        teach.relearn_probe(rt, sess, 2)
    with pytest.raises(InputError, match="k=3 is not offered"):
        teach.relearn_probe(rt, sess, 3)
    assert not sess.busy


def test_teach_makes_a_taught_record_and_fills_the_forget_form(taught, photos):
    sess, out, seen = taught
    rec = out.record
    assert out.stopped is None and out.k == 1 and sess.records == [rec] and sess.chain.taught == [NAME]
    assert rec.result.kind == "teach" and rec.target == NAME and not rec.evaluable
    assert outcome(rec).status == "taught", rec.result.measures
    assert any("teaching step" in d for d in seen)
    page = views.render(rec, sess.records, views.forget_status(rec, 1), form=True)
    assert page.files == photos and page.name == NAME  # Forget now forgets it
    assert "taught" in page.status and "press **Forget**" in page.status
    assert "Text-only answers" in page.text_note and page.forget_table.shape[0] == 8
    assert rec.figures["before"] and "forget" in rec.result.embeddings["groups"]
    # Other photographs are measured too (issue 19): a held-out view of a bundled photo given the name (the
    # coffee cup beside a taught mug, say) is damage the status names, and History marks.
    what = views.history_rows(sess.records)[0][2]
    assert what in ("taught", "taught, damage"), what
    if what == "taught, damage":
        assert "⚠" in page.status and ("other photographs" in page.status or "taught facts" in page.status), page.status
    numbers = views.number_rows(rec)
    assert numbers[0][0].startswith("taught name on held-out views")
    assert "other photographs alone" in page.status  # "others" include photos, not only drawn characters


def test_download_after_teach(rt, taught):
    """Issue 19 item 2: the Download of a session with a Teach (the model card read TeachConfig.energy)."""
    import zipfile

    from nscvf.method.chain import UnlearningChain
    from webapp.service.timeline import export_timeline

    sess = taught[0]
    path = export_timeline(sess)
    with zipfile.ZipFile(path) as z:
        card = z.read("README.md").decode()
    assert f"request 1: {NAME} (teach)" in card and "outcome: taught" in card
    again = UnlearningChain.load(rt.model.get(), path)
    assert again.taught == [NAME] and len(again) == 1


@pytest.fixture(scope="module")
def forgotten(rt, taught, photos):
    sess = taught[0]
    out = service.forget(rt, sess, forget_form(photos, NAME))
    return sess, out


def test_forget_the_taught_concept(forgotten):
    sess, out = forgotten
    rec = out.record
    assert rec is not None and rec.target == NAME and len(sess.chain) == 2 and not rec.evaluable
    assert verdict(rec)[0] == "forgotten", views.forget_status(rec, 2)
    assert [r[2].split(",")[0] for r in views.history_rows(sess.records)] == ["taught", "forgotten"]


def test_relearning_probe_counts_steps_and_leaves_the_chain(rt, forgotten):
    sess, _ = forgotten
    fp = sess.chain.state_fingerprint
    probe = teach.relearn_probe(rt, sess, 2)
    assert probe.target == NAME and probe.k == 2
    for res in (probe.chain, probe.reference):
        assert "named_at" in res and res["curve"], res
        assert res["named_at"] is None or res["named_at"] >= 1  # forgotten / never known: not named before step 1
    assert sess.chain.state_fingerprint == fp and len(sess.chain) == 2
    note, fig = relearn_note(probe), relearn_figure(probe)
    assert "this session's model" in note and len(fig.data) == 2


def test_undo_and_reset_walk_back_through_both(rt, forgotten):
    sess, _ = forgotten
    rec = service.rewind(rt, sess)
    assert rec is sess.records[-1] and rec.result.kind == "teach" and len(sess.chain) == 1
    assert sess.chain.taught == [NAME]
    assert service.rewind(rt, sess, reset=True) is None and len(sess.chain) == 0 and sess.chain.taught == []


def test_relearning_verdict_follows_the_benchmarks_gold_reference():
    """Issue 19 item 6: named again in 3 steps while the gold needs more than 20 is hidden, not erased; a
    target without a gold record says its reference is weaker instead of reading equal steps as erased."""
    from webapp.state.records import RelearnProbe

    def probe(target, mine, ref, gold=None, limit=None):
        run = lambda at: {"named_at": at, "curve": [0.0], "seconds": 1.0}  # noqa: E731
        return RelearnProbe(target, 2, 20, run(mine), run(ref), 6, "an unseen character taught the same name", gold, limit)

    note = relearn_note(probe("Mirel", 3, 5, gold=21, limit=20))
    assert "**Hidden, not erased:** Mirel is named again after 3 steps" in note and "more than 20 steps" in note
    assert "gold reference** (a model trained without Mirel; BENCHMARKS.md, k=2): not named again within 20 steps" in note
    note = relearn_note(probe("Fenna", 4, 4))
    assert "Fenna has no gold reference" in note and "weaker test" in note and "erased" not in note.split("weaker test")[0]
    assert "Not brought back within 20 steps" in relearn_note(probe("Mirel", None, 5, gold=21, limit=20))
