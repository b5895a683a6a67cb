"""NSCVF: contrastive visual forgetting inside the null space of retained inputs (METHOD.md)."""

from __future__ import annotations

from nscvf.method.contrastive import contrastive_forget_loss, pooled, retain_loss
from nscvf.method.registry import Method, register


@register
class NSCVF(Method):
    name = "nscvf"
    description = "CVF loss, LoRA on vision tower + projector, updates in the null space of retained inputs"
    null_space = True

    @property
    def answer_batches(self):
        """The answer batches the loss reads (the memory estimate counts them)."""
        return ("forget_unknown",) if self.config.answer_weight > 0 else ()

    def loss(self, ctx):
        c = self.config
        z_f = pooled(ctx.forget_tokens())
        negatives = ctx.forget_orig_pooled if c.negatives == "target" else ctx.known_negatives()
        forget = contrastive_forget_loss(z_f, ctx.region, negatives, c.tau, c.positive, reduction="none")
        forget = ctx.mean(forget, "forget")
        tok_r, tok_r_orig = ctx.retain_tokens()
        keep = ctx.mean(retain_loss(tok_r, tok_r_orig, c.retain_loss, ctx.retain_scale, reduction="none"), "retain_tokens")
        total = c.forget_weight * forget + c.retain_weight * keep
        logs = {"forget": forget.item(), "retain": keep.item()}
        if c.answer_weight > 0:
            ans = ctx.mean(ctx.answer_nll("forget", toward="unknown"), "forget_unknown")
            total = total + c.answer_weight * ans
            logs["answer"] = ans.item()
        return total, logs
