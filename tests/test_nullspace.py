"""The scalable null space: shared-input covariances, one eigendecomposition per distinct input, and
re-projection through a thin basis that equals the dense projector."""

import pytest
import torch

from nscvf.method import nullspace
from nscvf.method.nullspace import CovarianceCollector, null_space_projector, null_spaces, project_lora_A


def _cov(n, d, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, d, generator=g, dtype=torch.float64)
    x = x + 1e-4 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.T @ x, n


class _Lora(torch.nn.Module):
    def __init__(self, A):
        super().__init__()
        self.lora_A = torch.nn.ModuleDict({"a": torch.nn.Linear(A.shape[1], A.shape[0], bias=False)})
        self.lora_A["a"].weight.data.copy_(A)


@pytest.mark.parametrize(
    ("rank", "energy", "kept"),
    [(28, 1e-6, True), (3, 5e-2, False)],  # few kept dims (U0 stored); few discarded dims (V stored)
)
def test_thin_reprojection_equals_dense_projector(rank, energy, kept):
    C, n = _cov(400, 32, rank)
    space = null_space_projector(C, n, energy=energy)
    assert space.basis_is_kept is kept
    assert space.basis.shape == (32, min(space.kept_rank, 32 - space.kept_rank))
    assert 0 < space.kept_rank < 32
    A = torch.randn(8, 32)
    layer = _Lora(A)
    project_lora_A({"l": layer}, {"l": space}, "a")
    assert torch.allclose(layer.lora_A["a"].weight, A @ space.projector, atol=1e-5)
    # Cached on the layer's device and dtype once, not rebuilt every step.
    project_lora_A({"l": layer}, {"l": space}, "a")
    assert len(space._on) == 1
    # Idempotent: projecting twice changes nothing.
    assert torch.allclose(layer.lora_A["a"].weight, A @ space.projector, atol=1e-5)


def test_shared_inputs_share_one_covariance():
    torch.manual_seed(0)
    q, k, v, o = (torch.nn.Linear(6, 6) for _ in range(4))

    def block(x):
        h = q(x) + k(x) + v(x)
        return o(torch.tanh(h))

    xs = [torch.randn(2, 5, 6), torch.randn(3, 6)]
    with CovarianceCollector({"q": q, "k": k, "v": v, "o": o}) as col:
        for x in xs:
            block(x)
    covs = col.covariances()
    assert set(covs) == {"q", "k", "v", "o"}
    assert covs["q"][0] is covs["k"][0] is covs["v"][0]
    assert covs["o"][0] is not covs["q"][0]
    X = torch.cat([x.reshape(-1, 6) for x in xs]).double()
    H = torch.cat([torch.tanh(q(x) + k(x) + v(x)).reshape(-1, 6) for x in xs]).double()
    assert covs["q"][1] == covs["o"][1] == 13
    assert torch.allclose(covs["q"][0], X.T @ X) and torch.allclose(covs["o"][0], H.T @ H)
    # to_cpu keeps the aliasing.
    host = col.to_cpu()
    assert host["q"][0] is host["k"][0] and host["q"][0].device.type == "cpu"
    # share_inputs=False: every module its own sum, with the same values.
    with CovarianceCollector({"q": q, "k": k}, share_inputs=False) as col2:
        block(xs[0])
    c2 = col2.covariances()
    assert c2["q"][0] is not c2["k"][0] and torch.equal(c2["q"][0], c2["k"][0])


def test_aliasing_that_breaks_is_an_error_not_a_wrong_covariance():
    q, k = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)
    with CovarianceCollector({"q": q, "k": k}) as col:
        q(x)
        k(x)
        q(torch.randn(3, 4))  # k does not see this input
    with pytest.raises(RuntimeError, match="share_inputs=False"):
        col.covariances()
    with CovarianceCollector({"q": q, "k": k}) as col, pytest.raises(RuntimeError, match="share_inputs=False"):
        q(x)
        k(x)
        q(x + 1)
        k(x - 1)  # a different input than its leader's


def test_collector_accumulates_across_calls_and_removes_hooks():
    lin = torch.nn.Linear(4, 3)
    x1, x2 = torch.randn(2, 5, 4), torch.randn(7, 4)
    col = CovarianceCollector({"lin": lin})
    with col:
        lin(x1)
        lin(x2)
    s, n = col.covariances()["lin"]
    allx = torch.cat([x1.reshape(-1, 4), x2]).double()
    assert n == 17 and s.dtype == torch.float64 and torch.allclose(s, allx.T @ allx)
    lin(x1)
    assert col.covariances()["lin"][1] == 17 and not lin._forward_hooks
    with col:  # re-entering keeps accumulating
        lin(x2)
    s, n = col.covariances()["lin"]
    allx = torch.cat([allx, x2.double()])
    assert n == 24 and torch.allclose(s, allx.T @ allx) and not lin._forward_hooks


def test_collector_float32_batches_close_to_float64():
    lin = torch.nn.Linear(8, 2)
    x = torch.randn(50, 8).to(torch.bfloat16)
    with CovarianceCollector({"lin": lin.to(torch.bfloat16)}, batch_dtype=torch.float32) as col:
        lin(x)
    s, _ = col.covariances()["lin"]
    ref = x.double().T @ x.double()
    assert s.dtype == torch.float64 and torch.allclose(s, ref, rtol=1e-5, atol=1e-4)


def test_null_spaces_decomposes_each_distinct_covariance_once(monkeypatch):
    calls = []
    real = torch.linalg.eigh

    def counting(C, *a, **kw):
        calls.append(C.shape)
        return real(C, *a, **kw)

    monkeypatch.setattr(nullspace.torch.linalg, "eigh", counting)
    C1, n1 = _cov(100, 8, 3, seed=1)
    C2, n2 = _cov(100, 8, 5, seed=2)
    covs = {"q": (C1, n1), "k": (C1, n1), "v": (C1, n1), "o": (C2, n2)}
    # A second tensor over the same memory (e.g. torch.from_numpy of one cached array) is the same input.
    covs["q2"] = (torch.from_numpy(C1.numpy()), n1)
    spaces = null_spaces(covs, energy=5e-2)
    assert len(calls) == 2
    assert spaces["q"] is spaces["k"] is spaces["v"] is spaces["q2"] and spaces["o"] is not spaces["q"]
    ref = null_space_projector(C1, n1, energy=5e-2)
    assert spaces["q"].stats() == ref.stats()
    assert torch.allclose(spaces["q"].projector, ref.projector)


def test_stats_keys_unchanged():
    C, n = _cov(100, 8, 3)
    assert set(null_space_projector(C, n, energy=5e-2).stats()) == {
        "dim",
        "kept_rank",
        "energy_in_null_space",
        "largest_eigenvalue",
        "smallest_eigenvalue",
    }
