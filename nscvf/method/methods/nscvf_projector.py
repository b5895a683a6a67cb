"""NSCVF on the projector alone (the paper's weak-forgetting ablation)."""

from nscvf.method.methods.nscvf import NSCVF
from nscvf.method.registry import register


@register
class NSCVFProjector(NSCVF):
    name = "nscvf_projector"
    description = "NSCVF tuning the projector only (the paper's weak-forgetting ablation)"
    modules = "projector"
