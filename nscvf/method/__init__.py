"""The NSCVF engine: CVF loss, null-space projection, one request, the continual chain, method registry."""

from nscvf.method.config import UnlearnConfig
from nscvf.method.registry import METHODS, get_method
from nscvf.method.unlearn import UnlearningChain, UnlearnResult, unlearn

__all__ = ["METHODS", "UnlearnConfig", "UnlearnResult", "UnlearningChain", "get_method", "unlearn"]
