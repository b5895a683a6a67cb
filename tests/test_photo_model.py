"""The photo model's tower (issue 17) on tiny random weights: it loads as a real LLaVA, trains with peft LoRA
on its 1x1 convolutions only, and the null space holds on those convolutions."""

import numpy as np
import pytest
import torch
from PIL import Image

from nscvf.method.config import UnlearnConfig
from nscvf.method.lora import lora_config
from nscvf.method.nullspace import (
    CovarianceCollector,
    delta_ratio,
    layer_input_rows,
    lora_layers,
    null_spaces,
    project_lora_A,
)
from nscvf.models import load_model, wrap_model
from nscvf.models.efficientnet import EfficientNetLiteConfig, EfficientNetLiteVisionModel, convert_package_weights
from nscvf.models.photo import build_tiny


def _images(n, seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_photo():
    model, processor = build_tiny(seed=0)
    return wrap_model(model, processor)


def test_tower_gives_tokens_of_its_feature_map(tiny_photo):
    tokens, pooled = tiny_photo.image_features(_images(2))
    cfg = tiny_photo.base.config
    assert cfg.vision_feature_select_strategy == "full"
    side = 32 // cfg.vision_config.patch_size
    n = side * side + 1  # the spatial tokens and their global average pool (the ImageNet head's input)
    assert tokens[0].shape == (n, cfg.text_config.hidden_size)
    assert cfg.image_seq_length == n and tiny_photo.processor.num_additional_image_tokens == 1
    assert pooled.shape == (2, cfg.text_config.hidden_size)
    tower = tiny_photo.vision_tower()
    out = tower(torch.rand(1, 3, 32, 32))
    t = out.hidden_states[-1]
    assert t.shape == (1, n, cfg.vision_config.hidden_size)
    torch.testing.assert_close(t[:, -1], t[:, :-1].mean(1))  # the last token is the spatial ones' mean
    torch.testing.assert_close(tower.class_logits(t), tower.classifier(t[:, -1]))  # the head's logits unchanged


def test_pooled_token_alone_is_one_image_token_and_loads_back(tmp_path):
    vlm = wrap_model(*build_tiny(seed=2, image_tokens="pooled"))
    cfg = vlm.base.config
    assert cfg.image_seq_length == 1
    ims = _images(2, seed=3)
    tokens, _ = vlm.image_features(ims)
    assert tokens[0].shape == (1, cfg.text_config.hidden_size)
    pv = vlm.processor.image_processor(images=ims, return_tensors="pt")["pixel_values"]
    tower = vlm.vision_tower()
    torch.testing.assert_close(tower(pv).hidden_states[-1][:, 0], tower(pv).pooler_output)
    vlm.base.save_pretrained(tmp_path)
    vlm.processor.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.base.config.image_seq_length == 1 and not loaded.vision_tower().config.spatial_tokens
    q = ["What is this?"] * 2
    assert vlm.generate(q, ims, max_new_tokens=4) == loaded.generate(q, ims, max_new_tokens=4)


def test_head_token_is_the_heads_probabilities_and_loads_back(tmp_path):
    vlm = wrap_model(*build_tiny(seed=4, image_tokens="head"))
    cfg = vlm.base.config
    assert cfg.image_seq_length == 1 and vlm.vision_tower().config.head_token
    ims = _images(3, seed=5)
    pv = vlm.processor.image_processor(images=ims, return_tensors="pt")["pixel_values"]
    tower = vlm.vision_tower()
    with torch.no_grad():
        out = tower(pv)
    t = out.hidden_states[-1]
    k = cfg.vision_config.num_classes
    assert t.shape == (3, 1, cfg.vision_config.hidden_size)
    torch.testing.assert_close(t[:, 0, :k], tower.classifier(out.pooler_output).softmax(-1))
    assert float(t[:, 0, k:].abs().max()) == 0.0  # zero padding after the classes
    # class_logits from the head token: the same softmax as the head's own logits
    torch.testing.assert_close(tower.class_logits(t).softmax(-1), tower.classifier(out.pooler_output).softmax(-1))
    vlm.base.save_pretrained(tmp_path)
    vlm.processor.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.vision_tower().config.image_tokens_kind == "head"
    q = ["What is this?"] * 3
    assert vlm.generate(q, ims, max_new_tokens=4) == loaded.generate(q, ims, max_new_tokens=4)


def test_round_trip_through_save_and_from_pretrained(tiny_photo, tmp_path):
    torch.manual_seed(5)
    for m in tiny_photo.vision_tower().modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # trained statistics (buffers) must load too, not be re-initialised
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    tiny_photo.base.save_pretrained(tmp_path)
    tiny_photo.processor.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert type(loaded.vision_tower()).__name__ == "EfficientNetLiteVisionModel"
    a, b = tiny_photo.base.state_dict(), loaded.base.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    ims = _images(3, seed=1)
    assert torch.equal(tiny_photo.image_features(ims)[1], loaded.image_features(ims)[1])
    q = ["What is this?"] * 3
    assert tiny_photo.generate(q, ims, max_new_tokens=4) == loaded.generate(q, ims, max_new_tokens=4)


def test_lora_on_the_last_1x1_convs_and_projector_gets_the_only_gradients():
    from peft import get_peft_model

    model, processor = build_tiny(seed=1)
    vlm = wrap_model(model, processor)
    targets = vlm.visual_linear_names()
    convs = [t for t in targets if "vision_tower" in t]
    assert convs and all(isinstance(vlm.base.get_submodule(t), torch.nn.Conv2d) for t in convs)
    assert all(vlm.base.get_submodule(t).kernel_size == (1, 1) for t in convs)
    assert any("multi_modal_projector" in t for t in targets)
    peft_model = get_peft_model(model, lora_config(vlm, UnlearnConfig()))
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:  # B starts at zero: give it values so that A's gradient is not zero too
            p.data.normal_(0, 0.1)
    batch = vlm.encode([vlm.prompt("What is this?", True) + " This is a cat."], _images(1), "right")
    peft_model(**batch, labels=batch["input_ids"]).loss.backward()
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.grad is not None}
    assert set(grads) == trainable
    assert all(g.abs().sum() > 0 for g in grads.values())
    assert any("vision_tower" in n for n in grads)


def test_conv_rows_are_what_the_weight_multiplies():
    conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 3, 9, 9)
    rows = layer_input_rows(conv, x)
    expect = conv(x).permute(0, 2, 3, 1).reshape(-1, 5)
    assert torch.allclose(rows @ conv.weight.reshape(5, -1).T, expect, atol=1e-5)
    one = torch.nn.Conv2d(3, 4, 1, bias=False)
    assert torch.allclose(layer_input_rows(one, x) @ one.weight.reshape(4, -1).T, one(x).permute(0, 2, 3, 1).reshape(-1, 4))


def test_null_space_holds_on_the_conv_layers():
    """||delta W x|| / ||W x|| ~ 0 on protected inputs for every LoRA conv and linear once A is projected
    (METHOD.md null space, step 5), while other inputs still move."""
    from peft import get_peft_model

    model, processor = build_tiny(seed=2)
    vlm = wrap_model(model, processor)
    peft_model = get_peft_model(model, lora_config(vlm, UnlearnConfig()))
    layers = lora_layers(peft_model, "default")
    assert any(isinstance(m.base_layer, torch.nn.Conv2d) for m in layers.values())
    protected = vlm.image_inputs(_images(1, seed=3, size=(32, 32)))  # one image: 16 or fewer rows per layer
    with torch.no_grad(), CovarianceCollector(layers) as col:
        vlm.project_images(protected)
    spaces = null_spaces(col.covariances(), relative_threshold=1e-10)  # the exact null space of few rows
    torch.manual_seed(0)
    for m in layers.values():
        m.lora_A["default"].weight.data.normal_()
        m.lora_B["default"].weight.data.normal_()
    project_lora_A(layers, spaces, "default")
    seen: dict[str, list] = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: seen.setdefault(n, []).append(layer_input_rows(mod, a[0])))
             for n, m in layers.items()]  # fmt: skip
    with torch.no_grad(), peft_model.disable_adapter():
        vlm.project_images(protected)
        vlm.project_images(vlm.image_inputs(_images(3, seed=9, size=(32, 32))))
    for h in hooks:
        h.remove()
    convs = [n for n, m in layers.items() if isinstance(m.base_layer, torch.nn.Conv2d) and spaces[n].kept_rank > 0]
    assert len(convs) >= 2  # the wider 1x1 convs have more input channels than one image has positions
    for n in convs:
        mine, other = seen[n]
        assert delta_ratio(layers[n], "default", mine) < 1e-3, n
        assert delta_ratio(layers[n], "default", other) > 1e-2, n


def test_tower_matches_the_package_on_its_weights():
    """Our module computes what efficientnet-lite-pytorch's does (random weights; the package is the build extra)."""
    pkg = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    ref = pkg.EfficientNet.from_name("efficientnet-lite0", image_size=64).eval()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial running statistics
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = EfficientNetLiteVisionModel(EfficientNetLiteConfig(image_size=64)).eval()
    ours.load_state_dict(convert_package_weights(ref.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ref(x), ours.class_logits(ours(x).hidden_states[-1]), atol=1e-4)


def test_a_chain_on_the_tower_saves_exports_and_loads_back(tmp_path):
    """The archive checks adapter tensor shapes against the base model's LoRA layers: conv LoRA pairs too."""
    from nscvf.method import UnlearningChain

    vlm = wrap_model(*build_tiny(seed=6))
    chain = UnlearningChain(vlm)
    cfg = UnlearnConfig(steps=2, stop_when_forgotten=False, evaluate="none")
    chain.forget(_images(3, seed=7), retain_images=_images(4, seed=8), config=cfg, target="a thing")
    saved = chain.save(tmp_path / "saved")
    zipped = chain.export(tmp_path / "chain.zip")
    for source in (saved, zipped):
        loaded = UnlearningChain.load(vlm, source)
        assert loaded.state_fingerprint == chain.state_fingerprint
        a, b = chain.adapter_state(), loaded.adapter_state()
        assert any(v.dim() == 4 for v in a.values())  # the tower's conv LoRA weights are in it
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_prefix_is_remembered_per_image_and_never_under_an_adapter():
    from peft import LoraConfig, get_peft_model

    model, _ = build_tiny(seed=9)
    tower = model.model.vision_tower
    x = torch.rand(3, 3, 32, 32)
    want = tower._prefix(x)
    got = tower.frozen_prefix(x)  # computed and remembered
    torch.testing.assert_close(got, want)
    assert len(tower._prefix_cache) == 3
    x2 = torch.cat([x[1:], torch.rand(1, 3, 32, 32)])  # two seen images, one new: only the new one computed
    torch.testing.assert_close(tower.frozen_prefix(x2)[:2], want[1:])
    assert len(tower._prefix_cache) == 4
    # the tunable blocks still run every time: their LoRA changes the output, the prefix does not
    before = tower(x).hidden_states[-1]
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["model.vision_tower.blocks.2.project_conv"]))
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    assert not torch.allclose(tower(x).hidden_states[-1], before)
    # an adapter on a prefix module: the prefix is computed, not remembered
    model2, _ = build_tiny(seed=9)
    t2 = model2.model.vision_tower
    get_peft_model(model2, LoraConfig(r=2, target_modules=["model.vision_tower.blocks.0.project_conv"]))
    t2.frozen_prefix(x)
    assert not t2.__dict__.get("_prefix_cache")


def test_the_prefix_runs_one_image_at_a_time(monkeypatch):
    from nscvf.models import efficientnet

    model, _ = build_tiny(seed=9)
    tower = model.model.vision_tower
    x = torch.rand(5, 3, 32, 32)
    monkeypatch.setattr(efficientnet, "PREFIX_BATCH", 64)
    one_pass = tower._prefix(x)
    monkeypatch.setattr(efficientnet, "PREFIX_BATCH", 1)
    calls = []
    real = tower._prefix_pass
    monkeypatch.setattr(tower, "_prefix_pass", lambda part: calls.append(len(part)) or real(part))
    out = tower._prefix(x)
    assert calls == [1] * 5
    torch.testing.assert_close(out, one_pass)  # the same up to the convolutions' rounding
    # an image's prefix never depends on the images sharing its call
    assert torch.equal(torch.cat([tower._prefix(x[:2]), tower._prefix(x[2:])]), out)
    calls.clear()
    pixels = x.clone().requires_grad_(True)  # a gradient to the pixels: one pass, and it reaches them
    tower._prefix(pixels).sum().backward()
    assert calls == [5] and pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_a_request_learns_the_same_with_and_without_the_prefix_cache(monkeypatch):
    from nscvf.method import UnlearningChain
    from nscvf.models import efficientnet

    cfg = UnlearnConfig(steps=3, stop_when_forgotten=False, evaluate="none")
    states = []
    for size in (2048, 0):
        monkeypatch.setattr(efficientnet, "PREFIX_CACHE_IMAGES", size)
        chain = UnlearningChain(wrap_model(*build_tiny(seed=6)))
        chain.forget(_images(3, seed=7), retain_images=_images(4, seed=8), config=cfg, target="a thing")
        states.append(chain.adapter_state())
    a, b = states
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
