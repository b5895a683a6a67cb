"""The NSCVF engine: CVF loss, null-space projection, one request, the continual chain, the methods.

A lazy face (PEP 562): ``from nscvf.method import UnlearningChain`` works as before, while importing a
torch-free part (``nscvf.method.config``) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "UnlearnConfig": "nscvf.method.config",
    "UnlearnResult": "nscvf.method.result",
    "UnlearningChain": "nscvf.method.chain",
    "unlearn": "nscvf.method.chain",
    "METHODS": "nscvf.method.methods",
    "get_method": "nscvf.method.methods",
    "domain_for": "nscvf.method.domain",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nscvf.method' has no attribute {name!r}")
