"""The core math, on small tensors: the CVF loss and the null-space projector."""

import pytest
import torch
import torch.nn.functional as F

from nscvf.errors import InputError
from nscvf.method.config import RETIRED, UnlearnConfig
from nscvf.method.contrastive import contrastive_forget_loss, pooled, retain_drift, retain_loss
from nscvf.method.domain import WorldDomain
from nscvf.method.methods import METHODS, Method, get_method
from nscvf.method.methods.npo import NPO
from nscvf.method.nullspace import CovarianceCollector, null_space_projector


def test_forget_loss_prefers_region_over_old_cluster():
    torch.manual_seed(0)
    region = F.normalize(torch.randn(5, 16), dim=-1)
    old = F.normalize(torch.randn(3, 16), dim=-1)
    near_region = F.normalize(region[:3] + 0.01 * torch.randn(3, 16), dim=-1)
    at_old = old.clone()
    for positive in ("nearest", "prototype"):
        assert contrastive_forget_loss(near_region, region, old, positive=positive) < contrastive_forget_loss(
            at_old, region, old, positive=positive
        )


def test_forget_loss_gradient_moves_anchor_toward_region():
    torch.manual_seed(1)
    region = F.normalize(torch.randn(4, 8), dim=-1)
    old = F.normalize(torch.randn(2, 8), dim=-1)
    z = old.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=0.05)
    before = (F.normalize(z, dim=-1) @ region.T).max(-1).values.mean().item()
    for _ in range(50):
        loss = contrastive_forget_loss(F.normalize(z, dim=-1), region, old)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = (F.normalize(z, dim=-1) @ region.T).max(-1).values.mean().item()
    assert after > before + 0.2


def test_retain_loss_zero_at_original_and_scale_free():
    x = torch.randn(2, 5, 8)
    assert retain_loss(x, x).item() == 0
    assert torch.isclose(retain_loss(10 * x + 1, 10 * x), retain_loss(x + 0.1, x), rtol=1e-4)
    assert retain_loss(x, x, "cosine").abs().item() < 1e-6


def test_pooled_is_unit_norm_and_drift_measures_relative_change():
    t = torch.randn(3, 4, 6)
    assert torch.allclose(pooled(t).norm(dim=-1), torch.ones(3))
    orig = [torch.ones(4, 6)]
    assert retain_drift(orig, orig)["mean"] == 0
    assert abs(retain_drift([torch.ones(4, 6) * 1.1], orig)["mean"] - 0.1) < 1e-6


def test_projector_annihilates_protected_inputs_and_reports_rank():
    torch.manual_seed(0)
    # Protected inputs live in a 6-dim subspace of R^16.
    basis = torch.linalg.qr(torch.randn(16, 16))[0]
    x = torch.randn(500, 6) @ basis[:, :6].T
    C = x.double().T @ x.double()
    space = null_space_projector(C, len(x), energy=1e-6)
    assert space.kept_rank == 10 and space.dim == 16
    assert (x @ space.projector).norm() / x.norm() < 1e-5
    # A direction outside the protected span passes through.
    y = basis[:, 10]
    assert torch.allclose(y @ space.projector, y, atol=1e-5)
    # The relative threshold is available too.
    assert null_space_projector(C, len(x), relative_threshold=1e-8).kept_rank == 10


def test_energy_threshold_monotone():
    torch.manual_seed(0)
    x = torch.randn(400, 12) * torch.logspace(0, -3, 12)
    C = x.double().T @ x.double()
    ranks = [null_space_projector(C, 400, energy=e).kept_rank for e in (1e-8, 1e-5, 1e-3, 1e-1)]
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]


def test_covariance_collector_accumulates_float64_over_calls():
    lin = torch.nn.Linear(4, 3)
    x1, x2 = torch.randn(2, 5, 4), torch.randn(7, 4)
    with CovarianceCollector({"lin": lin}) as col:
        lin(x1)
        lin(x2)
    s, n = col.covariances()["lin"]
    allx = torch.cat([x1.reshape(-1, 4), x2]).double()
    assert n == 17 and s.dtype == torch.float64 and torch.allclose(s, allx.T @ allx)
    lin(x1)  # hooks removed on exit
    assert col.covariances()["lin"][1] == 17


def test_config_is_checked_when_made_and_reads_old_saved_keys():
    with pytest.raises(InputError, match="steps=0 is out of range"):
        UnlearnConfig(steps=0)
    with pytest.raises(InputError, match="unknown method 'magic'"):
        UnlearnConfig().replace(method="magic")
    assert UnlearnConfig(steps=3).min_steps == 3  # never stop later than the budget
    saved = UnlearnConfig(lr=1e-3).to_dict() | {"baseline_beta": 0.1, "region_size": 96, "retain_per_character": 8}
    assert UnlearnConfig.from_dict(saved) == UnlearnConfig(lr=1e-3)  # a chain.json from before issue 16
    assert not set(RETIRED) & set(UnlearnConfig().to_dict())
    with pytest.raises(TypeError):
        UnlearnConfig.from_dict({"nonsense": 1})  # only the retired keys are tolerated


def test_every_method_declares_what_the_engine_reads():
    known = {"forget_original", "forget_unknown", "retain_original"}
    for name, cls in METHODS.items():
        m = get_method(name, UnlearnConfig(method=name))
        assert isinstance(m, Method) and m.name == name and m.description, name
        assert set(m.answer_batches) <= known and bool(m.answer_batches) <= (m.needs_answers or m.config.answer_weight > 0)
        assert cls.loss is not Method.loss, f"{name} must define loss"
    assert get_method("nscvf_feature", UnlearnConfig(answer_weight=0.0)).answer_batches == ()
    assert get_method("npo", UnlearnConfig(method="npo")).beta == 0.1  # NPO's own argument, not UnlearnConfig's
    assert NPO(UnlearnConfig(method="npo"), beta=0.5).beta == 0.5
    with pytest.raises(InputError, match="NPO beta=0 is out of range"):
        NPO(UnlearnConfig(method="npo"), beta=0)
    with pytest.raises(NotImplementedError, match="must define loss"):
        Method(UnlearnConfig()).loss(None)


def test_world_domain_render_counts():
    d = WorldDomain()
    assert len(d.region_images()) == 96 and len(d.protect_images("Mirel")) == 23 * 24
    assert len(d.retain_images(["Mirel"])) == 23 * 8 + 48  # the other named characters, one render per distractor
    small = WorldDomain(region_size=5, retain_per_character=1, retain_per_distractor=0, retain_per_neighbour=2)
    assert len(small.region_images()) == 5
    assert len(small.retain_images(["Mirel"])) == 23 + 2  # Mirel's sibling Fenna twice more
