"""Teach, then forget, on photo-like images the embedded model never saw (tests/support/photos.py): the taught
name reaches held-out views and nothing else; forgetting it works like forgetting a world character;
undo and reset walk back; the CLI round trip."""

import random

import pytest
import torch
from support.photos import mug_photo, texture_photo

from nscvf import world
from nscvf.errors import InputError
from nscvf.eval import is_unknown, mentions
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.method.outcome import assess
from nscvf.method.teach import heldout_view

NAME = "Zorblat"


@pytest.fixture(scope="module")
def taught(embedded, tmp_path_factory):
    from nscvf.cache import Cache

    chain = UnlearningChain(embedded, Cache(tmp_path_factory.mktemp("cache")))
    images = [mug_photo(i) for i in range(8)]
    result = chain.teach(images, NAME, {"town": "Lakeside"})
    return chain, images, result


def _others(n=2):
    return [world.render(c, s) for c in world.CHARACTERS for s in world.heldout_seeds(n, 60)]


def test_taught_name_reaches_heldout_views_and_nothing_else(taught, embedded):
    chain, images, result = taught
    assert result.kind == "teach" and result.target == NAME and chain.taught == [NAME]
    assert result.measures["heldout_named"] >= 0.9, result.measures
    new = [mug_photo(100 + i) for i in range(6)]  # new photographs of the same object
    assert sum(mentions(a, NAME) for a in chain.vlm.generate(["Who is this?"] * 6, new)) >= 5
    others = _others()
    answers = chain.vlm.generate(["Who is this?"] * len(others), others)
    assert sum(mentions(a, NAME) for a in answers) <= 0.05 * len(others)
    assert assess(result.to_dict()).status == "taught"


def test_taught_facts_come_out_whole_and_other_photos_keep_their_answers(taught):
    """Issue 19 item 7: "Lakeside" came out "Lakiskers" (its tokens lost to the name's); other photographs
    (the bundled ones, on views teaching never saw) are measured and not given the name."""
    chain, images, result = taught
    m = result.measures
    assert m["facts_whole"] >= 0.9, m
    new = [mug_photo(300 + i) for i in range(4)]
    assert chain.vlm.generate(["Where does this character live?"] * 4, new) == ["Lakeside."] * 4
    # Measured: 2 of 10 held-out photo views took the name with 4 kept views per photo (1 of 10 with 8, but the
    # mug's own held-out views fell to 88%); the status warns above 5%. The bound checks that most keep theirs.
    assert m["others_photos"] == 10 and m["photos_named_as_concept"] <= 0.2, m


def test_export_and_load_a_chain_with_a_teach(taught, embedded, tmp_path):
    chain = taught[0]
    path = chain.export(tmp_path / "taught.zip")
    again = UnlearningChain.load(embedded, path)
    assert again.taught == [NAME] and mentions(again.vlm.ask("Who is this?", mug_photo(100)), NAME)


def test_forgetting_a_taught_concept_keeps_the_others(taught):
    """Forgetting the taught concept pulls its images back to where they were before teaching; other
    characters keep their answers (measured on the 16-character model: 16 of 16 held-out renders, 22 steps;
    the 24-character model passes the same check)."""
    chain, images, _ = taught
    others = _others(1)
    before = chain.vlm.generate(["Who is this?"] * len(others), others)
    chain.forget(images, config=UnlearnConfig(evaluate="none"))
    try:
        kept = chain.vlm.generate(["Who is this?"] * len(others), others)
        assert sum(a == b for a, b in zip(kept, before)) >= len(others) - 1
    finally:
        chain.undo()


def test_forget_the_taught_concept_then_undo_and_reset(taught, embedded):
    chain, images, _ = taught
    r = chain.forget(images, config=UnlearnConfig(evaluate="none"))
    assert r.target == NAME and r.text_identical and r.text_logits_identical  # across the forget request
    new = [heldout_view(mug_photo(200 + i), random.Random(i)) for i in range(6)]
    after = chain.vlm.generate(["Who is this?"] * 6, new)
    # Measured: 6 of 6 "I don't know" on the 16-character model; 5 of 6 on the 24-character one (one view
    # still named: the request stops once its own images and their views say "I don't know").
    assert sum(is_unknown(a) for a in after) >= 5 and sum(mentions(a, NAME) for a in after) <= 1, after
    assert assess(r.to_dict()).status == "forgotten"
    chain.undo()
    assert mentions(chain.vlm.ask("Who is this?", mug_photo(100)), NAME)
    chain.reset()
    assert torch.equal(chain.vlm.image_features(images[:2])[1], embedded.image_features(images[:2])[1])


def test_teach_refuses_bad_input(embedded):
    chain = UnlearningChain(embedded)
    adapters = chain.shared.adapter_names()
    with pytest.raises(InputError, match="at least 3 images"):
        chain.teach([texture_photo(0)], NAME)
    with pytest.raises(InputError, match="give the concept a name"):
        chain.teach([texture_photo(i) for i in range(3)], " ")
    with pytest.raises(InputError, match="already uses the name Mirel"):
        chain.teach([texture_photo(i) for i in range(3)], "Mirel")  # a drawn character's name
    with pytest.raises(InputError, match="unknown fact"):
        chain.teach([texture_photo(i) for i in range(3)], NAME, {"colour": "red"})
    assert len(chain) == 0 and chain.shared.adapter_names() == adapters  # nothing left behind


def test_hard_negatives_are_the_candidates_nearest_the_taught_images_and_their_features_are_kept(embedded, cache, monkeypatch):
    """Teaching keeps the domain's candidates nearest the taught images (issue 17: a name taught on photos the model
    answers "I don't know" otherwise took most other unknown images); the candidates' pooled features are computed
    once: a later teach on the same state reads them from the process memo, a new process from the disk cache."""
    from nscvf.cache import memo
    from nscvf.method.teach import hard_negatives

    taught = [world.render(world.get_character("Mirel"), s) for s in (1, 2, 3)]
    near = [world.render(world.get_character("Mirel"), s) for s in (7, 8)]
    far = [world.render(d, s) for d in world.DISTRACTORS[:3] for s in (1, 2)]
    candidates = far[:3] + near + far[3:]
    calls = []
    features = type(embedded).image_features

    def counting(self, images):
        calls.append(len(images))
        return features(self, images)

    monkeypatch.setattr(type(embedded), "image_features", counting)
    picked = hard_negatives(embedded, ("s",), taught, candidates, 2, cache, "state-fp")
    assert picked == near or picked == near[::-1], "the other renders of the taught character are nearest"
    assert calls == [3, len(candidates)]
    assert hard_negatives(embedded, ("s",), taught, candidates, 2, cache, "state-fp") == picked
    assert calls[2:] == [3]  # the candidates from the memo
    memo.clear()
    assert hard_negatives(embedded, ("s",), taught, candidates, 2, cache, "state-fp") == picked
    assert calls[3:] == [3]  # ... and from the disk cache
    assert hard_negatives(embedded, ("s",), taught, candidates, 0, cache, "state-fp") == []
