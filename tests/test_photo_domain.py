"""PhotoDomain (issue 17): deterministic image sets, concept targets, and a forget request through the engine
on a tiny random-weight photo model (conv LoRA + null space end to end)."""

import numpy as np
import pytest

from nscvf.errors import InputError
from nscvf.method.domain import domain_for
from nscvf.method.photo_domain import MARKER, PhotoDomain, bundled, named_concept
from nscvf.source import PHOTO_MODEL_DIR


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_image_sets_are_deterministic_and_leave_the_target_out():
    d = PhotoDomain(region_size=6, protect_views=1)
    assert _same(d.region_images(), d.region_images())
    assert _same(d.protect_images("a cat"), PhotoDomain(region_size=6, protect_views=1).protect_images("a cat"))
    assert _same(d.keep_images("a cat", 5, seed=3), d.keep_images("a cat", 5, seed=3))
    cats = [b for b in bundled() if b[0] == "a cat"]
    assert cats  # the bundled CC0 photo of a cat
    kept = d.retain_images(["a cat"])
    assert len(kept) == len(bundled()) - len(cats) + 8  # other concepts' images and 8 unknown images
    assert not any(any(np.array_equal(np.asarray(im), np.asarray(c[2])) for c in cats) for im in kept)


def test_the_targets_look_alike_siblings_get_more_protected_views():
    d = PhotoDomain(protect_views=1, sibling_views=3)
    siblings = [b for b in bundled() if b[0] in d.siblings("a bottle")]
    assert siblings  # the teapot emoji
    assert len(d.protect_images("a bottle")) == len(d.others("a bottle")) + 3 * len(siblings)
    assert len(d.protect_images("a cat")) == len(d.others("a cat"))  # no bundled image of a dog, lynx or tiger
    plain = PhotoDomain(protect_views=1, sibling_views=0).protect_images("a bottle")
    assert _same(d.protect_images("a bottle")[: len(plain)], plain)  # the other views are unchanged


def test_targets_are_concepts_of_the_table():
    d = PhotoDomain()
    assert d.resolve_target("cat", []) == "a cat"
    assert d.resolve_target("A Sports Car", []) == "a sports car"
    assert d.resolve_target(None, ["This is a cat.", "This is a cat.", "I don't know what this is."]) == "a cat"
    assert d.resolve_target(None, ["This is a cat.", "This is a dog.", "I don't know what this is."]) is None
    assert d.resolve_target("Whiskers", [], taught=["Whiskers"]) == "Whiskers"
    with pytest.raises(InputError, match="unknown concept 'a unicorn'"):
        d.resolve_target("a unicorn", [])
    assert named_concept("This is a coffee mug.") == "a coffee mug" and named_concept("This is Mirel.") is None
    assert "a tiger" in d.siblings("a cat") and d.siblings("Whiskers") == []
    labels, images = d.showcase(None, "a teapot", [])
    assert len(images) == 3 and all("a teapot" not in lab.split(" (")[0] for lab in labels)


@pytest.mark.slow
def test_forget_runs_on_a_tiny_photo_model(tmp_path):
    from nscvf.cache import Cache
    from nscvf.method.chain import UnlearningChain
    from nscvf.method.config import UnlearnConfig
    from nscvf.models import wrap_model
    from nscvf.models.photo import build_tiny

    model, processor = build_tiny(seed=0)
    model.config.nscvf_world = MARKER
    vlm = wrap_model(model, processor)
    assert isinstance(domain_for(vlm), PhotoDomain)
    chain = UnlearningChain(vlm, Cache(tmp_path), domain=PhotoDomain(region_size=6, protect_views=1))
    cats = [im for c, _, im in bundled() if c == "a cat"] * 4
    cfg = UnlearnConfig(steps=3, min_steps=0, stop_when_forgotten=False, evaluate="none")
    result = chain.forget(cats, config=cfg, target="cat")
    assert result.target == "a cat"
    layers = result.null_space["layers"]
    assert any("conv" in name for name in layers)  # the tower's 1x1 convolutions were constrained
    texts = PhotoDomain().text_questions()[:4]  # the LLM is frozen: text answers are bit-identical
    assert chain.vlm.text_logits(texts).equal(chain.base_vlm.text_logits(texts))
    assert chain.steps[-1].adapter  # LoRA weights were learned and kept


def test_teachings_hard_negative_candidates_ship_with_the_model_and_need_no_font(monkeypatch):
    """A Space or the Docker image has no emoji font: the candidates come from the sheet beside the weights,
    pixel for pixel the font's renders of the training split (when this machine has the font)."""
    from nscvf import photo_images
    from nscvf.method import photo_domain

    monkeypatch.setattr(photo_images, "EMOJI_FONT", photo_images.EMOJI_FONT.with_name("no-such-font.ttf"))
    photo_domain._train_emoji.cache_clear()
    try:
        shipped = PhotoDomain().negative_candidates()
    finally:
        photo_domain._train_emoji.cache_clear()
    monkeypatch.undo()
    assert len(shipped) > 500 and {im.size for im in shipped} == {(160, 160)}
    if photo_images.EMOJI_FONT.exists():
        rendered = [im for _, im in photo_images.emoji_split("train")]
        assert len(rendered) == len(shipped)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(rendered, shipped))


def test_the_base_models_features_of_the_candidates_ship_with_it_and_teaching_reads_them(monkeypatch):
    """negatives.npz: the photo model's own pooled features of the candidates, under the key a chain on the base
    computes now; teaching reads them instead of running 741 images through the tower (~10 s of a process's first
    teach), and computes where the key differs (another state, other candidates)."""
    import json

    from nscvf.method import UnlearningChain
    from nscvf.method.teach import hard_negatives, negatives_key
    from nscvf.models import load_model
    from nscvf.source import PHOTO_MODEL_DIR

    vlm = load_model(str(PHOTO_MODEL_DIR), device="cpu")
    d = PhotoDomain()
    candidates, (key, features) = d.negative_candidates(), d.negative_features()
    chain = UnlearningChain(vlm)
    fp = chain.state_fingerprint
    chain.close()
    assert key == json.dumps(list(negatives_key(vlm, candidates, fp)))
    assert features.shape == (len(candidates), vlm.image_features(candidates[:1])[1].shape[1])
    fresh = vlm.image_features(candidates[::60])[1].numpy()
    assert np.abs(fresh - features[::60]).max() < 1e-4
    calls = []
    image_features = type(vlm).image_features
    monkeypatch.setattr(type(vlm), "image_features", lambda self, ims: calls.append(len(ims)) or image_features(self, ims))
    taught = [candidates[5], candidates[300]]
    picked = hard_negatives(vlm, None, taught, candidates, 4, None, fp, d.negative_features())
    assert calls == [2], "the candidates' features were read, not computed"
    assert any(p is candidates[5] for p in picked) and any(p is candidates[300] for p in picked)  # each nearest itself
    hard_negatives(vlm, None, taught, candidates[:7], 4, None, fp, d.negative_features())
    assert calls[1:] == [2, 7], "other candidates: computed"


@pytest.mark.skipif(not (PHOTO_MODEL_DIR / "config.json").exists(), reason="no photo model")
def test_views_of_the_taught_photo_are_not_counted_as_other_photos():
    """A name taught on crops of the bundled rocket photo: that photo's own held-out views reached it and were
    counted as "other photographs now called by the name" (a false 20% warning). The encoder's own features
    tell them apart from the other photos; the projected ones do not (every unknown photo has the same one)."""
    import random

    from nscvf import photo_images
    from nscvf.method.anchors import bundled_photos
    from nscvf.method.teach import _heldout_views, as_near_as_taught, heldout_view
    from nscvf.models import load_model

    vlm = load_model(str(PHOTO_MODEL_DIR), device="cpu")
    photos = {f[len("photo_") : -len(".jpg")]: im for _, f, im in bundled() if f.startswith("photo_")}
    taught = photo_images.crops(photos["rocket"], 8, seed=1)
    held = _heldout_views(taught, 4, 5000)
    assert len({np.asarray(v).tobytes() for v in held}) == len(held)  # 32 distinct views (were 8 x 4 copies)
    pool = bundled_photos()  # astronaut, camera, chelsea, coffee, rocket
    views = [heldout_view(p, random.Random(9000 + i)) for i, p in enumerate(pool)]
    own = as_near_as_taught(vlm, taught, held, views)
    assert own == [i == len(pool) - 1 for i in range(len(pool))], own
    assert as_near_as_taught(vlm, taught, held, []) == []
