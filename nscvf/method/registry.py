"""The method base class and the registry it fills. Implement, register, configure: ``@register`` a
subclass of :class:`Method` in a file of :mod:`nscvf.method.methods` and it is available to the engine, the
CLI (``--method``), the benchmark and the app. This module imports nothing; the methods package owns
lookup (:func:`nscvf.method.methods.get_method`)."""

from __future__ import annotations

METHODS: dict[str, type] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


class Method:
    """One unlearning method: which modules it tunes, whether updates are null-space constrained, and its
    loss on one step (given the shared :class:`~nscvf.method.context.StepContext`)."""

    name = "base"
    description = ""
    null_space = False  # default; UnlearnConfig.null_space can turn it off, never on for baselines
    modules = "visual"  # or "projector"
    overrides: dict = {}  # config fields the method fixes (e.g. a loss term it leaves out)
    needs_answers = False  # uses answer-level losses (needs the model's own answers on forget images)

    def __init__(self, config):
        self.config = config

    def loss(self, ctx):
        """Return (loss, {name: float}) for one optimizer step."""
        raise NotImplementedError  # every registered method overrides this
