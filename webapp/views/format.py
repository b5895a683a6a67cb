"""How every view writes a number, a table and a list: one place for each (pure)."""

from __future__ import annotations

import pandas as pd

from nscvf.eval import names_in
from webapp.state.records import Drift, na


def table(rows, headers) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def pct(v) -> str:
    """A fraction as a whole percentage ("n/a" when not measured)."""
    return "n/a" if v is None else f"{100 * v:.0f}%"


def names_of(answer: str) -> str:
    """The character names in an answer, sorted ("-" for none)."""
    n = sorted(names_in(answer))
    return ", ".join(n) if n else "-"


def sentences(items) -> str:
    return "; ".join(items)


def drift_text(d: Drift) -> str:
    """Retain drift as shown: "mean / max"."""
    return f"{na(d.mean)} / {na(d.max)}"
