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
    """One unlearning method: which modules it tunes, whether updates are null-space constrained, which answer
    batches it reads, and its loss on one step (given the shared :class:`~nscvf.method.context.StepContext`).

    To add a method, see ``methods/gd.py``: a subclass with a ``name``, a ``description`` and a ``loss``,
    ``@register``-ed, in a new file of :mod:`nscvf.method.methods` imported by its ``__init__``. The engine,
    the CLI (``--method``), the benchmark and the app then offer it.
    """

    # Required attributes for child classes:
    name = "base"  # the registry key: ``--method`` in the CLI, the app's Method menu, the benchmark's rows
    description = ""  # one line for the menus and the docs
    # Optional attributes (the defaults suit a loss over the model's own answers on the visual module):
    null_space = False  # updates constrained to the null space (UnlearnConfig.null_space can turn it off, never on)
    modules = "visual"  # what LoRA tunes: "visual" (vision tower + projector) or "projector"
    overrides: dict = {}  # config fields the method fixes (e.g. a loss term it leaves out)
    needs_answers = False  # reads answer batches (the model's own answers on forget / retain images)
    # The answer batches its loss reads, of "forget_original", "forget_unknown", "retain_original" (the step
    # memory estimate counts these only); a property when it depends on the config (methods/nscvf.py).
    answer_batches: tuple[str, ...] = ()

    def __init__(self, config):
        self.config = config

    def loss(self, ctx):
        """Required: return (loss, {name: float}) for one optimizer step."""
        raise NotImplementedError(f"method {self.name!r} must define loss(ctx)")
