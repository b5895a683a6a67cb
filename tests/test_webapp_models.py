"""The app's model switch (issue 17) without a server: one session forgets on the drawn world, switches to the
photo model (loaded once, in the background, shared), forgets a bundled photo example there, and switches back
to find its world request as it left it; a switch during a request is refused and leaves both models' work
as it was; a model the page does not offer is refused with a message. On the photo model every feature of the
page's services runs: compare, the relearning probe, teach then forget, export and import (into a session on
the photo model; a session on the drawn world is told to switch)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # webapp/ is the app's package, next to app.py (not installed)

from nscvf.errors import InputError  # noqa: E402
from nscvf.source import PHOTO_MODEL_DIR  # noqa: E402
from webapp.service import compare, teach, timeline  # noqa: E402
from webapp.service import forget as service  # noqa: E402
from webapp.service.ask import ask, identify  # noqa: E402
from webapp.service.models import current_model, switch_model  # noqa: E402
from webapp.state import runtime  # noqa: E402
from webapp.state.sessions import Busy  # noqa: E402
from webapp.state.settings import Settings, model_choice  # noqa: E402

pytestmark = pytest.mark.skipif(not (PHOTO_MODEL_DIR / "config.json").exists(), reason="no photo model")


def _form(files, steps: int) -> dict:
    return {"files": files, "name": "", "method": "nscvf", "steps": steps, "lr": 2e-3, "lora_rank": 4, "energy": 0.05,
            "tau": 0.07, "retain_weight": 1.0, "evaluation": "none", "retain_files": None}  # fmt: skip


@pytest.fixture(scope="module")
def rt(embedded, tmp_path_factory):
    from nscvf.cache import Cache

    tmp = tmp_path_factory.mktemp("webapp_models")
    settings = Settings(data_dir=tmp / "data", examples_dir=ROOT / "assets" / "examples", model_dir=ROOT / "assets" / "model",
                        models=(model_choice("world"), model_choice("photo")),
                        time_limit=3600)  # a loaded machine's estimate must not refuse the 40-step forget  # fmt: skip
    return runtime.local(settings, embedded, Cache(tmp / "data" / "cache"), warm_up=False)


@pytest.mark.slow
def test_switch_to_photos_and_back_keeps_each_models_work(rt):
    sess = rt.sessions.get("switcher")
    world_example = rt.settings.examples("world")[0]
    first = service.forget(rt, sess, _form(list(world_example.files), 2))
    assert first.record is not None and first.record.target == world_example.name
    world_chain = sess.chain

    out = switch_model(rt, sess, "photo")
    assert out.changed and out.records == [] and current_model(rt, sess) == "photo"
    assert sess.chain is None and sess.records == []  # the photo model's base, nothing requested on it yet
    cat = rt.settings.examples("photo")[0]
    assert cat.name == "a cat"
    ident = identify(rt, list(cat.files), model="photo", wait_s=300)  # the photo model names its own example
    assert ident is not None and ident.inferred == "a cat", ident
    # Another session on the default model still works on the drawn world (the models are per session).
    other = rt.sessions.get("stays")
    answered = ask(rt, other, "Who is this?", world_example.heldout)
    assert answered.base == answered.current == f"This is {world_example.name}."

    photo = service.forget(rt, sess, _form(list(cat.files), 2))
    assert photo.record is not None and photo.record.target == "a cat"
    assert sess.chain is not world_chain and sess.chain.base_vlm is rt.holder("photo").vlm
    assert sess.chain.base_vlm is not rt.model.vlm and len(sess.chain) == 1

    back = switch_model(rt, sess, "world")
    assert back.changed and [r.target for r in back.records] == [world_example.name]
    assert sess.chain is world_chain and len(sess.chain) == 1
    again = switch_model(rt, sess, "photo")
    assert [r.target for r in again.records] == ["a cat"] and sess.chain.base_vlm is rt.holder("photo").vlm
    assert not switch_model(rt, sess, "photo").changed  # the same model: nothing changes


def test_a_switch_is_refused_while_a_request_runs_and_for_an_unknown_model(rt):
    sess = rt.sessions.get("busy")
    entered, release = threading.Event(), threading.Event()

    def hold():
        with sess.exclusive("request"):
            entered.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert entered.wait(10)
        with pytest.raises(Busy, match="already running"):
            switch_model(rt, sess, "photo")
        assert current_model(rt, sess) == "world"  # refused: still on the drawn world
    finally:
        release.set()
        t.join()
    with pytest.raises(InputError, match="does not offer the model 'nope'.*world, photo"):
        switch_model(rt, sess, "nope")
    assert current_model(rt, sess) == "world"
    assert switch_model(rt, sess, "photo").changed  # and after the refusals it switches


@pytest.fixture(scope="module")
def on_photos(rt):
    """A session on the photo model that forgot the cat example (2 steps: the plumbing, not the quality)."""
    sess = rt.sessions.get("photos")
    switch_model(rt, sess, "photo")
    cat = rt.settings.examples("photo")[0]
    out = service.forget(rt, sess, _form(list(cat.files), 2))
    assert out.record is not None and out.record.target == "a cat"
    return sess


@pytest.mark.slow
def test_every_feature_on_the_photo_model(rt, on_photos, tmp_path):
    sess = on_photos
    # Compare: the same request with another method, on the photo model's base.
    c = compare.compare_methods(rt, sess, "cvf")
    assert c is not None and c.target == "a cat" and c.second.method == "cvf" and c.world  # names concepts
    assert len(sess.chain) == 1  # the comparison leaves the chain as it was
    # The relearning probe on the forgotten cat, and on a reference (2 images, few steps).
    probe = teach.relearn_probe(rt, sess, 2)
    assert probe is not None and probe.target == "a cat" and probe.chain["curve"], probe
    # Teach a name on crops of a bundled photo, then forget it (forget after teach, in the app's path).
    from nscvf import photo_images
    from nscvf.method.photo_domain import bundled

    rocket = next(im for _, f, im in bundled() if f == "photo_rocket.jpg")
    files = []
    for i, im in enumerate(photo_images.crops(rocket, 8, seed=1)):
        files.append(str(tmp_path / f"rocket_{i}.jpg"))
        im.save(files[-1])
    taught = teach.teach(rt, sess, {"files": files, "name": "Zorblat"})
    assert taught.record is not None and taught.record.result.kind == "teach" and sess.chain.taught == ["Zorblat"]
    gone = service.forget(rt, sess, {**_form(files, 40), "name": "Zorblat"})
    assert gone.record is not None and gone.record.target == "Zorblat" and len(sess.chain) == 3
    # Export, and import into another session on the photo model: the same three requests.
    path = timeline.export_timeline(sess)
    other = rt.sessions.get("importer")
    switch_model(rt, other, "photo")
    imported = timeline.import_timeline(rt, other, str(path))
    assert [r.target for r in imported.records] == ["a cat", "Zorblat", "Zorblat"]
    assert other.chain.base_vlm is rt.holder("photo").vlm and other.chain.taught == ["Zorblat"]
    # A session on the drawn world refuses it and says which Model to switch to; nothing changes.
    world_sess = rt.sessions.get("on the world")
    with pytest.raises(InputError, match="another base model.*switch the Model .at the top. to it"):
        timeline.import_timeline(rt, world_sess, str(path))
    assert world_sess.chain is None or len(world_sess.chain) == 0
