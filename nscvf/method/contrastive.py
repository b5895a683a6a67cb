"""Contrastive Visual Forgetting (CVF; METHOD.md "CVF").

z(x) is the projector output mean-pooled over visual tokens and L2-normalised. The forget term is an
InfoNCE loss: the anchor z_theta(x_f) is pulled toward a feature of the *target region* (where the
model keeps what it does not know) and pushed away from the original features of the target's images.
The retain term keeps the retained images' visual tokens where the original model put them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pooled(tokens: torch.Tensor) -> torch.Tensor:
    """z(x): (B, T, D) token features -> (B, D) L2-normalised mean."""
    return F.normalize(tokens.mean(1), dim=-1)


def contrastive_forget_loss(
    z_f: torch.Tensor,
    region: torch.Tensor,
    z_orig_f: torch.Tensor,
    tau: float = 0.07,
    positive: str = "nearest",
    reduction: str = "mean",
) -> torch.Tensor:
    """InfoNCE (METHOD.md CVF, forget term).

    z_f: (B, D) current features of forget images (normalised), the anchors.
    region: (M, D) frozen target-region features (normalised).
    z_orig_f: (K, D) original features of the target's images (normalised): the negatives.
    positive: "nearest" region feature to each anchor, or the region "prototype" (normalised mean).
    reduction: "mean" over anchors, or "none": one loss per anchor (B,) (micro-batches sum their share).
    """
    if positive == "prototype":
        pos = F.normalize(region.mean(0, keepdim=True), dim=-1).expand_as(z_f)
    elif positive == "nearest":
        with torch.no_grad():
            idx = (z_f @ region.T).argmax(-1)
        pos = region[idx]
    else:
        raise ValueError(f"positive must be 'nearest' or 'prototype', not {positive!r}")
    pos_logit = (z_f * pos).sum(-1, keepdim=True) / tau  # (B, 1)
    neg_logits = z_f @ z_orig_f.T / tau  # (B, K)
    logits = torch.cat([pos_logit, neg_logits], dim=1)
    target = torch.zeros(len(z_f), dtype=torch.long, device=z_f.device)
    return F.cross_entropy(logits, target, reduction=reduction)


def retain_loss(
    tokens: torch.Tensor, tokens_orig: torch.Tensor, kind: str = "mse", scale=None, reduction: str = "mean"
) -> torch.Tensor:
    """Token-level feature matching on retained images (METHOD.md CVF, retain term); tokens are (N, D).

    "mse" is normalised by ``scale``, the mean squared original feature (computed from ``tokens_orig`` when not
    given; a micro-batch passes the whole step's). ``reduction="none"`` gives one term per token (N,), whose
    mean over the step's tokens is the loss."""
    if kind == "mse":
        scale = tokens_orig.pow(2).mean().clamp_min(1e-8) if scale is None else scale
        per_token = (tokens - tokens_orig).pow(2).mean(-1) / scale
    elif kind == "cosine":
        per_token = 1 - F.cosine_similarity(tokens, tokens_orig, dim=-1)
    else:
        raise ValueError(f"retain loss kind must be 'mse' or 'cosine', not {kind!r}")
    return per_token if reduction == "none" else per_token.mean()


def retain_drift(z_after_tokens: list[torch.Tensor], z_orig_tokens: list[torch.Tensor]) -> dict:
    """End-to-end retain embedding drift ||z_after - z_orig|| / ||z_orig|| on pooled (un-normalised)
    features, mean and max over images (METHOD.md: the number that shows the constraint works)."""
    d = []
    for a, o in zip(z_after_tokens, z_orig_tokens):
        za, zo = a.float().mean(0), o.float().mean(0)
        d.append(float((za - zo).norm() / zo.norm().clamp_min(1e-12)))
    if not d:
        return {"mean": None, "max": None}
    return {"mean": round(sum(d) / len(d), 5), "max": round(max(d), 5)}
