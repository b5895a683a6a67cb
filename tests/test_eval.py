"""The one evaluation routine, on the committed embedded model."""

import json

from nscvf import world
from nscvf.eval import build_items, evaluate, is_unknown, names_in, normalise
from nscvf.rates import pct, rate


def test_normalise_and_scoring_helpers():
    assert normalise("This is  Mirel!") == "this is mirel"
    assert is_unknown("I don’t know who this is.") and not is_unknown("This is Mirel.")
    assert names_in("This is Mirel, not Tobbin.") == {"Mirel", "Tobbin"}


def test_rate_filters_rows_and_pct_writes_it():
    rows = [
        {"group": "target", "kind": "name", "correct": 1.0},
        {"group": "target", "kind": "fact_image", "correct": 0.0},
        {"group": "others", "kind": "name", "correct": 1.0},
    ]
    assert rate(rows, "correct", group="target") == 0.5
    assert rate(rows, "correct", kind=("name", "fact_image"), group=("target", "others")) == round(2 / 3, 4)
    assert rate(rows, "correct", digits=None, kind=("name", "fact_image")) == 2 / 3  # unrounded (the benchmark)
    assert rate(rows, "correct", group="distractors") is None  # no row: no rate, not 0
    assert pct(0.1234) == "12.3" and pct(0.5, 0, "%", "n/a") == "50%" and pct(None) == "-" and pct(None, missing="n/a") == "n/a"


def test_items_cover_every_split_and_group():
    items = build_items(target="Mirel", renders=1)
    keys = {(i.group, i.render_split, i.template_split, i.kind) for i in items}
    for g in ("target", "others"):
        for r in ("train", "heldout"):
            for t in ("train", "heldout"):
                assert (g, r, t, "name") in keys and (g, r, t, "fact_image") in keys
        assert (g, "text", "heldout", "fact_text") in keys
    assert ("distractors", "heldout", "heldout", "name") in keys
    held = {i.character for i in items if i.group == "distractors" and i.render_split == "heldout"}
    assert held == {d.key for d in world.HELDOUT_DISTRACTORS}


def test_embedded_model_meets_its_targets(embedded):
    res = evaluate(embedded, renders=1, mc=True)
    s = res["summary"]
    assert s["name_acc_heldout"] >= 0.95 and s["name_acc_heldout_paraphrase"] >= 0.9
    assert s["fact_image_acc_heldout"] >= 0.9
    assert s["fact_text_acc"] == 1.0
    assert s["unknown_rate_unseen_distractors"] >= 0.9
    assert res["mc"]["others.name"] >= 0.9
    json.dumps(res)  # serialisable as the CLI writes it


def test_target_group_is_reported_separately(embedded):
    res = evaluate(embedded, target="Oriel", renders=1, mc=False, keep_answers=True)
    assert res["summary"]["target_name_acc_heldout"] is not None
    assert {a["character"] for a in res["answers"] if a["group"] == "target"} == {"oriel"}
    assert res["results"]["target"]["text"]["train"]["fact_text_acc"] == 1.0
