"""Baselines (METHOD.md): GA, GD, KL, NPO. Same data, same step budget; they tune the visual module only."""

from nscvf.baselines import ga, gd, kl, npo  # noqa: F401
