"""A rate over evaluation answer rows, and how a rate is written for people: one filter, one ``pct``.

The evaluation (:mod:`nscvf.eval`), the benchmark (:mod:`nscvf.bench`) and the CLI all filter answer rows
and write rates with these two functions (the app's views can too: ``from nscvf.rates import pct``).
"""

from __future__ import annotations


def rate(rows: list[dict], metric: str, digits: int | None = 4, **where) -> float | None:
    """Mean of ``row[metric]`` over the rows matching every ``where`` (a value, or a tuple of accepted values);
    None when no row matches. ``digits``: rounding (None: not rounded)."""
    vals = [r[metric] for r in rows if all(r[k] in (v if isinstance(v, tuple) else (v,)) for k, v in where.items())]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return mean if digits is None else round(mean, digits)


def pct(v: float | None, digits: int = 1, unit: str = "", missing: str = "-") -> str:
    """A rate in percent: ``pct(0.1234) == "12.3"``, ``pct(0.5, 0, "%", "n/a") == "50%"``, ``pct(None) == "-"``."""
    return missing if v is None else f"{100 * v:.{digits}f}{unit}"
