"""One base model per process: chains are adapters on it, never copies. Tiny random LLaVA (a generic,
non-world model), so every request takes a second or two."""

import subprocess
import sys
import threading

import pytest
import torch
from PIL import Image

from nscvf.errors import Cancelled, InputError, ResourceError
from nscvf.method import UnlearnConfig, UnlearningChain

CFG = UnlearnConfig(steps=3, stop_when_forgotten=False, evaluate="none", retain_batch=4, energy=5e-2)


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(n)]


@pytest.fixture
def tiny():
    """A fresh tiny model per test: the shared base (and its adapters) lives with the model object."""
    from nscvf.models import wrap_model
    from nscvf.models.tiny import build_llava_clip

    model, processor = build_llava_clip()
    return wrap_model(model, processor)


def _base_storage(vlm):
    return {p.data_ptr() for p in vlm.base.parameters()}


def _snapshot(vlm):
    return {n: p.detach().clone() for n, p in vlm.base.named_parameters() if "lora_" not in n}


def _unchanged(vlm, snap):
    params = {n.replace(".base_layer", ""): p for n, p in vlm.base.named_parameters() if "lora_" not in n}
    return set(params) == set(snap) and all(torch.equal(params[n], v) for n, v in snap.items())


def test_chains_share_the_base_and_never_change_it(tiny):
    snap, storage = _snapshot(tiny), _base_storage(tiny)
    retain = _images(6, 1)
    chains = [UnlearningChain(tiny) for _ in range(3)]
    results = [c.forget(_images(3, 10 + i), retain, CFG, target=f"thing{i}") for i, c in enumerate(chains)]
    for c in chains:
        nonlora = [p for n, p in c.vlm.model.named_parameters() if "lora_" not in n]
        assert nonlora and all(p.data_ptr() in storage for p in nonlora), "a chain holds a copy of a base parameter"
    assert _unchanged(tiny, snap)
    # Each chain answers with its own adapter: features differ between chains and from the base.
    probe = _images(2, 99)
    feats = [c.vlm.image_features(probe)[1] for c in chains]
    assert not torch.allclose(feats[0], feats[1]) and not torch.allclose(feats[0], tiny.image_features(probe)[1])
    assert [r.target for r in results] == ["thing0", "thing1", "thing2"]
    chains[0].undo()
    assert _unchanged(tiny, snap) and torch.equal(chains[0].vlm.image_features(probe)[1], tiny.image_features(probe)[1])
    assert torch.equal(chains[1].vlm.image_features(probe)[1], feats[1])  # other chains untouched by an undo


def test_failed_and_cancelled_requests_leave_no_trace(tiny, monkeypatch):
    from nscvf.method.methods.nscvf import NSCVF

    snap = _snapshot(tiny)
    chain = UnlearningChain(tiny)
    chain.forget(_images(3, 5), _images(6, 1), CFG, target="first")
    probe = _images(2, 99)
    before = chain.vlm.image_features(probe)[1]
    adapters = chain.shared.adapter_names()
    ev = threading.Event()
    with pytest.raises(Cancelled):
        chain.forget(_images(3, 6), _images(6, 1), CFG, progress=lambda s, d, n: s.startswith("step 2/") and ev.set(), cancel=ev)
    calls = []

    def boom(self, ctx):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, ctx)

    original = NSCVF.loss
    monkeypatch.setattr(NSCVF, "loss", boom)
    with pytest.raises(ResourceError, match=r"out of memory at 'step 2/3'.*the model is unchanged") as e:
        chain.forget(_images(3, 6), _images(6, 1), CFG)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(NSCVF, "loss", original)
    assert len(chain) == 1 and chain.shared.adapter_names() == adapters and _unchanged(tiny, snap)
    assert torch.equal(chain.vlm.image_features(probe)[1], before)
    r = chain.forget(_images(3, 6), _images(6, 1), CFG, target="second")  # the next request works
    assert r.step == 2 and len(chain) == 2 and _unchanged(tiny, snap)


def test_closed_chain_frees_its_adapters(tiny):
    chain = UnlearningChain(tiny)
    chain.forget(_images(3, 5), _images(6, 1), CFG)
    assert len(chain.shared.adapter_names()) == 1
    view = chain.vlm
    chain.close()
    assert chain.shared.adapter_names() == set() and len(chain) == 0
    with pytest.raises(RuntimeError, match="no longer exist"):
        view.image_features(_images(1, 3))  # a view of an undone state says so instead of answering wrongly


def test_padding_side_is_never_mutated_by_wraps_on_other_threads(tiny):
    from nscvf.method.context import teacher_forcing_batch
    from nscvf.models import wrap_model

    tok = tiny.tokenizer
    side = tok.padding_side
    stop = threading.Event()

    def wrap_forever():
        while not stop.is_set():
            wrap_model(tiny.base, tiny.processor)

    t = threading.Thread(target=wrap_forever)
    t.start()
    try:
        for _ in range(20):
            batch = teacher_forcing_batch(tiny, [(_images(1, 2)[0], "Who is this?", "a"), (_images(1, 3)[0], "What?", "a b c d")])
            assert (batch["attention_mask"][:, 0] == 1).all(), "teacher-forcing batch not right-padded"
            assert tok.padding_side == side
    finally:
        stop.set()
        t.join()


def test_generic_chain_with_a_named_target_saves_loads_and_continues(tiny, tmp_path):
    retain = _images(6, 1)
    live = UnlearningChain(tiny)
    live.forget(_images(3, 5), retain, CFG, target="Widget")
    live.save(tmp_path / "saved")
    loaded = UnlearningChain.load(tiny, tmp_path / "saved")
    probe = _images(2, 99)
    assert loaded.forgotten_targets == ["Widget"]
    assert torch.allclose(loaded.vlm.image_features(probe)[1], live.vlm.image_features(probe)[1], atol=1e-6)
    # The next request sees the same protected set on both, so it trains the same adapter.
    a = live.forget(_images(3, 7), retain, CFG, target="Gadget")
    b = loaded.forget(_images(3, 7), retain, CFG, target="Gadget")
    assert a.null_space["summary"] == b.null_space["summary"]
    sa, sb = live.adapter_state(), loaded.adapter_state()
    assert sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


def test_generic_model_requires_retain_images(tiny):
    with pytest.raises(InputError, match="retain images are required"):
        UnlearningChain(tiny).forget(_images(2, 5), None, CFG)


def test_config_imports_without_torch():
    code = "import sys, nscvf.method.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_stop_signal_keeps_a_partial_request(tiny):
    stop = threading.Event()
    chain = UnlearningChain(tiny)
    cfg = CFG.replace(steps=10)
    r = chain.forget(
        _images(3, 5), _images(6, 1), cfg, progress=lambda s, d, n: s.startswith("step 3/") and stop.set(), stop=stop
    )
    assert r.partial and r.steps_run == 3 and len(chain) == 1  # set while step 3 starts: step 3 runs
    assert not torch.equal(chain.vlm.image_features(_images(1, 9))[1], tiny.image_features(_images(1, 9))[1])


def test_export_import_round_trip_and_foreign_base_refused(tiny, tmp_path):
    from nscvf.models import wrap_model
    from nscvf.models.tiny import build_llava_clip

    chain = UnlearningChain(tiny)
    chain.forget(_images(3, 5), _images(6, 1), CFG, target="Widget")
    chain.forget(_images(3, 8), _images(6, 1), CFG, target="Gadget")
    path = chain.export(tmp_path / "timeline.zip")
    again = UnlearningChain.load(tiny, path)
    probe = _images(3, 99)
    assert again.forgotten_targets == ["Widget", "Gadget"] and len(again.results) == 2
    assert torch.allclose(again.vlm.image_features(probe)[1], chain.vlm.image_features(probe)[1], atol=1e-6)
    q = ["Who is this?"] * 3
    assert again.vlm.generate(q, probe) == chain.vlm.generate(q, probe)
    import zipfile

    card = zipfile.ZipFile(path).read("README.md").decode()
    assert "base_fingerprint: " + chain.shared.fingerprint in card and "Widget" in card and "retain drift" in card
    other = wrap_model(*build_llava_clip(seed=1))
    with pytest.raises(InputError, match="timeline.zip: made for another base model"):
        UnlearningChain.load(other, path)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.zip: not a zip file"):
        UnlearningChain.load(tiny, tmp_path / "bad.zip")


def test_using_selects_its_own_state_and_restores_the_enclosing_one(tiny):
    """The outermost ``using`` leaves its adapters and mode (every use selects its own; issue 20); a nested
    one restores the enclosing block's, so that its body goes on with its own adapters and mode."""
    from nscvf.method.shared import SharedBase

    a, b = UnlearningChain(tiny), UnlearningChain(tiny)
    a.forget(_images(3, 10), _images(4, 1), CFG.replace(steps=1), target="a")
    b.forget(_images(3, 11), _images(4, 1), CFG.replace(steps=1), target="b")
    shared, probe = SharedBase.of(tiny), _images(2, 99)
    alone = {"a": a.vlm.image_features(probe)[1], "b": b.vlm.image_features(probe)[1], "base": tiny.image_features(probe)[1]}
    names_a = a.vlm.adapters
    with shared.using(names_a, train=True):
        assert shared.model.training
        assert torch.equal(b.vlm.image_features(probe)[1], alone["b"])  # nested: b's adapters, eval mode
        assert shared._active == names_a and shared.model.training  # a's again, in training mode
        with torch.no_grad():
            inside = a.vlm.project_images(a.vlm.image_inputs(probe))  # the enclosing block's own state
    assert all(m.training for m in shared.model.modules())
    with shared.using(names_a):
        ref = a.vlm.project_images(a.vlm.image_inputs(probe))
    assert all(torch.equal(x, y) for x, y in zip(inside, ref))  # LoRA dropout is 0: train mode changes nothing here
    # After the outermost block, the next call of any state selects its own adapters and mode.
    for key, vlm in (("base", tiny), ("b", b.vlm), ("a", a.vlm), ("base", tiny)):
        assert torch.equal(vlm.image_features(probe)[1], alone[key]), key
        assert not any(m.training for m in shared.model.modules())


def test_calls_run_with_the_domains_cpu_threads_and_give_the_caller_its_own_back(tiny, monkeypatch):
    """A model whose domain names ``cpu_threads`` (the embedded world model: 1, measured faster on 2 cores)
    runs every call and training step with that many torch threads, in the calling thread only, and the
    caller's own count is back afterwards; a domain that names none leaves torch's count alone (issue 20). The
    null space's eigendecompositions, outside any call, run with the model's count too."""
    from nscvf.method import request
    from nscvf.method.domain import Domain
    from nscvf.method.shared import SharedBase

    seen, eigh = [], []
    original, spaces = SharedBase._activate, request.null_spaces

    def spy(self, names):
        seen.append(torch.get_num_threads())
        return original(self, names)

    def spy_spaces(*a, **k):
        eigh.append(torch.get_num_threads())
        return spaces(*a, **k)

    monkeypatch.setattr(SharedBase, "_activate", spy)
    monkeypatch.setattr(request, "null_spaces", spy_spaces)
    own = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(Domain, "cpu_threads", 1)
        shared = SharedBase.of(tiny)
        assert shared.threads == 1
        UnlearningChain(tiny).forget(_images(3, 10), _images(4, 1), CFG.replace(steps=2), target="a")
        assert seen and set(seen) == {1}  # every outermost call: its adapters selected with one thread
        assert eigh == [1]  # the request's null spaces too
        assert torch.get_num_threads() == 2  # the caller's count again
        seen.clear()
        shared.threads = None  # a domain that names no count
        tiny.image_features(_images(2, 5))
        assert seen and set(seen) == {2}
    finally:
        torch.set_num_threads(own)


def test_cpu_threads_setting_overrides_the_domains_and_says_what_it_accepts(tiny, monkeypatch):
    """``NSCVF_CPU_THREADS``: a count, 0 for torch's own, anything else refused with what to write."""
    from nscvf.method.domain import Domain
    from nscvf.method.shared import cpu_threads

    monkeypatch.setattr(Domain, "cpu_threads", 1)
    assert cpu_threads(tiny) == 1
    monkeypatch.setenv("NSCVF_CPU_THREADS", "3")
    assert cpu_threads(tiny) == 3
    monkeypatch.setenv("NSCVF_CPU_THREADS", "0")
    assert cpu_threads(tiny) is None
    monkeypatch.setenv("NSCVF_CPU_THREADS", "two")
    with pytest.raises(ValueError, match="whole number"):
        cpu_threads(tiny)


@pytest.mark.parametrize("method", ["nscvf", "npo", "kl"])
def test_a_request_builds_only_the_answer_batches_its_loss_reads(tiny, monkeypatch, method):
    """The references hold the method's answer batches and their reference log-probabilities, no others:
    NSCVF reads "forget_unknown" alone, so it spends no forward pass on the others (issue 20)."""
    from nscvf.method import request
    from nscvf.method.methods import get_method

    kept = {}
    references = request.references

    def spy(st):
        references(st)
        kept.update(st.refs.get("answers") or {})

    monkeypatch.setattr(request, "references", spy)
    UnlearningChain(tiny).forget(_images(3, 10), _images(4, 1), CFG.replace(steps=1, method=method), target="a")
    reads = set(get_method(method, CFG.replace(method=method)).answer_batches)
    refs = {"forget_original": {"forget_ref_logp"}, "retain_original": {"retain_ref_logprobs"}}
    assert reads and set(kept) == reads | {r for b in reads for r in refs.get(b, ())}


def test_a_collected_chain_frees_its_adapters_at_the_next_safe_point_not_inside_the_lock(tiny):
    """A chain's finalizer runs wherever the garbage collector does: once inside the model's lock while peft
    iterated the modules (set_peft_model_state_dict: "dictionary changed size during iteration"). It only dooms
    the adapters; the next call deletes them."""
    import gc

    from nscvf.method.shared import SharedBase

    shared = SharedBase.of(tiny)
    before = shared.adapter_names()
    chain = UnlearningChain(tiny)
    chain.forget(_images(3, 10), _images(4, 1), CFG.replace(steps=1), target="a")
    live = set(chain.shared.adapter_names()) - before
    assert live
    with shared.lock:  # as if the collection came in the middle of a state-dict load
        del chain
        gc.collect()
        assert live <= set(shared.peft.peft_config), "deleted inside the lock"
        assert set(shared._doomed) == live
    tiny.image_features(_images(1, 2))  # the next call: a safe point
    assert shared.adapter_names() == before and not shared._doomed
