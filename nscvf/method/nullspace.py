"""Null-space constrained updates (NCU; METHOD.md "Null space", after Adam-NSCL and AlphaEdit).

For every tuned Linear layer W (d_out x d_in) we gather its *inputs* x on the protected images (every
visual token is one sample) into the uncentered covariance C = X^T X / N, eigen-decompose it, and keep
the eigenvectors U0 that carry almost none of the energy. P = U0 U0^T projects onto the approximate
null space of the protected inputs. With LoRA, delta W = B A; keeping every row of A inside that null
space (A <- A P, after every optimizer step) gives delta W x = B A P x ~ 0 for every protected x, so
retained knowledge is left (approximately) untouched while the target's inputs, which are not all in
the span of the protected ones, can still move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class CovarianceCollector:
    """Forward hooks that accumulate, per Linear module, sum x x^T (float64) and the sample count."""

    def __init__(self, modules: dict[str, torch.nn.Linear]):
        self.modules = modules
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._handles = []

    def _hook(self, name):
        def hook(_module, args, _output):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            s = x.T @ x
            if name in self.sums:
                self.sums[name] += s.cpu()
            else:
                self.sums[name] = s.cpu()
            self.counts[name] = self.counts.get(name, 0) + x.shape[0]

        return hook

    def __enter__(self):
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def covariances(self) -> dict[str, tuple[torch.Tensor, int]]:
        return {n: (self.sums[n], self.counts[n]) for n in self.sums}


@dataclass
class LayerNullSpace:
    """The projector of one layer and what the threshold kept (users need to see this)."""

    projector: torch.Tensor  # (d_in, d_in), float32
    dim: int
    kept_rank: int  # dimensions of the null space kept
    discarded_energy: float  # fraction of the protected inputs' energy inside the kept space
    largest_eigenvalue: float
    smallest_eigenvalue: float

    def stats(self) -> dict:
        return {
            "dim": self.dim,
            "kept_rank": self.kept_rank,
            "energy_in_null_space": self.discarded_energy,
            "largest_eigenvalue": self.largest_eigenvalue,
            "smallest_eigenvalue": self.smallest_eigenvalue,
        }


def null_space_projector(
    cov_sum: torch.Tensor, count: int, energy: float = 1e-4, relative_threshold: float | None = None
) -> LayerNullSpace:
    """METHOD.md null space, steps 2-4. Keep the smallest-eigenvalue directions whose eigenvalues sum to
    at most ``energy`` x the total (cumulative-energy threshold); or, with ``relative_threshold``, those
    below ``relative_threshold`` x the largest eigenvalue."""
    C = cov_sum / max(1, count)
    C = 0.5 * (C + C.T)
    evals, evecs = torch.linalg.eigh(C)  # ascending
    evals = evals.clamp_min(0)
    total = evals.sum().item() or 1.0
    if relative_threshold is not None:
        keep = int((evals <= relative_threshold * evals[-1]).sum())
    else:
        cum = torch.cumsum(evals, 0) / total
        keep = int((cum <= energy).sum())
    U0 = evecs[:, :keep]
    P = (U0 @ U0.T).to(torch.float32)
    return LayerNullSpace(
        projector=P,
        dim=C.shape[0],
        kept_rank=keep,
        discarded_energy=float(evals[:keep].sum().item() / total),
        largest_eigenvalue=float(evals[-1]),
        smallest_eigenvalue=float(evals[0]),
    )


def lora_layers(peft_model, adapter_name: str) -> dict[str, torch.nn.Module]:
    """The LoRA-wrapped layers of ``adapter_name``, by the base module name (peft's prefix stripped)."""
    out = {}
    for name, m in peft_model.named_modules():
        if hasattr(m, "lora_A") and adapter_name in getattr(m, "lora_A", {}):
            base_name = name.removeprefix("base_model.model.")
            out[base_name] = m
    return out


@torch.no_grad()
def project_lora_A(layers: dict[str, torch.nn.Module], spaces: dict[str, LayerNullSpace], adapter_name: str) -> None:
    """A <- A P for every constrained layer (METHOD.md null space, step 4). Called at initialisation and
    after every optimizer step: projecting only the gradient leaks out of the null space under AdamW."""
    for name, layer in layers.items():
        space = spaces.get(name)
        if space is None:
            continue
        A = layer.lora_A[adapter_name].weight  # (r, d_in)
        A.copy_(A @ space.projector.to(A.device, A.dtype))


@torch.no_grad()
def delta_ratio(layer, adapter_name: str, x: torch.Tensor) -> float:
    """||delta W x|| / ||W x|| over the rows of x: the property the constraint must give (METHOD.md step 5)."""
    A = layer.lora_A[adapter_name].weight.float()
    B = layer.lora_B[adapter_name].weight.float()
    scale = layer.scaling[adapter_name]
    W = layer.base_layer.weight.float()
    x = x.float()
    dx = (x @ A.T @ B.T) * scale
    wx = x @ W.T
    return float(dx.norm() / wx.norm().clamp_min(1e-12))
