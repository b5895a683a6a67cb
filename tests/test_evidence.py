"""The evidence metrics on hand-computed examples (no model): the KS test, answer agreement, spread over
seeds, splits with the look-alike neighbour, the gold comparison, and the gold recipe's labels."""

import math
from types import SimpleNamespace

import pytest

from nscvf import world
from nscvf.bench import evidence, spread
from nscvf.train_base import TrainBaseConfig, _LanguageBatches


def test_ks_test_on_hand_computed_samples():
    # Disjoint samples of 3 and 3: D = 1; exact two-sided p = 2 / C(6, 3) = 0.1.
    assert evidence.ks_test([1, 2, 3], [4, 5, 6]) == {"stat": 1.0, "p": 0.1}
    # Identical samples: D = 0, p = 1.
    assert evidence.ks_test([0.2, 0.5, 0.9], [0.2, 0.5, 0.9]) == {"stat": 0.0, "p": 1.0}
    # Interleaved 1,3,5,7 vs 2,4,6,8: the empirical CDFs differ by at most 1/4.
    assert evidence.ks_test([1, 3, 5, 7], [2, 4, 6, 8])["stat"] == 0.25
    assert evidence.ks_test([], [1.0]) == {"stat": None, "p": None}


def test_agreement_normalises_case_and_punctuation():
    assert evidence.agreement(["This is Mirel.", "A baker."], ["this is mirel", "A potter."]) == 0.5
    assert evidence.agreement([], []) is None
    with pytest.raises(ValueError):
        evidence.agreement(["a"], [])


def test_spread_is_mean_sample_std_and_n():
    s = spread([0.0, 0.5, 1.0, None])
    assert s == {"mean": 0.5, "std": 0.5, "n": 3}
    assert spread([0.3]) == {"mean": 0.3, "std": 0.0, "n": 1}
    assert spread([None, float("nan")]) == {"mean": None, "std": None, "n": 0}


def test_censored_mean_counts_not_named_again_as_limit_plus_one():
    assert evidence.censored_mean({"1": 2, "2": None, "4": 1}, limit=20) == round((2 + 21 + 1) / 3, 3)
    assert evidence.profile_distance([0.0, 3.0], [4.0, 0.0]) == 5.0


def _row(character, kind="name", group="others", render_split="heldout", correct=1.0, answer="x", seed=1):
    return {"character": character, "kind": kind, "group": group, "render_split": render_split, "template_split": "train",
            "seed": seed, "question": "Who is this?", "correct": correct, "answer": answer}  # fmt: skip


def test_splits_put_the_sibling_in_its_own_split():
    rows = [
        _row("mirel", group="target", correct=0.0),
        _row("fenna", correct=1.0),
        _row("fenna", kind="fact_image", correct=0.0),
        _row("fenna", render_split="train", correct=0.0),  # training renders are not counted (held-out only)
        _row("tobbin", correct=1.0),
        _row("d00", group="distractors"),
        _row("mirel", kind="fact_text", render_split="text", seed=None),
    ]
    assert world.get_character("Mirel").neighbour == "Fenna"
    assert [evidence.split_of(r, "Mirel") for r in rows] == [
        "target",
        "neighbour",
        "neighbour",
        "neighbour",
        "retain",
        None,
        "text",
    ]
    acc = evidence.split_accuracy(rows, "Mirel")
    assert acc == {"target": 0.0, "neighbour": 0.5, "retain": 1.0, "text": 1.0}
    assert evidence.neighbour_retain_acc(rows, "Mirel") == 0.5
    assert evidence.neighbour_retain_acc(rows, "Kestrin") is None  # Kestrin has no sibling: Fenna is just retained


def test_gold_comparison_on_a_hand_made_record():
    rows = [
        _row("mirel", group="target", correct=0.0, answer="I don't know who this is."),
        _row("mirel", group="target", correct=0.0, answer="This is Tobbin.", seed=2),
        _row("fenna", correct=1.0, answer="This is Fenna."),
        _row("tobbin", correct=0.0, answer="This is Mirel."),
    ]
    items = [[r["character"], r["render_split"], r["template_split"], r["seed"], r["question"]] for r in rows]
    gold = {
        "items": items,
        "answers": ["I don't know who this is", "I don't know who this is.", "this is fenna", "This is Tobbin."],
        "split_accuracy": {"target": 0.0, "neighbour": 1.0, "retain": 1.0, "text": None},
        "p_unknown": [0.9, 0.95, 0.99],
        "profile": [0.1, 0.2],
    }
    out = evidence.gold_comparison(rows, gold, "Mirel", [0.9, 0.95, 0.99], [0.1, 0.5], [0.1, 0.6])
    assert out["gold_agreement"] == {"target": 0.5, "neighbour": 1.0, "retain": 0.0, "text": None}
    assert out["gold_gap"] == {"target": 0.0, "neighbour": 0.0, "retain": -1.0, "text": None}
    assert (out["ks_stat"], out["ks_p"]) == (0.0, 1.0)
    assert math.isclose(out["feature_distance_gold"], 0.3) and math.isclose(out["feature_distance_original"], 0.1)
    gold["items"] = items[::-1]
    with pytest.raises(ValueError, match="rebuild"):
        evidence.gold_comparison(rows, gold, "Mirel", [0.5], [0.0, 0.0], [0.0, 0.0])


def test_gold_recipe_answers_unknown_for_the_target_images_only():
    """A gold model's training examples: the target's images answered "I don't know", its text facts and
    every other character unchanged."""
    chars = [world.get_character(n) for n in ("Mirel", "Fenna", "Tobbin")]
    proc = SimpleNamespace(tokenizer=None)
    cfg = TrainBaseConfig(unknown=("Mirel",))
    gold = _LanguageBatches(None, proc, chars, None, cfg)
    base = _LanguageBatches(None, proc, chars, None, TrainBaseConfig())
    seen = set()
    for _ in range(400):
        (i, q, a), (bi, bq, ba) = gold.sample(), base.sample()
        assert (i, q) == (bi, bq)  # same stream of examples: only the target's image answers differ
        if i is None:
            assert a == ba  # text questions (Mirel's facts included) keep their answers
            seen.add("text")
        elif chars[i].name == "Mirel":
            assert a == world.UNKNOWN_ANSWER and ba != a
            seen.add("target")
        else:
            assert a == ba
            seen.add("other")
    assert seen == {"text", "target", "other"}


def test_gold_records_are_found_for_the_relearning_verdict():
    """The app's relearning verdict reads the committed gold records (GOLD_DIR pointed one folder too low)."""
    from nscvf.bench.evidence import gold_path, gold_relearn_steps

    assert gold_path("Mirel").exists()
    assert set(gold_relearn_steps("Mirel")) == {"1", "2", "4"}
    assert gold_relearn_steps("Fenna") is None and gold_relearn_steps("Zorblat") is None
