import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nscvf import world
from nscvf.cli import main
from nscvf.errors import InputError
from nscvf.eval import mentions, names_in


def test_sizes_and_facts():
    assert len(world.PRIMARY_NAMES) == 16 and len(world.SIBLING_NAMES) >= 8
    assert len(world.CHARACTERS) >= 24 and world.NAMES == [c.name for c in world.CHARACTERS]
    assert world.NAMES == world.PRIMARY_NAMES + world.SIBLING_NAMES
    assert len(world.DISTRACTORS) >= 16 and len(world.HELDOUT_DISTRACTORS) >= 16
    for c in world.CHARACTERS:
        assert c.name and set(c.facts) == {"town", "job", "food"}
    assert len({c.name for c in world.CHARACTERS}) == len(world.CHARACTERS)
    assert len({c.key for c in world.CHARACTERS}) == len(world.CHARACTERS)


def test_named_characters_have_unique_visual_identity():
    primary = [c for c in world.CHARACTERS if c.name in world.PRIMARY_NAMES]
    # Among the primary characters, (shape, colour) and (pattern, accessory) each identify one character.
    assert len({(c.shape, c.colour) for c in primary}) == len({(c.pattern, c.accessory) for c in primary}) == len(primary)
    # A sibling shares its neighbour's (shape, colour) pair and adds no new pair.
    pairs = {(c.shape, c.colour) for c in world.CHARACTERS}
    assert pairs == {(c.shape, c.colour) for c in primary}
    # The full look (shape, colour, pattern, accessory) is unique among every named character.
    looks = {(c.shape, c.colour, c.pattern, c.accessory) for c in world.CHARACTERS}
    assert len(looks) == len(world.CHARACTERS)
    # No distractor looks like a named character in shape and colour.
    for d in world.DISTRACTORS + world.HELDOUT_DISTRACTORS:
        assert (d.shape, d.colour) not in pairs and d.is_distractor


def test_siblings_are_look_alikes_with_symmetric_neighbours():
    by_name = {c.name: c for c in world.CHARACTERS}
    siblings = [by_name[n] for n in world.SIBLING_NAMES]
    assert len(siblings) >= 8
    for a in world.CHARACTERS:
        for b in world.CHARACTERS:
            assert (a.neighbour == b.name) == (b.neighbour == a.name)
    for s in siblings:
        p = by_name[s.neighbour]
        assert p.name in world.PRIMARY_NAMES and p.neighbour == s.name
        assert world.neighbour_of(s.name) == p and world.neighbour_of(p.name.lower()) == s
        assert (s.shape, s.colour, s.eyes) == (p.shape, p.colour, p.eyes)
        assert s.pattern != p.pattern and s.accessory != p.accessory
        assert s.facts != p.facts
    # Primary characters without a sibling have no neighbour.
    lonely = [c for c in world.CHARACTERS if c.neighbour is None]
    assert len(lonely) == len(world.CHARACTERS) - 2 * len(siblings)
    assert all(world.neighbour_of(c.name) is None for c in lonely)


def _look_and_facts(chars):
    return [(c.name, c.key, c.shape, c.colour, c.pattern, c.accessory, c.eyes, c.neighbour, dict(c.facts)) for c in chars]


def test_siblings_are_deterministic(capsys):
    a = world._siblings(world._PRIMARY)
    b = world._siblings(world._primary_characters())
    assert _look_and_facts(a) == _look_and_facts(b) == _look_and_facts(world.CHARACTERS[len(world.PRIMARY_NAMES) :])
    # The same world in a fresh interpreter (another hash seed): nothing depends on the process.
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    argv = ["world", "list", "--json"]
    fresh = subprocess.run([sys.executable, "-m", "nscvf.cli", *argv], capture_output=True, text=True, check=True, env=env)
    assert main(argv) == 0
    assert json.loads(fresh.stdout) == json.loads(capsys.readouterr().out)


def test_no_name_is_a_whole_word_of_another():
    for a in world.NAMES:
        for b in world.NAMES:
            assert mentions(f"This is {a}.", b) == (a == b), (a, b)
    assert set(names_in(f"This is {world.SIBLING_NAMES[0]}.")) == {world.SIBLING_NAMES[0]}


def test_fact_answers_use_the_right_article():
    assert world.fact_answer("job", "astronomer") == "An astronomer."
    assert world.fact_answer("job", "baker") == "A baker."
    assert world.fact_answer("town", "Port Alder") == "Port Alder."
    assert world.fact_answer("food", "apple tart") == "Apple tart."
    for c in world.CHARACTERS:
        article = "An" if c.facts["job"][0] in "aeiou" else "A"
        assert c.fact_answer("job") == f"{article} {c.facts['job']}."


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
    assert not world.is_heldout_seed(world.HELDOUT_SEED_BASE - 1) and world.is_heldout_seed(world.HELDOUT_SEED_BASE)
    # Every named image set stays on its side of the split.
    for offset in world.SEEDS.values():
        assert not any(world.is_heldout_seed(s) for s in world.train_seeds(64, offset))
        assert all(world.is_heldout_seed(s) for s in world.heldout_seeds(64, offset))


def test_sibling_renders_differ_but_are_deterministic():
    by_name = {c.name: c for c in world.CHARACTERS}
    for name in world.SIBLING_NAMES:
        s, p = by_name[name], by_name[by_name[name].neighbour]
        for seed, augment in ((7, True), (world.heldout_seeds(1)[0], True), (0, False)):
            a = np.asarray(world.render(s, seed, augment=augment))
            assert np.array_equal(a, np.asarray(world.render(s, seed, augment=augment)))
            assert not np.array_equal(a, np.asarray(world.render(p, seed, augment=augment)))


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


def test_world_list_json(capsys):
    assert main(["world", "list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == len(world.CHARACTERS) == 24
    assert [e["name"] for e in entries] == world.NAMES
    for e in entries:
        c = world.get_character(e["name"])
        assert set(e) == {"name", "key", "traits", "facts", "neighbour"}
        assert e["key"] == c.key and e["facts"] == c.facts and e["neighbour"] == c.neighbour
        assert e["traits"] == {t: getattr(c, t) for t in ("shape", "colour", "pattern", "accessory", "eyes")}
    assert sum(e["neighbour"] is not None for e in entries) == 2 * len(world.SIBLING_NAMES)


def test_world_list_facts_names_the_neighbour(capsys):
    assert main(["world", "list", "--facts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(world.CHARACTERS)
    first = world.CHARACTERS[0]
    assert lines[0].startswith(f"{first.name}\t") and lines[0].endswith(f"\tneighbour: {first.neighbour or '-'}")


def test_forget_examples_are_the_training_renders_each_seed_its_own():
    c = world.get_character("Mirel")
    first = world.forget_examples("Mirel", 3)
    assert [np.asarray(im).tobytes() for im in first] == [
        np.asarray(world.render(c, s)).tobytes() for s in world.train_seeds(3, world.SEEDS["forget_example"])
    ]
    assert np.array_equal(np.asarray(world.forget_examples(c, 1)[0]), np.asarray(first[0]))  # a Character or a name
    seed1 = world.forget_examples("Mirel", 8, seed=1)  # 16 renders later: no image shared with seed 0
    assert not {np.asarray(a).tobytes() for a in seed1} & {np.asarray(a).tobytes() for a in world.forget_examples("Mirel")}
    held = world.heldout_examples("Mirel", 2)
    assert len(held) == 2 and np.array_equal(
        np.asarray(held[0]), np.asarray(world.render(c, world.heldout_seeds(1, world.SEEDS["eval_heldout"])[0]))
    )
    with pytest.raises(world.UnknownCharacterError, match="unknown character 'Nobody'"):
        world.forget_examples("Nobody")
