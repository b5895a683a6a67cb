"""KL: gradient ascent on forget answers plus KL to the original model's answer distribution on retain."""

from nscvf.method.registry import Method, register


@register
class GradientAscentKL(Method):
    name = "kl"
    description = "GA + KL(original || current) on retain answers (visual module only)"
    needs_answers = True
    answer_batches = ("forget_original", "retain_original")

    def loss(self, ctx):
        f = ctx.mean(ctx.answer_nll("forget", toward="original"), "forget_original")
        kl = ctx.mean(ctx.retain_kl(), "retain_original_tokens")
        return -f + self.config.retain_weight * kl, {"forget_nll": f.item(), "retain_kl": kl.item()}
