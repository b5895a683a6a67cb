"""Model-family registry: ``model_type`` in a checkpoint's config -> adapter class."""

from __future__ import annotations

FAMILIES: dict[str, type] = {}


def register(cls):
    """Class decorator: route every ``cls.model_types`` entry to ``cls`` (one adapter per model type)."""
    if not cls.model_types:
        raise TypeError(f"{cls.__name__} names no model_types")
    for t in cls.model_types:
        if FAMILIES.get(t, cls) is not cls:
            raise ValueError(f"model type {t!r} is already handled by {FAMILIES[t].__name__}")
        FAMILIES[t] = cls
    return cls
