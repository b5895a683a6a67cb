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


def test_collapse_is_the_headline():
    eb, ea = {"summary": {"retain_acc": 1.0}}, {"summary": {"retain_acc": 0.06, "target_name_acc_heldout": 0.0}}
    o = assess(_result(["This is Quessa."] * 4, ["This is Dravik."] * 4, "Quessa", eb, ea, drift=2086990.0))
    assert o.status == "collapsed" and o.headline().startswith("the model collapsed: retain accuracy 100% -> 6%")
    assert o.damaged and any("94 points" in w for w in o.warnings)
    # GA at its defaults (issue 19 item 4): every answer "M M M ...", before any accuracy is measured.
    mmm = assess(_result(["This is Oriel."] * 8, ["M M M M M M"] * 8, "Oriel"))
    assert mmm.status == "collapsed" and "8 of 8 answers are no longer sentences" in mmm.headline()
    assert "did not forget" not in mmm.headline()


def test_generic_models_report_changes_not_names():
    o = assess(_result(["a red mug"] * 3, ["a red mug", "I don't know.", "I don't know."], "mug"), world=False)
    assert o.status == "changed" and o.forgotten == 2
    assert assess(_result(["x"] * 2, ["x"] * 2, None), world=False).status == "unchanged"


def test_partial_request_is_labelled():
    o = assess(_result(["This is Mirel."] * 2, [UNK] * 2, "Mirel", partial=True))
    assert o.partial and "partial" in o.headline()


def _eval(acc_by_char: dict, items: int = 52):
    """An evaluation summary and per-character counts: character -> accuracy on ``items`` quiz items."""
    by = {c: [round(a * items), items] for c, a in acc_by_char.items()}
    n = items * len(by)
    return {"summary": {"retain_acc": sum(v[0] for v in by.values()) / n, "retain_items": n}, "retain_by_character": by}


def test_a_drop_within_sampling_noise_is_no_alarm_and_a_visible_one_is_named():
    chars = [f"C{i}" for i in range(23)]
    eb = _eval(dict.fromkeys(chars, 1.0))
    # Two quiz items lost, on two characters: 100% -> 99.8%, within the quiz's noise (issue 19 item 1).
    ea = _eval(dict.fromkeys(chars, 1.0) | {"C1": 51 / 52, "C2": 51 / 52})
    o = assess(
        _result(
            ["This is Mirel."] * 8, [UNK] * 8, "Mirel", eb, ea | {"summary": ea["summary"] | {"target_name_acc_heldout": 0.0}}
        )
    )
    assert o.status == "forgotten" and o.warnings == [] and not o.damaged
    # One look-alike lost half its answers: that character is named; the overall mean is no alarm of its own.
    ea = _eval(dict.fromkeys(chars, 1.0) | {"C5": 0.5})
    o = assess(_result(["This is Mirel."] * 8, [UNK] * 8, "Mirel", eb, ea))
    assert len(o.warnings) == 1 and o.warnings[0] == "C5 is answered correctly on 50% of its 52 quiz items (was 100%)"
    # Every character lost a tenth: a drop across the characters, beyond noise.
    ea = _eval(dict.fromkeys(chars, 0.9))
    o = assess(_result(["This is Mirel."] * 8, [UNK] * 8, "Mirel", eb, ea))
    assert (
        o.warnings and o.warnings[0].startswith("retained characters lost 10 points") and "23 of 23 characters" in o.warnings[0]
    )


def test_the_items_bound_without_per_character_numbers():
    from nscvf.method.outcome import beyond_noise

    assert not beyond_noise(1.0, 0.98, 100)  # 2 items: no sign test reaches p < 0.05
    assert beyond_noise(1.0, 0.98, 1196) and not beyond_noise(0.9, 0.89, 1196)
    assert beyond_noise(1.0, 0.05, 1196)


def test_a_changed_retained_answer_is_named():
    rows = [["Fenna (held-out render; look-alike sibling)", Q, "This is Fenna.", UNK, "CHANGED"],
            ["Dravik (held-out render)", Q, "This is Dravik.", "This is Dravik.", "same"]]  # fmt: skip
    o = assess(_result(["This is Mirel."] * 8, [UNK] * 8, "Mirel"), retained=rows)
    assert o.warnings == [f"Fenna (held-out render; look-alike sibling) now answers {UNK!r} (was 'This is Fenna.')"]
    assert assess(_result(["This is Mirel."] * 8, [UNK] * 8, "Mirel"), retained=rows[1:]).warnings == []


def test_now_called_lists_only_new_names_and_also_forgotten_names_the_others():
    before = ["This is Mirel."] * 30 + ["This is Fenna."] * 2
    after = [UNK] * 28 + ["This is Mirel.", "This is Dravik."] + ["This is Fenna.", UNK]
    o = assess(_result(before, after, "Mirel"))
    assert o.wrong_names == [(30, "Dravik")] and o.also_forgotten == [(32, "Fenna")]
    assert "now called Dravik (#30)" in o.headline() and "Fenna (#31)" not in o.headline()
    assert "also forgot Fenna (#32)" in o.headline()


def test_mismatched_or_mixed_forget_sets_are_refused_with_what_to_do():
    from nscvf.method.outcome import forget_set_problem

    thaddo = ["This is Thaddo."] * 8
    why = forget_set_problem(identification(thaddo, given="Brisa"), "Brisa")
    assert why.startswith("these images are Thaddo, not Brisa") and "type Thaddo in the name box" in why
    mix = ["This is Thaddo."] * 4 + ["This is Vollo."] * 4
    why = forget_set_problem(identification(mix), None)
    assert "more than one character (Thaddo (4 of 8), Vollo (4 of 8))" in why and "Thaddo and Vollo at once" in why
    one_lookalike = ["This is Mirel."] * 31 + ["This is Fenna."]
    assert forget_set_problem(identification(one_lookalike, given="Mirel"), "Mirel") is None
    assert forget_set_problem(identification(thaddo, given="Thaddo"), "Thaddo") is None
    assert forget_set_problem(identification([UNK] * 4, given="Mirel"), "Mirel") is None  # forgotten already


def test_the_targets_look_alike_is_named_as_such():
    """Measured on the Mirel example at the defaults (2 renders): Fenna 52/52 -> 39/52, Wrenna 52/52 -> 40/52,
    every other character unchanged (retain 100% -> 97.9%): damage on two characters, named, not a blanket drop."""
    from nscvf import world

    chars = [c.name for c in world.CHARACTERS if c.name != "Mirel"]
    eb = _eval(dict.fromkeys(chars, 1.0))
    ea = _eval(dict.fromkeys(chars, 1.0) | {"Fenna": 39 / 52, "Wrenna": 40 / 52})
    w = assess(_result(["This is Mirel."] * 8, [UNK] * 8, "Mirel", eb, ea)).warnings
    assert w == ["Fenna (Mirel's look-alike) is answered correctly on 75% of its 52 quiz items (was 100%)",
                 "Wrenna is answered correctly on 77% of its 52 quiz items (was 100%)"]  # fmt: skip
