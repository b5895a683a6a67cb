"""NSCVF with the feature-level loss only: METHOD.md's default, without the answer-level term."""

from nscvf.method.methods.nscvf import NSCVF
from nscvf.method.registry import register


@register
class NSCVFFeature(NSCVF):
    name = "nscvf_feature"
    description = "NSCVF with the feature-level loss only (no answer-level term; METHOD.md's default)"
    overrides = {"answer_weight": 0.0}
