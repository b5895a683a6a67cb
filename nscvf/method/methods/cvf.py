"""CVF: NSCVF without the null-space constraint (the paper's ablation)."""

from nscvf.method.methods.nscvf import NSCVF
from nscvf.method.registry import register


@register
class CVF(NSCVF):
    name = "cvf"
    description = "NSCVF without the null-space constraint"
    null_space = False
