"""Memory-bounded optimisation (issue 9), on tiny random models on the CPU: micro-batches accumulate the
one-batch gradient, activation checkpointing changes nothing but memory, the step-memory check refuses
what will not fit (fake free memory) naming what to lower, the Qwen resolution cap, and gpu_check's CPU
dry run."""

import json
import random

import pytest
import torch
from PIL import Image

from nscvf.errors import ResourceError
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.method.context import StepContext, activation_checkpointing, split
from nscvf.method.methods import method_config
from nscvf.method.request import Request, RequestState, prepare, references


def _images(n, seed, size=40):
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny():
    from nscvf.models import wrap_model
    from nscvf.models.tiny import build_llava_clip

    model, processor = build_llava_clip()
    return wrap_model(model, processor)


def _state(vlm, method: str, micro_batches: int = 1, checkpointing: str = "off") -> RequestState:
    """A request on ``vlm`` up to its references, with its LoRA weights set from a fixed seed (B nonzero, so
    that A gets a gradient too)."""
    cfg = UnlearnConfig(method=method, micro_batches=micro_batches, checkpointing=checkpointing, retain_batch=5,
                        evaluate="none", seed=3)  # fmt: skip
    cfg = method_config(cfg.validate())
    st = RequestState(UnlearningChain(vlm).snapshot(), cfg, rng=random.Random(cfg.seed))
    prepare(st, Request(_images(3, 10), _images(7, 20), cfg, target="thing", region_images=_images(6, 30)))
    references(st)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in st.before.shared.adapter_parameters(st.adapter):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return st


def _step(st: RequestState):
    """One step's loss (summed over micro-batches) and the accumulated gradient of every LoRA parameter."""
    shared = st.before.shared
    ctx = StepContext(st.work, st.cfg, st.rng, st.refs)
    params = shared.adapter_parameters(st.adapter)
    with (
        shared.using(st.work.adapters, train=True, trainable=st.adapter),
        activation_checkpointing(shared.model, st.cfg.checkpointing == "on"),
    ):
        ctx.begin_step()
        total = 0.0
        for j in range(st.cfg.micro_batches):
            ctx.micro(j)
            loss, _ = st.method.loss(ctx)
            if loss.requires_grad:
                loss.backward()
            total += loss.item()
        grads = [p.grad.detach().clone() for p in params]
        for p in params:
            p.grad = None
    shared.delete_adapters([st.adapter])
    return total, grads


def test_split_covers_every_item_once():
    assert [list(r) for r in split(5, 3)] == [[0, 1], [2, 3], [4]]
    assert [len(r) for r in split(2, 4)] == [1, 1, 0, 0]


@pytest.mark.parametrize("method", ["nscvf", "kl"])
def test_micro_batches_accumulate_the_full_batch_gradient(tiny, method):
    loss1, g1 = _step(_state(tiny, method, 1))
    # 5 micro-batches: more than the 3 forget anchors, so some micro-batches have no forget item.
    for m in (2, 5):
        loss_m, g_m = _step(_state(tiny, method, m))
        assert loss_m == pytest.approx(loss1, rel=1e-5)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(g1, g_m)), f"{method}, {m} micro-batches"
    assert any(a.abs().sum() > 0 for a in g1)


def test_checkpointing_gives_the_same_loss_and_gradient(tiny, monkeypatch):
    # Count the forwards of the vision tower's and the LLM's MLPs: recomputed in backward when on (the class's
    # forward is counted: module hooks do not run in the recomputation).
    calls = {0: 0, 1: 0}
    for k, mlp in enumerate([tiny.vision_tower().encoder.layers[0].mlp, tiny.language_model().layers[0].mlp]):
        forward = type(mlp).forward
        monkeypatch.setattr(
            type(mlp), "forward", lambda self, x, f=forward, k=k: calls.__setitem__(k, calls[k] + 1) or f(self, x)
        )
    loss_off, g_off = _step(_state(tiny, "nscvf", 1, "off"))
    off, calls[0], calls[1] = dict(calls), 0, 0
    loss_on, g_on = _step(_state(tiny, "nscvf", 1, "on"))
    assert calls[0] > off[0] and calls[1] > off[1], (off, calls)
    assert loss_on == pytest.approx(loss_off, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(g_off, g_on))
    assert all(g.abs().sum() > 0 for g in g_on), "a LoRA parameter got no gradient under checkpointing"
    # Off again after the step: the shared model is not left checkpointing for other sessions.
    assert not any(getattr(m, "gradient_checkpointing", False) for m in tiny.base.modules())
    assert not getattr(tiny.base, "_require_grads_hooks", None)


def test_a_step_that_will_not_fit_is_refused_naming_what_to_lower(tiny, monkeypatch):
    from nscvf.method import memory

    chain = UnlearningChain(tiny)
    cfg = UnlearnConfig(steps=2, evaluate="none", retain_batch=5, stop_when_forgotten=False)
    adapters = set(chain.shared.adapter_names())
    monkeypatch.setattr(memory, "free_memory", lambda device: 2**20)  # a 1 MiB card
    with pytest.raises(ResourceError, match="micro_batches|retain_batch") as e:
        chain.forget(_images(3, 10), _images(7, 20), cfg, target="thing")
    assert "retain_batch" in str(e.value) and "image resolution" in str(e.value) and "\n" not in str(e.value)
    assert len(chain) == 0 and chain.shared.adapter_names() == adapters

    # Enough for 4 micro-batches but not one: the message names the micro_batches that fits.
    monkeypatch.setattr(memory, "free_memory", lambda device: None)
    st = _state(tiny, "nscvf", 1)
    reads = st.method.answer_batches
    one = memory.step_bytes(st.work, st.cfg, st.refs, False, 1, reads)
    four = memory.step_bytes(st.work, st.cfg, st.refs, False, 4, reads)
    st.before.shared.delete_adapters([st.adapter])
    assert four < one
    monkeypatch.setattr(memory, "free_memory", lambda device: four)
    with pytest.raises(ResourceError, match=r"raise micro_batches to [234]\b"):
        chain.forget(_images(3, 10), _images(7, 20), cfg, target="thing")
    r = chain.forget(_images(3, 10), _images(7, 20), cfg.replace(micro_batches=4), target="thing")
    assert r.steps_run == 2 and r.timings["step_memory_estimate_gib"] > 0


def test_qwen_resolution_cap_gives_fewer_visual_tokens(monkeypatch):
    from transformers import Qwen2VLImageProcessorPil

    from nscvf.models import wrap_model
    from nscvf.models.qwen2vl import Qwen2VLModel
    from nscvf.models.tiny import QWEN_MERGE, QWEN_PATCH, build_qwen2_vl

    model, processor = build_qwen2_vl()
    processor.image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 28 * 28, "longest_edge": 112 * 112}, patch_size=QWEN_PATCH, merge_size=QWEN_MERGE,
        temporal_patch_size=2,
    )  # fmt: skip
    vlm = wrap_model(model, processor)
    big = _images(1, 5, size=200)
    monkeypatch.setattr(Qwen2VLModel, "unlearn_max_pixels", None)
    full = vlm.image_features(big)[0][0].shape[0]
    monkeypatch.setattr(Qwen2VLModel, "unlearn_max_pixels", 56 * 56)
    capped = vlm.image_features(big)[0][0].shape[0]
    assert capped < full and capped == (56 // (QWEN_PATCH * QWEN_MERGE)) ** 2
    # The prompt's image tokens follow the same cap (answers and the answer term see what the features see).
    batch = vlm.encode([vlm.prompt("Who is this?", True)], big, "right")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == capped
    assert processor.image_processor.size.longest_edge == 112 * 112  # the shared processor is not changed
    assert vlm.ask("Who is this?", big[0]) is not None


def test_zerogpu_duration():
    from nscvf.models.budget import family_duration, zerogpu_duration
    from nscvf.models.qwen2vl import Qwen2VLModel

    assert zerogpu_duration(20, 1.5, 30, margin=1.0) == 60
    assert zerogpu_duration(2000) == 300
    assert family_duration(Qwen2VLModel, 40) == zerogpu_duration(40, Qwen2VLModel.step_seconds, Qwen2VLModel.fixed_seconds)


def test_gpu_check_dry_run_on_cpu(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu.json"
    gpu_check.main(["--dry-run-cpu", "--size", "tiny", "--steps", "2", "--forget", "2", "--retain", "4", "--json", str(out)])
    data = json.loads(out.read_text())
    keys = {"card", "dtype", "peak_gib", "extra_session_gib", "null_space_s", "s_per_step", "reprojection_share",
            "request_s", "steps"}  # fmt: skip
    for arch in ("llava", "qwen2vl"):
        assert keys <= set(data["gpu"][arch]), arch
        assert data["gpu"][arch]["steps"] == 2 and data["gpu"][arch]["card"] == "cpu"
        zg = data["gpu"][arch]["zerogpu"]  # the ZeroGPU-shaped call: CPU adapter back, the same weights (CPU)
        assert zg["on_cpu"] and zg["same_weights_as_direct"] and zg["duration_asked_s"] > 0
