"""GD: gradient ascent on forget answers plus NLL on retain answers (gradient difference)."""

from nscvf.method.registry import Method, register


@register
class GradientDifference(Method):
    name = "gd"
    description = "GA + retain NLL (visual module only)"
    needs_answers = True
    answer_batches = ("forget_original", "retain_original")

    def loss(self, ctx):
        f = ctx.mean(ctx.answer_nll("forget", toward="original"), "forget_original")
        r = ctx.mean(ctx.answer_nll("retain", toward="original"), "retain_original")
        return -f + self.config.retain_weight * r, {"forget_nll": f.item(), "retain_nll": r.item()}
