"""NSCVF: contrastive visual forgetting inside the null space of retained inputs (METHOD.md)."""

from __future__ import annotations

from nscvf.method.cvf import contrastive_forget_loss, pooled, retain_loss
from nscvf.method.registry import Method, register


@register
class NSCVF(Method):
    name = "nscvf"
    description = "CVF loss, LoRA on vision tower + projector, updates in the null space of retained inputs"
    null_space = True

    def loss(self, ctx):
        c = self.config
        z_f = pooled(ctx.forget_tokens())
        negatives = ctx.forget_orig_pooled if c.negatives == "target" else ctx.known_negatives()
        forget = contrastive_forget_loss(z_f, ctx.region, negatives, tau=c.tau, positive=c.positive)
        tok_r, tok_r_orig = ctx.retain_tokens()
        keep = retain_loss(tok_r, tok_r_orig, c.retain_loss)
        total = c.forget_weight * forget + c.retain_weight * keep
        logs = {"forget": forget.item(), "retain": keep.item()}
        if c.answer_weight > 0:
            ans = ctx.answer_nll("forget", toward="unknown").mean()
            total = total + c.answer_weight * ans
            logs["answer"] = ans.item()
        return total, logs
