"""Null-space constrained updates (NCU; METHOD.md "Null space", after Adam-NSCL and AlphaEdit).

For every tuned Linear layer W (d_out x d_in; a convolution's weight read as out x (in*k*k), its inputs as
the receptive field of every output position) we gather its *inputs* x on the protected images (every
visual token is one sample) into the uncentered covariance C = X^T X / N, eigen-decompose it, and keep
the eigenvectors U0 that carry almost none of the energy. P = U0 U0^T projects onto the approximate
null space of the protected inputs. With LoRA, delta W = B A; keeping every row of A inside that null
space (A <- A P, after every optimizer step) gives delta W x = B A P x ~ 0 for every protected x, so
retained knowledge is left (approximately) untouched while the target's inputs, which are not all in
the span of the protected ones, can still move.

Scale (7B models on one GPU): sums are accumulated on the module's device, modules fed the very same
input tensor (q/k/v of one attention block) share one sum and one eigendecomposition, and the null
space is kept as a thin basis: at a cumulative-energy threshold like 5e-2 it holds ~99.5% of the
dimensions, so A is re-projected through the few discarded directions (A <- A - (A V) V^T) instead of a
dense d x d projector.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch


def conv_of(module: torch.nn.Module) -> torch.nn.Conv2d | None:
    """The convolution a layer computes (itself, or the base layer under its LoRA), or None for a linear."""
    base = getattr(module, "base_layer", module)
    return base if isinstance(base, torch.nn.Conv2d) else None


def layer_input_rows(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as the rows its weight multiplies, (N, d_in): a linear's tokens; for a convolution
    (B, C, H, W) every output position's receptive field, C*k*k values in the order of ``weight.reshape(out, -1)``
    (a 1x1 convolution: every pixel's C channels). The null space of a convolution is a null space of those rows."""
    conv = conv_of(module)
    if conv is None or x.dim() != 4:
        return x.reshape(-1, x.shape[-1])
    if conv.groups != 1:
        raise ValueError("null space of a grouped (depthwise) convolution is not supported; tune its 1x1 convolutions")
    if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding in ((0, 0), "valid"):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    if isinstance(conv.padding, str):
        raise ValueError(f"null space of a convolution with padding={conv.padding!r} is not supported")
    cols = torch.nn.functional.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C*k*k, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


class CovarianceCollector:
    """Forward hooks that accumulate, per distinct input, sum x x^T and the sample count.

    The sums live on the module's device (no host copy in the hook). Modules that receive the very same
    input tensor object in one forward (q/k/v projections of an attention block) share one accumulation:
    the first of them (the leader) adds x^T x and the others alias its sum, so ``covariances()`` returns
    the *same* tensor object under each of their names. ``share_inputs=False`` gives every module its own.

    Precision. ``dtype`` is the running sum's dtype (default float64). ``batch_dtype`` is the dtype in
    which each call's x^T x is formed: by default float64 on the CPU (exact enough for any threshold) and
    float32 elsewhere (bf16 inputs upcast; float64 GEMMs are many times slower on most GPUs). The running
    sum stays float64 on every device: it is only a d x d addition per call, and over hundreds of batches
    a float32 sum would add rounding of ~1e-7 x the largest eigenvalue per batch, i.e. into exactly the
    small eigenvalues that the null space is built from. Per-batch float32 rounding is far below the
    energy a cumulative threshold such as 5e-2 (or 1e-4) discards; for a tiny ``relative_threshold`` pass
    ``batch_dtype=torch.float64``.

    ``to_cpu()`` returns the covariances with each distinct sum copied to the host once (aliases kept),
    for caching.
    """

    _RECENT = 8  # inputs remembered (weakly) to detect sharing; q/k/v are called back to back

    def __init__(
        self,
        modules: dict[str, torch.nn.Module],
        dtype: torch.dtype = torch.float64,
        batch_dtype: torch.dtype | None = None,
        share_inputs: bool = True,
    ):
        self.modules = modules
        self.dtype = dtype
        self.batch_dtype = batch_dtype
        self.share_inputs = share_inputs
        self.sums: dict[str, torch.Tensor] = {}  # by leader name
        self.counts: dict[str, int] = {}  # by leader name
        self.leader: dict[str, str] = {}  # module name -> the name whose sum it uses (itself if none)
        self._own_counts: dict[str, int] = {}  # samples each module saw, to check the aliasing held
        self._recent: list[tuple[weakref.ref, str]] = []
        self._handles = []

    def _accumulate(self, name: str, x: torch.Tensor, rows: torch.Tensor) -> None:
        bd = self.batch_dtype or (torch.float64 if x.device.type == "cpu" else torch.float32)
        x2 = rows.detach().to(bd)
        s = (x2.T @ x2).to(self.dtype)
        if name in self.sums:
            self.sums[name] += s
        else:
            self.sums[name] = s
        self.counts[name] = self.counts.get(name, 0) + x2.shape[0]
        self._recent.append((weakref.ref(x), name))
        del self._recent[: -self._RECENT]

    def _seen_by(self, x: torch.Tensor) -> str | None:
        for ref, leader in reversed(self._recent):
            if ref() is x:
                return leader
        return None

    def _hook(self, name):
        def hook(module, args, _output):
            x = args[0]
            rows = layer_input_rows(module, x)
            self._own_counts[name] = self._own_counts.get(name, 0) + rows.shape[0]
            lead = self.leader.get(name)
            seen = self._seen_by(x) if self.share_inputs else None
            if lead is None:  # first call: alias an earlier module of this forward that got the same tensor
                lead = seen if seen is not None and seen != name else name
                self.leader[name] = lead
                if lead != name:
                    return
            if lead == name:
                self._accumulate(name, x, rows)
            elif seen != lead:
                raise RuntimeError(
                    f"{name} shared its input with {lead} in an earlier forward but not in this one; "
                    "use CovarianceCollector(..., share_inputs=False)"
                )

        return hook

    def __enter__(self):
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._recent.clear()

    def covariances(self) -> dict[str, tuple[torch.Tensor, int]]:
        """``{module name: (sum x x^T, count)}``; aliased names hold the very same tensor object."""
        out = {}
        for name, lead in self.leader.items():
            if lead not in self.sums:
                continue
            if self._own_counts.get(name) != self.counts[lead]:
                raise RuntimeError(
                    f"{name} aliases {lead}'s covariance but saw {self._own_counts.get(name)} samples, not "
                    f"{self.counts[lead]}; use CovarianceCollector(..., share_inputs=False)"
                )
            out[name] = (self.sums[lead], self.counts[lead])
        return out

    def to_cpu(self) -> dict[str, tuple[torch.Tensor, int]]:
        """``covariances()`` with every distinct sum moved to the CPU once; aliases still share one tensor."""
        host = {lead: s.cpu() for lead, s in self.sums.items()}
        return {n: (host[self.leader[n]], c) for n, (_s, c) in self.covariances().items()}


@dataclass
class LayerNullSpace:
    """The null space of one layer as a thin orthonormal basis, and what the threshold kept (users need
    to see this). ``basis`` holds the kept directions U0 (d x k) when ``basis_is_kept``, else the
    discarded complement V (d x (d - k)): whichever has fewer columns."""

    basis: torch.Tensor
    basis_is_kept: bool
    dim: int
    kept_rank: int  # dimensions of the null space kept
    discarded_energy: float  # fraction of the protected inputs' energy inside the kept space
    largest_eigenvalue: float
    smallest_eigenvalue: float
    _on: dict = field(default_factory=dict, repr=False, compare=False)  # (device, dtype) -> basis copy

    @property
    def projector(self) -> torch.Tensor:
        """The dense P = U0 U0^T (d x d, float32), built on demand (tests and reference use only)."""
        B = self.basis.to(torch.float64)
        if self.basis_is_kept:
            P = B @ B.T
        else:
            P = torch.eye(self.dim, dtype=torch.float64, device=B.device) - B @ B.T
        return P.to(torch.float32)

    def basis_on(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The basis on ``device`` in ``dtype``, copied once and cached."""
        key = (torch.device(device), dtype)
        if key not in self._on:
            self._on[key] = self.basis.to(device=device, dtype=dtype).contiguous()
        return self._on[key]

    def project(self, A: torch.Tensor) -> torch.Tensor:
        """A P for the rows of A, through the thin basis (computed in float32 at least)."""
        dt = A.dtype if A.dtype in (torch.float32, torch.float64) else torch.float32
        B = self.basis_on(A.device, dt)
        A2 = A.to(dt)
        out = (A2 @ B) @ B.T if self.basis_is_kept else A2 - (A2 @ B) @ B.T
        return out.to(A.dtype)

    def stats(self) -> dict:
        return {
            "dim": self.dim,
            "kept_rank": self.kept_rank,
            "energy_in_null_space": self.discarded_energy,
            "largest_eigenvalue": self.largest_eigenvalue,
            "smallest_eigenvalue": self.smallest_eigenvalue,
        }


def null_space_projector(
    cov_sum: torch.Tensor,
    count: int,
    energy: float = 1e-4,
    relative_threshold: float | None = None,
    dtype: torch.dtype | None = None,
) -> LayerNullSpace:
    """METHOD.md null space, steps 2-4. Keep the smallest-eigenvalue directions whose eigenvalues sum to
    at most ``energy`` x the total (cumulative-energy threshold); or, with ``relative_threshold``, those
    below ``relative_threshold`` x the largest eigenvalue.

    The eigendecomposition runs on ``cov_sum``'s device, in ``dtype``: by default float64 on the CPU and
    float32 on an accelerator (cuSOLVER's float32 eigh is several times faster than float64 on most
    GPUs, and at a cumulative-energy threshold the split between kept and discarded directions lies far
    above float32's ~1e-7 x largest-eigenvalue rounding; pass float64 for a tiny ``relative_threshold``)."""
    dt = dtype or (torch.float64 if cov_sum.device.type == "cpu" else torch.float32)
    C = cov_sum.to(dt) / max(1, count)
    C = 0.5 * (C + C.T)
    evals, evecs = torch.linalg.eigh(C)  # ascending
    evals = evals.clamp_min(0)
    total = evals.sum().item() or 1.0
    if relative_threshold is not None:
        keep = int((evals <= relative_threshold * evals[-1]).sum())
    else:
        cum = torch.cumsum(evals, 0) / total
        keep = int((cum <= energy).sum())
    d = C.shape[0]
    kept = keep <= d - keep
    basis = evecs[:, :keep] if kept else evecs[:, keep:]
    return LayerNullSpace(
        basis=basis.contiguous(),
        basis_is_kept=kept,
        dim=d,
        kept_rank=keep,
        discarded_energy=float(evals[:keep].sum().item() / total),
        largest_eigenvalue=float(evals[-1]),
        smallest_eigenvalue=float(evals[0]),
    )


def null_spaces(
    covs: dict[str, tuple[torch.Tensor, int]],
    energy: float = 1e-4,
    relative_threshold: float | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, LayerNullSpace]:
    """``null_space_projector`` for every layer, decomposing each distinct covariance once: names whose
    sums are the same tensor, or views of the same memory (e.g. ``torch.from_numpy`` of one cached array),
    get the very same ``LayerNullSpace``."""
    done: dict[tuple, LayerNullSpace] = {}
    out = {}
    for name, (s, c) in covs.items():
        key = (s.device, s.dtype, s.data_ptr(), tuple(s.shape), s.stride(), c)
        if key not in done:
            done[key] = null_space_projector(s, c, energy, relative_threshold, dtype)
        out[name] = done[key]
    return out


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
    """A <- A P for every constrained layer (METHOD.md null space, step 4), through the thin basis:
    A <- (A U0) U0^T or A <- A - (A V) V^T. Called at initialisation and after every optimizer step:
    projecting only the gradient leaks out of the null space under AdamW."""
    for name, layer in layers.items():
        space = spaces.get(name)
        if space is None:
            continue
        A = layer.lora_A[adapter_name].weight  # (r, d_in), or (r, in, k, k) for a convolution: rows of in*k*k
        A.copy_(space.project(A.reshape(A.shape[0], -1)).reshape(A.shape))


@torch.no_grad()
def delta_ratio(layer, adapter_name: str, x: torch.Tensor) -> float:
    """||delta W x|| / ||W x|| over the rows of x (:func:`layer_input_rows` for a convolution): the property the
    constraint must give (METHOD.md step 5)."""
    A = layer.lora_A[adapter_name].weight.float()
    B = layer.lora_B[adapter_name].weight.float()
    scale = layer.scaling[adapter_name]
    W = layer.base_layer.weight.float()
    A, B, W = A.reshape(A.shape[0], -1), B.reshape(B.shape[0], -1), W.reshape(W.shape[0], -1)  # a conv: out x (in*k*k)
    x = x.float()
    dx = (x @ A.T @ B.T) * scale
    wx = x @ W.T
    return float(dx.norm() / wx.norm().clamp_min(1e-12))
