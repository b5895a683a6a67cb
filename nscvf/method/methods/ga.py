"""GA: gradient ascent on the model's own answers about the forget images."""

from nscvf.method.registry import Method, register


@register
class GradientAscent(Method):
    name = "ga"
    description = "gradient ascent on forget answers (visual module only)"
    needs_answers = True
    answer_batches = ("forget_original",)

    def loss(self, ctx):
        nll = ctx.mean(ctx.answer_nll("forget", toward="original"), "forget_original")
        return -nll, {"forget_nll": nll.item()}
