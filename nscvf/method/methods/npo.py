"""NPO (Zhang et al. 2024): -(2/beta) log sigmoid(-beta (log p_theta - log p_ref)) on forget answers,
with the original model as the reference."""

import torch.nn.functional as F

from nscvf.method.registry import Method, register


@register
class NPO(Method):
    name = "npo"
    description = "negative preference optimisation against the original model (visual module only)"
    needs_answers = True
    answer_batches = ("forget_original",)

    def loss(self, ctx):
        beta = self.config.baseline_beta
        logp = -ctx.answer_nll("forget", toward="original", reduction="sum")
        ratio = logp - ctx.forget_ref_logp
        loss = ctx.mean(-(2.0 / beta) * F.logsigmoid(-beta * ratio), "forget_original")
        return loss, {"npo": loss.item(), "log_ratio": ctx.mean(ratio, "forget_original").item()}
