"""The outcome of a request is what it measured (issue 11's cases), on hand-made results (pure, fast)."""

from nscvf.method.outcome import assess, identification

UNK = "I don't know who this is."
Q = "Who is this?"


def _result(before, after, target, eval_before=None, eval_after=None, drift=0.04, partial=False):
    probes = lambda answers: {"forget": {"questions": [Q], "answers": {Q: answers}}}  # noqa: E731
    return {
        "probes_before": probes(before),
        "probes_after": probes(after),
        "target": target,
        "eval_before": eval_before,
        "eval_after": eval_after,
        "retain_drift": {"mean": drift, "max": 2 * drift},
        "text_logits_identical": True,
        "partial": partial,
    }


def test_one_step_that_changed_nothing_is_not_forgotten():
    o = assess(_result(["This is Tobbin."] * 4, ["This is Tobbin."] * 4, "Tobbin"))
    assert o.status == "not forgotten" and len(o.still_named) == 4
    assert "did not forget Tobbin" in o.headline() and "forgot Tobbin:" not in o.headline()


def test_all_forgotten_but_heldout_still_named_is_partial():
    ev = {"summary": {"target_name_acc_heldout": 1.0, "retain_acc": 1.0}}
    o = assess(_result(["This is Oriel."] * 4, [UNK] * 4, "Oriel", {"summary": {"retain_acc": 1.0}}, ev))
    assert o.status == "partly forgotten" and "held-out renders named 100%" in o.headline()
    ok = assess(_result(["This is Oriel."] * 4, [UNK] * 4, "Oriel", eval_after={"summary": {"target_name_acc_heldout": 0.0}}))
    assert ok.status == "forgotten" and not ok.damaged


def test_partly_forgotten_lists_images_still_named_and_wrong_names():
    o = assess(_result(["This is Mirel."] * 4, [UNK, "This is Mirel.", "This is Dravik.", UNK], "Mirel"))
    assert o.status == "partly forgotten" and o.still_named == [(2, "Mirel")] and o.wrong_names == [(3, "Dravik")]
    assert "#2" in o.headline() and "Dravik (#3)" in o.headline()


def test_stale_name_is_a_wrong_target():
    # The name box said Brisa; the images were Thaddo's (the model never named Brisa).
    o = assess(_result(["This is Zembla."] * 4, [UNK] * 4, "Brisa"))
    assert o.status == "wrong target" and "Brisa was not in these images" in o.headline()
    ident = identification(["This is Zembla."] * 4, given="Brisa")
    assert ident.inferred == "Zembla" and any("disagrees" in w and "Zembla" in w for w in ident.warnings)


def test_two_characters_and_unrecognised_images_are_warned_before_training():
    ident = identification(["This is Tobbin."] * 4 + ["This is Quessa."] * 4)
    assert ident.counts == {"Tobbin": 4, "Quessa": 4}
    assert any("more than one character" in w and "Tobbin (4 of 8)" in w for w in ident.warnings)
    nobody = assess(_result([UNK] * 4, [UNK] * 4, None))
    assert nobody.status == "nothing to forget" and "forgot" not in nobody.headline()
    none = identification([UNK] * 4)
    assert none.inferred is None and any("nothing to forget" in w for w in none.warnings)
    clean = identification(["This is Tobbin."] * 4, given="Tobbin")
    assert clean.inferred == "Tobbin" and clean.warnings == []


def test_collapse_is_reported_as_damage():
    eb, ea = {"summary": {"retain_acc": 1.0}}, {"summary": {"retain_acc": 0.06, "target_name_acc_heldout": 0.0}}
    o = assess(_result(["This is Quessa."] * 4, ["This is Dravik."] * 4, "Quessa", eb, ea, drift=2086990.0))
    assert o.status == "not forgotten" and o.wrong_names == [(i, "Dravik") for i in range(1, 5)]
    assert o.damaged and any("94 points" in w for w in o.warnings) and any("moved" in w for w in o.warnings)


def test_generic_models_report_changes_not_names():
    o = assess(_result(["a red mug"] * 3, ["a red mug", "I don't know.", "I don't know."], "mug"), world=False)
    assert o.status == "changed" and o.forgotten == 2
    assert assess(_result(["x"] * 2, ["x"] * 2, None), world=False).status == "unchanged"


def test_partial_request_is_labelled():
    o = assess(_result(["This is Mirel."] * 2, [UNK] * 2, "Mirel", partial=True))
    assert o.partial and "partial" in o.headline()
