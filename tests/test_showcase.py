"""What the app shows as "must not change" and relearns from comes from the model's Domain, not from
branches in the app: the embedded world shows its look-alike sibling first (held-out renders, the identity
and a fact question) and relearns a character from renders against an unseen distractor; any other model
shows the uploaded images to keep and relearns from the request's own images (the Domain says None)."""

from __future__ import annotations

from PIL import Image

from nscvf import world
from nscvf.method.domain import Domain, WorldDomain


class SilentModel:
    """A stand-in base model that names nobody (every showcase seed candidate is tried, the last kept)."""

    fingerprint = "test-silent"

    def __init__(self):
        self.asked = []

    def generate(self, questions, images):
        self.asked += questions
        return ["I don't know."] * len(questions)


def _images(n: int) -> list:
    return [Image.new("RGB", (16, 16), (10 * i, 0, 0)) for i in range(n)]


def test_generic_domain_shows_the_images_to_keep():
    d = Domain()
    labels, imgs = d.showcase(None, "Mug", [], _images(5))
    assert labels == ["kept image #1", "kept image #2", "kept image #3"] and len(imgs) == 3
    assert d.showcase(None, "Mug", [], None) == ([], [])
    assert d.showcase_questions() == d.probe_questions()
    assert d.relearn_sets("Mug", _images(3), 2, 6) is None  # the app relearns from the request's own images


def test_world_shows_the_sibling_first_on_held_out_renders():
    d, vlm = WorldDomain(), SilentModel()
    target = next(c for c in world.CHARACTERS if c.neighbour)
    labels, imgs = d.showcase(vlm, target.name, [target.name])
    assert len(labels) == len(imgs) == 3 and all(isinstance(im, Image.Image) for im in imgs)
    assert labels[0] == f"{target.neighbour} (held-out render; look-alike sibling)"
    assert not any(label.startswith(target.name + " ") for label in labels)  # what is forgotten is not shown
    assert set(vlm.asked) == {d.probe_questions()[0]}  # the seeds are checked with the identity question
    assert d.showcase_questions() == [d.probe_questions()[0], world.IMAGE_FACT_TEMPLATES["town"]["train"][0]]


def test_world_relearns_a_character_from_renders_against_a_distractor():
    d, name = WorldDomain(), world.NAMES[0]
    sets = d.relearn_sets(name, [], 2, 6)
    assert len(sets.train) == len(sets.ref_train) == 2 and len(sets.held) == len(sets.ref_held) == 6
    assert "unseen character" in sets.reference and name in sets.reference
    uploaded = _images(4)
    assert d.relearn_sets(name, uploaded, 2, 6).train == uploaded[:2]  # the request's own images first
    assert d.relearn_sets(name, uploaded, 2, 6, taught=[name]) is None  # a taught concept: not a character
    assert d.relearn_sets("Zorblat", uploaded, 2, 6) is None
