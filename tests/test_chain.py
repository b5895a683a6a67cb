"""The engine on the embedded model: forgetting works, retained and text answers stay, the null-space
property holds on real inputs, the chain undoes and resets, bad input gets a clear message."""

import threading

import pytest
import torch

from nscvf import world
from nscvf.errors import Cancelled, InputError
from nscvf.eval import is_unknown, mentions
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.method.nullspace import delta_ratio, lora_layers

TARGET = "Dravik"


def renders(name, n=8, offset=100, heldout=False):
    c = world.get_character(name)
    seeds = (world.heldout_seeds if heldout else world.train_seeds)(n, offset)
    return [world.render(c, s) for s in seeds]


@pytest.fixture(scope="module")
def forgotten(embedded, tmp_path_factory):
    from nscvf.cache import Cache

    chain = UnlearningChain(embedded, Cache(tmp_path_factory.mktemp("cache")))
    stages = []
    result = chain.forget(renders(TARGET), config=UnlearnConfig(evaluate="none"), progress=lambda s, d, n: stages.append(s))
    return chain, result, stages


def test_target_forgotten_as_unknown_on_new_renders(forgotten):
    chain, result, _ = forgotten
    assert result.target == TARGET  # inferred from the base model's answers
    answers = chain.vlm.generate(["Who is this?"] * 8, renders(TARGET, 8, 50, heldout=True))
    assert sum(is_unknown(a) for a in answers) >= 7, answers  # "I don't know", not a wrong name
    assert not any(TARGET in a for a in answers)
    assert result.stopped_early and result.steps_run < result.config["steps"]


def test_retained_characters_and_text_unchanged(forgotten, embedded):
    chain, result, _ = forgotten
    others = [c.name for c in world.CHARACTERS if c.name != TARGET][:6]
    imgs = [im for n in others for im in renders(n, 2, 60, heldout=True)]
    qs = ["Who is this?"] * len(imgs)
    before, after = embedded.generate(qs, imgs), chain.vlm.generate(qs, imgs)
    assert sum(a == b for a, b in zip(before, after)) >= len(imgs) - 1
    assert result.text_identical and result.text_logits_identical
    tq = ["Where does Dravik live?", "What is Mirel's job?"]
    assert torch.equal(chain.vlm.text_logits(tq), embedded.text_logits(tq))


def test_progress_names_the_stages(forgotten):
    stages = forgotten[2]
    for s in ("reading images", "base answers", "null space", "evaluating"):
        assert s in stages
    assert any(s.startswith("step 1/") for s in stages)


def _layer_inputs(chain, layers, images):
    """Inputs of each layer as the original model computes them (the inputs the null space was built
    from), so that each layer's property is measured on its own."""
    inputs = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: inputs.setdefault(n, []).append(a[0].detach().reshape(-1, a[0].shape[-1])))
        for n, m in layers.items()
    ]
    try:
        chain.base_vlm.image_features(images)
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(x) for n, x in inputs.items()}


def test_null_space_property_on_protected_inputs(embedded, tmp_path):
    """||delta W x|| / ||W x|| <= 1e-3 on protected inputs for every projected layer, at a strict
    threshold (METHOD.md step 5), while the target's own inputs still move."""
    from nscvf.cache import Cache

    chain = UnlearningChain(embedded, Cache(tmp_path))
    cfg = UnlearnConfig(energy=1e-6, steps=20, stop_when_forgotten=False, evaluate="none")
    result = chain.forget(renders(TARGET), config=cfg)
    adapter = chain.steps[-1].adapter
    layers = lora_layers(chain.shared.peft, adapter)
    assert len(layers) == result.null_space["summary"]["layers"] > 0
    # The protected set the engine used: retain renders (seeds 2000+) and protection renders (5000+).
    protected = [im for c in world.CHARACTERS if c.name != TARGET for im in renders(c.name, 4, 5000)]
    ratios = {n: delta_ratio(layers[n], adapter, x) for n, x in _layer_inputs(chain, layers, protected).items()}
    assert max(ratios.values()) <= 1e-3, sorted(ratios.items(), key=lambda kv: -kv[1])[:3]
    target = _layer_inputs(chain, layers, renders(TARGET, 4))
    # The target's inputs move more than any protected input (at this strict threshold only ~2-3x more:
    # measured 2.5e-4 vs 9.5e-5; the default energy=5e-2 trades the 1e-3 bound for room to forget).
    assert max(delta_ratio(layers[n], adapter, x) for n, x in target.items()) > max(ratios.values())


def test_only_visual_lora_parameters_changed(forgotten, embedded):
    chain, result, _ = forgotten
    language = embedded.language_parameter_names()
    state = chain.adapter_state()
    assert state and all("lora_" in k for k in state)
    assert not any(k.removeprefix("base_model.model.").split(".lora_")[0] + ".weight" in language for k in state)


def test_continual_undo_and_reset(embedded, tmp_path):
    from nscvf.cache import Cache

    chain = UnlearningChain(embedded, Cache(tmp_path))
    cfg = UnlearnConfig(evaluate="none", steps=30)
    chain.forget(renders("Mirel"), config=cfg)
    feats1 = chain.vlm.image_features(renders("Mirel", 2, 300))[1]
    held = renders("Mirel", 6, 70, heldout=True)
    after1 = chain.vlm.generate(["Who is this?"] * 6, held)
    r2 = chain.forget(renders("Oriel"), config=cfg)
    assert r2.step == 2 and len(chain.steps) == 2 and [h["target"] for h in r2.history] == ["Mirel", "Oriel"]
    # Mirel stays forgotten after the second request: never named, and no fewer "I don't know" than after the
    # first. (Measured on the 24-character model: 4 of these 6 say "I don't know", 2 say "This is Fenna.",
    # Mirel's look-alike sibling, after both requests; the benchmark reports this as "sibling's name".)
    after2 = chain.vlm.generate(["Who is this?"] * 6, held)
    assert not any(mentions(a, "Mirel") for a in after1 + after2), (after1, after2)
    assert sum(map(is_unknown, after2)) >= max(3, sum(map(is_unknown, after1))), (after1, after2)
    chain.undo()
    assert len(chain.steps) == 1
    assert torch.allclose(chain.vlm.image_features(renders("Mirel", 2, 300))[1], feats1, atol=1e-5)
    chain.reset()
    assert not chain.steps
    base = embedded.image_features(renders("Mirel", 2, 300))[1]
    assert torch.equal(chain.vlm.image_features(renders("Mirel", 2, 300))[1], base)
    with pytest.raises(InputError, match="cannot undo to step 3"):
        chain.undo(3)


def test_cancel_leaves_chain_unchanged(embedded, tmp_path):
    from nscvf.cache import Cache

    chain = UnlearningChain(embedded, Cache(tmp_path))
    ev = threading.Event()

    def progress(stage, done, total):
        if stage.startswith("step 3/"):
            ev.set()

    with pytest.raises(Cancelled):
        chain.forget(renders("Mirel"), config=UnlearnConfig(evaluate="none"), progress=progress, cancel=ev)
    assert not chain.steps
    assert embedded.ask("Who is this?", renders("Mirel", 1)[0]) == chain.vlm.ask("Who is this?", renders("Mirel", 1)[0])


def test_bad_requests_have_clear_messages(embedded, tmp_path):
    from nscvf.cache import Cache

    chain = UnlearningChain(embedded, Cache(tmp_path))
    with pytest.raises(InputError, match="no forget images"):
        chain.forget([])
    with pytest.raises(InputError, match="x.png: file not found"):
        chain.forget([str(tmp_path / "x.png")])
    with pytest.raises(InputError, match="steps=0 is out of range"):
        chain.forget(renders("Mirel", 2), config=UnlearnConfig(steps=0))
    with pytest.raises(InputError, match="unknown method 'magic'"):
        chain.forget(renders("Mirel", 2), config=UnlearnConfig(method="magic"))
    # A retain set that leaves no null space: the message names the threshold to change.
    with pytest.raises(InputError, match="no null space.*energy"):
        chain.forget(renders("Mirel", 2), config=UnlearnConfig(energy=1e-12, evaluate="none"))
    assert not chain.steps


def test_restore_replays_a_request_and_model_at_gives_earlier_states(forgotten, embedded, tmp_path):
    """A finished request restored from its result and adapter weights (no training) is the same model;
    model_at(0) is the base and leaves the chain as it is."""
    from nscvf.cache import Cache

    chain, result, _ = forgotten
    again = UnlearningChain(embedded, Cache(tmp_path))
    again.restore(result.to_dict(), chain.adapter_state(), renders(TARGET))
    imgs = renders(TARGET, 2, 300)
    assert torch.allclose(again.vlm.image_features(imgs)[1], chain.vlm.image_features(imgs)[1], atol=1e-6)
    assert again.steps[0].target == TARGET and again.results[0].steps_run == result.steps_run
    assert again.model_at(0) is embedded and again.model_at(1) is again.vlm and len(again.steps) == 1
    with pytest.raises(InputError, match="no state 2"):
        again.model_at(2)


def test_methods_fix_their_own_settings():
    from nscvf.method.methods import method_config

    assert method_config(UnlearnConfig(method="nscvf_feature")).answer_weight == 0.0
    assert method_config(UnlearnConfig(method="nscvf_projector")).modules == "projector"
    assert method_config(UnlearnConfig(method="nscvf", answer_weight=2.0)).answer_weight == 2.0


def test_relearning_counts_steps_until_the_target_is_named_again(forgotten, embedded):
    """The relearning attack on a known-forgotten chain: a fresh visual LoRA on 2 labelled renders brings
    the name back within the budget (NSCVF hides more than it erases: measured 1-2 steps); the chain is
    untouched; on the base model (never forgot) the name is there at step 0."""
    from nscvf.method.relearn import relearn

    chain, _, _ = forgotten
    held = renders(TARGET, 6, 40, heldout=True)
    out = relearn(chain.vlm, renders(TARGET, 2), TARGET, held, steps=12)
    assert out["curve"][0] == 0.0 and out["named_at"] is not None and 1 <= out["named_at"] <= 12
    assert out["curve"][out["named_at"]] >= 0.5 and out["k"] == 2
    live = chain.shared.adapter_names()  # other tests' chains may come and go; this chain's stay, the probe's went
    assert {s.adapter for s in chain.steps} <= live and not any(a.startswith("relearn") for a in live)
    assert all(is_unknown(a) for a in chain.vlm.generate(["Who is this?"] * 3, held[:3]))
    assert relearn(embedded, renders(TARGET, 1), TARGET, held, steps=3)["named_at"] == 0
