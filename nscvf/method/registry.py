"""Unlearning methods by name. A method is one short class: which modules it tunes, whether updates are
null-space constrained, and its loss on one step (given the shared :class:`~nscvf.method.unlearn.StepContext`).
Implement, register, configure: ``@register`` a subclass of :class:`Method` and it is available to the
engine, the CLI (``--method``), the benchmark and the app."""

from __future__ import annotations

METHODS: dict[str, type] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


class Method:
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


def all_methods() -> dict[str, type]:
    from nscvf import baselines  # noqa: F401  (registers the baselines)
    from nscvf.method import methods  # noqa: F401  (registers nscvf, cvf, nscvf_projector)

    return METHODS


def get_method(name: str, config) -> Method:
    return all_methods()[name](config)


def method_config(config):
    """``config`` with what its method fixes: the modules it tunes and its ``overrides``."""
    cls = all_methods()[config.method]
    return config.replace(modules=cls.modules, **cls.overrides)
