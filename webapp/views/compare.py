"""Pure views of a method comparison (:class:`~webapp.state.records.Comparison`): the side-by-side table
and the note over it."""

from __future__ import annotations

from nscvf.method.outcome import assess
from webapp.state.records import Comparison, Drift, Probes, result_dict, typed
from webapp.views.format import drift_text, table


def comparison_rows(c: Comparison) -> list[list[str]]:
    """The side-by-side table: [what, first method, second method]."""
    a, b = c.first.result, c.second.result
    oa, ob = assess(result_dict(a), c.world), assess(result_dict(b), c.world)
    pa, pb = Probes.of(a.probes_after).forget, Probes.of(b.probes_after).forget
    rows = [
        ["method", c.first.method, c.second.method],
        ["outcome", oa.headline(), ob.headline()],
        ["warnings", "; ".join(oa.warnings) or "none", "; ".join(ob.warnings) or "none"],
        ["steps run", str(a.steps_run), str(b.steps_run)],
        ["retain drift (mean / max)", drift_text(typed(Drift, a.retain_drift)), drift_text(typed(Drift, b.retain_drift))],
        ["text-only answers identical", str(a.text_identical), str(b.text_identical)],
    ]
    q = pa.questions[0]
    for n, (x, y) in enumerate(zip(pa.identity, pb.identity), start=1):
        rows.append([f"image #{n}: {q}", x, y])
    return rows


def comparison_table(c: Comparison):
    """The table as the page shows it (columns named by the two methods)."""
    return table(comparison_rows(c), ["", f"A: {c.first.method}", f"B: {c.second.method}"])


def comparison_note(c: Comparison) -> str:
    """One line over the table: what was compared."""
    who = c.target or "the concept in the images"
    return (
        f"The same request ({c.n_forget} images, target {who}, the same settings) run with **{c.first.method}** "
        f"(this session) and **{c.second.method}** (a throwaway copy of the session's state before it; this "
        "session's model is unchanged)."
    )
