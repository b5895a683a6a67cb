"""The app's model switch (issue 17) without a server: one session forgets on the drawn world, switches to the
photo model (loaded once, in the background, shared), forgets a bundled photo example there, and switches back
to find its world request as it left it; a switch during a request is refused and leaves both models' work
as it was; a model the page does not offer is refused with a message."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # webapp/ is the app's package, next to app.py (not installed)

from nscvf.errors import InputError  # noqa: E402
from nscvf.source import PHOTO_MODEL_DIR  # noqa: E402
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
                        models=(model_choice("world"), model_choice("photo")))  # fmt: skip
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
    assert ask(rt, other, "Who is this?", world_example.heldout).base == ask(rt, other, "Who is this?", world_example.heldout).current

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
