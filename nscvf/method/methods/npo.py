"""NPO (Zhang et al. 2024): -(2/beta) log sigmoid(-beta (log p_theta - log p_ref)) on forget answers,
with the original model as the reference. Its own argument, ``beta``, lives here (open-unlearning's
``NPO(beta=...)``), not in the shared UnlearnConfig."""

import torch.nn.functional as F

from nscvf.errors import InputError
from nscvf.method.registry import Method, register

BETA = 0.1  # the paper's default


@register
class NPO(Method):
    name = "npo"
    description = "negative preference optimisation against the original model (visual module only)"
    needs_answers = True
    answer_batches = ("forget_original",)

    def __init__(self, config, beta: float = BETA):
        super().__init__(config)
        if not 0.001 <= beta <= 10.0:
            raise InputError(f"NPO beta={beta} is out of range; use 0.001 to 10")
        self.beta = beta

    def loss(self, ctx):
        beta = self.beta
        logp = -ctx.answer_nll("forget", toward="original", reduction="sum")
        ratio = logp - ctx.forget_ref_logp
        loss = ctx.mean(-(2.0 / beta) * F.logsigmoid(-beta * ratio), "forget_original")
        return loss, {"npo": loss.item(), "log_ratio": ctx.mean(ratio, "forget_original").item()}
