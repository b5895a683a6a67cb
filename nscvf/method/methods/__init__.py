"""Every unlearning method, one file each, and lookup by name. Importing this package registers them all."""

from __future__ import annotations

from nscvf.errors import InputError
from nscvf.method.methods import cvf, ga, gd, kl, npo, nscvf, nscvf_feature, nscvf_projector  # noqa: F401
from nscvf.method.registry import METHODS, Method

__all__ = ["METHODS", "Method", "all_methods", "get_method", "method_config"]


def all_methods() -> dict[str, type]:
    return METHODS


def get_method(name: str, config) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](config)


def method_config(config):
    """``config`` with what its method fixes: the modules it tunes and its ``overrides``."""
    cls = METHODS[config.method]
    return config.replace(modules=cls.modules, **cls.overrides)
