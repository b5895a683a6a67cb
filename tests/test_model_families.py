"""Contract tests over every supported model family (timm-style): tiny random-weight models, offline, CPU.

Each family is built by ``nscvf/models/tiny.py``, saved, and loaded back through ``nscvf.models.load_model``,
the one loading path the CLI and the app use.
"""

from __future__ import annotations

import json

import peft
import pytest
import torch
from PIL import Image

from nscvf.models import FAMILIES, VisionLanguageModel, load_model, wrap_model
from nscvf.models.qwen2vl import Qwen2VLModel
from nscvf.models.registry import register
from nscvf.models.tiny import BUILDERS, qwen_processor, save_tiny

FAMILY_IDS = list(BUILDERS)
QUESTIONS = ["Where does Ann live?", "What food does the person in this picture like to eat most?"]


def _images():
    # Different sizes and aspect ratios: Qwen turns them into different numbers of visual tokens.
    return [Image.new("RGB", (40, 40), (200, 30, 30)), Image.new("RGB", (64, 48), (10, 200, 30))]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices: one thread is fastest, and on a busy machine two threads wait on each other for
    # milliseconds per op (a 100x slowdown seen beside a training run).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=FAMILY_IDS)
def saved(request, tmp_path_factory):
    """(family id, checkpoint folder, the in-memory model and processor that were saved there)."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    model, processor = save_tiny(name, out)
    return name, out, model, processor


@pytest.fixture(scope="module")
def vlm(saved):
    """The saved checkpoint loaded back; shared and never modified (LoRA tests load their own copy)."""
    return load_model(str(saved[1]), device="cpu", dtype="float32")


def _lora(vlm, r: int = 4):
    config = peft.LoraConfig(target_modules=vlm.visual_linear_names(), r=r, lora_alpha=8, lora_dropout=0.0)
    vlm.model = peft.get_peft_model(vlm.model, config)
    return vlm


def _lora_params(vlm):
    return {n: p for n, p in vlm.model.named_parameters() if "lora_" in n}


def _perturb_lora(vlm, seed: int = 1):
    """A nonzero LoRA update (lora_B starts at zero, so a fresh adapter is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in _lora_params(vlm).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ---------------------------------------------------------------- loading


def test_save_load_round_trip_is_bit_exact(saved, vlm):
    _, _, model, processor = saved
    before = wrap_model(model, processor)
    for images in (_images(), None):
        a, b = before._inputs(QUESTIONS, images), vlm._inputs(QUESTIONS, images)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"processor output {k!r} changed across save/load"
        with torch.no_grad():
            assert torch.equal(model(**a).logits, vlm.model(**b).logits)
    assert before.fingerprint == vlm.fingerprint


def test_wrap_model_picks_the_family_adapter(saved, vlm):
    name, _, model, processor = saved
    expected = BUILDERS[name][1]
    assert vlm.family == expected
    assert wrap_model(model, processor).family == expected
    assert isinstance(vlm, FAMILIES[model.config.model_type])


def test_registry_refuses_a_second_adapter_for_a_model_type():
    class Other(VisionLanguageModel):
        model_types = ("llava",)

    with pytest.raises(ValueError, match="'llava' is already handled by LlavaModel"):
        register(Other)
    assert FAMILIES["llava"].__name__ == "LlavaModel"


@pytest.mark.parametrize("stock", ["Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor"])
def test_qwen_checkpoint_naming_the_stock_processor_loads(stock, tmp_path):
    """Hub checkpoints name the stock processor, which transformers 5 cannot build without torchvision
    (it insists on a video processor); the adapter falls back to the image-and-text processor."""
    qwen_processor().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "processor_config.json").read_text())
    (tmp_path / "processor_config.json").write_text(json.dumps({**cfg, "processor_class": stock}))
    loaded = Qwen2VLModel.load_processor(str(tmp_path))
    out = loaded(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=_images()[:1], return_tensors="pt")
    assert (out["input_ids"] == loaded.image_token_id).sum() == out["image_grid_thw"].prod() // 4


# ---------------------------------------------------------------- answering


def test_generate_batched_matches_one_by_one(vlm):
    for images in (_images(), None):
        batched = vlm.generate(QUESTIONS, images, max_new_tokens=6)
        assert len(batched) == len(QUESTIONS) and all(isinstance(a, str) for a in batched)
        single = [vlm.ask(q, None if images is None else images[i], max_new_tokens=6) for i, q in enumerate(QUESTIONS)]
        assert batched == single, "left padding changed an answer"


def test_score_answers_batched_matches_one_by_one(vlm):
    answers = ["Paris", "a much longer answer than that"]
    for image in (_images()[0], None):
        together = vlm.score_answers(QUESTIONS[0], answers, image)
        assert together.shape == (2,) and torch.isfinite(together).all()
        alone = torch.cat([vlm.score_answers(QUESTIONS[0], [a], image) for a in answers])
        torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-5)


def test_text_logits_ignore_padding(vlm):
    batched = vlm.text_logits(QUESTIONS)
    single = torch.cat([vlm.text_logits([q]) for q in QUESTIONS])
    assert batched.shape == (2, vlm.base.config.get_text_config().vocab_size)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------- visual module


def test_image_features_shapes(vlm):
    tokens, pooled = vlm.image_features(_images())
    hidden = vlm.base.config.get_text_config().hidden_size
    assert len(tokens) == 2
    assert all(t.ndim == 2 and t.shape[0] > 0 and t.shape[1] == hidden for t in tokens)
    assert pooled.shape == (2, hidden)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(2))
    # One feature per visual token the LLM sees: the processor's placeholder count for that image.
    for t, image in zip(tokens, _images()):
        batch = vlm._inputs(QUESTIONS[:1], [image])
        assert t.shape[0] == (batch["input_ids"] == vlm.base.config.image_token_id).sum()
    # Images processed one by one and collated project like a batch (Qwen: patches and grids concatenate).
    with torch.no_grad():
        collated = vlm.project_images(vlm.collate([vlm.image_inputs([im]) for im in _images()]))
    for a, b in zip(collated, tokens):
        torch.testing.assert_close(a.float(), b, atol=1e-5, rtol=1e-5)


def test_visual_linear_names_cover_only_the_visual_module(vlm):
    names = vlm.visual_linear_names()
    assert names and len(names) == len(set(names))
    modules = dict(vlm.base.named_modules())
    assert all(isinstance(modules[n], torch.nn.Linear) for n in names)
    visual_prefixes = tuple(p + "." for p in vlm.visual_modules())
    assert all(n.startswith(visual_prefixes) for n in names)
    projector = next(n for n, m in modules.items() if m is vlm.projector())
    assert any(n.startswith(projector + ".") for n in names), "the projector must be tuned"
    if vlm.family == "qwen2_vl":
        assert all(n.startswith("model.visual.") for n in names)
        assert any(n.startswith("model.visual.merger.") for n in names)
    # Every parameter is visual or language (so "no language parameter is trainable" means something).
    language = vlm.language_parameter_names()
    visual = {n for n, _ in vlm.base.named_parameters() if n.startswith(visual_prefixes)}
    assert language and not language & visual
    assert language | visual == {n for n, _ in vlm.base.named_parameters()}


# ---------------------------------------------------------------- LoRA on the visual module


@pytest.fixture
def lora_vlm(saved):
    """A fresh copy with LoRA on every visual linear (peft edits the model in place)."""
    vlm = load_model(str(saved[1]), device="cpu", dtype="float32")
    base_text_logits = vlm.text_logits(QUESTIONS)
    base_tokens, _ = vlm.image_features(_images())
    names = vlm.visual_linear_names()
    _lora(vlm)
    return vlm, names, base_text_logits, base_tokens


def test_lora_leaves_no_language_parameter_trainable(lora_vlm):
    vlm, names, _, _ = lora_vlm
    trainable = {n.removeprefix("base_model.model.") for n, p in vlm.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not trainable & vlm.language_parameter_names()
    assert all(p.requires_grad is False for n, p in vlm.base.named_parameters() if n in vlm.language_parameter_names())
    assert vlm.visual_linear_names() == names, "names must not change once LoRA is attached"


def test_lora_update_changes_images_not_text(lora_vlm):
    vlm, _, base_text_logits, base_tokens = lora_vlm
    _perturb_lora(vlm)
    tokens, _ = vlm.image_features(_images())
    assert [t.shape for t in tokens] == [t.shape for t in base_tokens]
    assert not any(torch.allclose(a, b) for a, b in zip(tokens, base_tokens))
    assert torch.equal(vlm.text_logits(QUESTIONS), base_text_logits), "text never passes through the visual module"
    answers = vlm.generate(QUESTIONS, _images(), max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_lora_forward_backward_gives_every_lora_parameter_a_gradient(lora_vlm):
    vlm, _, _, _ = lora_vlm
    _perturb_lora(vlm)  # with lora_B = 0 every lora_A gradient would be exactly zero
    vlm.model.train()
    # The answer loss on image questions: its gradient reaches every visual linear whose output the LLM reads
    # (the projector tokens, and Qwen3-VL's DeepStack features added inside the LLM).
    batch = vlm._inputs(QUESTIONS, _images())
    vlm.model(**batch, labels=batch["input_ids"]).loss.backward()
    params = _lora_params(vlm)
    assert params
    for n, p in params.items():
        assert p.grad is not None, f"{n}: no gradient (module not on the path to the LLM)"
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, f"{n}: zero gradient"
