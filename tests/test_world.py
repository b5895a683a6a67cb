import numpy as np
import pytest

from nscvf import world
from nscvf.errors import InputError


def test_sizes_and_facts():
    assert len(world.CHARACTERS) >= 16
    assert len(world.DISTRACTORS) >= 16 and len(world.HELDOUT_DISTRACTORS) >= 16
    for c in world.CHARACTERS:
        assert c.name and set(c.facts) == {"town", "job", "food"}
    assert len({c.name for c in world.CHARACTERS}) == len(world.CHARACTERS)


def test_named_characters_have_unique_visual_identity():
    pairs = {(c.shape, c.colour) for c in world.CHARACTERS}
    looks = {(c.pattern, c.accessory) for c in world.CHARACTERS}
    assert len(pairs) == len(looks) == len(world.CHARACTERS)
    # No distractor looks like a named character in shape and colour.
    for d in world.DISTRACTORS + world.HELDOUT_DISTRACTORS:
        assert (d.shape, d.colour) not in pairs and d.is_distractor


def test_heldout_distractors_are_new_individuals():
    train = {(d.shape, d.colour, d.pattern, d.accessory, d.eyes) for d in world.DISTRACTORS}
    held = [(d.shape, d.colour, d.pattern, d.accessory, d.eyes) for d in world.HELDOUT_DISTRACTORS]
    assert sum(h in train for h in held) <= 2


def test_render_is_deterministic_and_varies_with_seed():
    c = world.CHARACTERS[3]
    a = np.asarray(world.render(c, 5))
    b = np.asarray(world.render(c, 5))
    other = np.asarray(world.render(c, 6))
    assert a.shape == (world.RENDER_SIZE, world.RENDER_SIZE, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, other)


def test_heldout_seed_split_is_disjoint():
    tr = set(world.train_seeds(5000))
    ho = set(world.heldout_seeds(5000))
    assert not tr & ho
    assert all(world.is_heldout_seed(s) for s in ho) and not any(world.is_heldout_seed(s) for s in tr)


def test_heldout_paraphrases_are_disjoint_from_training_templates():
    for c in world.CHARACTERS[:2]:
        tr = {qa.question for qa in world.image_questions(c, "train") + world.text_questions(c, "train")}
        ho = {qa.question for qa in world.image_questions(c, "heldout") + world.text_questions(c, "heldout")}
        assert ho and not tr & ho
    assert "Who is this?" in world.IDENTITY_TEMPLATES["train"]


def test_distractor_questions_expect_unknown():
    d = world.DISTRACTORS[0]
    assert {qa.answer for qa in world.image_questions(d)} == {world.UNKNOWN_ANSWER}
    assert world.text_questions(d) == []


def test_get_character_case_insensitive_and_clear_error():
    assert world.get_character("mirel").name == "Mirel"
    with pytest.raises(InputError, match="unknown character 'Nobody'.*Mirel"):
        world.get_character("Nobody")
