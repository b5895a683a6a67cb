"""Pure views of a teach request (a RequestRecord of kind "teach") and of the relearning probe: the status
line, the text note, the numbers, and the probe's plot and note. No Gradio, no engine."""

from __future__ import annotations

from webapp.state.records import RelearnProbe, RequestRecord, na
from webapp.views.format import drift_text, pct
from webapp.views.verdict import outcome


def teach_status(rec: RequestRecord, k: int) -> str:
    """The status line of a finished teach request: how far the name reaches, what else took it, and how to
    forget it now (the forget form holds its images and name)."""
    r, o, m = rec.result, outcome(rec), rec.measures
    seconds = f"{rec.shown_s:.1f} s" if rec.shown_s is not None else "a moment"
    early = " (stopped early: named)" if r.stopped_early else ""
    out = [
        f"**Request {k} done** in {seconds} (queue included): **{o.headline()}** "
        f"(teach, {r.steps_run} of {r.config['steps']} steps{early})."
    ]
    out.append(
        f"Other characters now named {r.target!r}: {pct(m.others_named_as_concept)}; other answers "
        f"changed: {pct(m.others_changed)}; text-only answers changed: {na(m.text_answers_changed)}."
    )
    if o.warnings:
        out.append(f"⚠ {'; '.join(o.warnings)}. Press **Undo last** to go back.")
    out.append(
        f"The forget form now holds these images and the name **{r.target}**: press **Forget** to forget it "
        "again (Undo/Reset walk back through both)."
    )
    return "\n\n".join(out)


def teach_name_note(rec: RequestRecord) -> str:
    """The line under the forget form's name box when it holds a teach request's images."""
    return f"These are the images taught as **{rec.target}** in this session: press **Forget** to forget it."


def teach_text_note(rec: RequestRecord) -> str:
    n = rec.measures.text_answers_changed
    same = "identical" if rec.result.text_identical else f"changed on {n}"
    return (
        f"**Text-only answers:** {same} (teaching also trains a language LoRA, so unlike forgetting it may change "
        "them; the Forget that follows is measured against this taught state)."
    )


def teach_number_rows(rec: RequestRecord) -> list[list[str]]:
    """What teaching measured, as rows of the Numbers table (before = the state before the request)."""
    r, m, t = rec.result, rec.measures, rec.timings
    views = m.heldout_views if m.heldout_views is not None else "?"
    return [
        [f"taught name on held-out views ({views}: crops, flips, colour)", "", pct(m.heldout_named)],
        ["other characters' images now given the taught name", "", pct(m.others_named_as_concept)],
        ["other characters' answers changed", "", pct(m.others_changed)],
        ["text-only answers changed", "", str(na(m.text_answers_changed))],
        ["visual drift of other images (mean / max)", "0", drift_text(rec.drift)],
        ["steps run", "", f"{r.steps_run}{' (stopped early: named)' if r.stopped_early else ''}"],
        ["job time (s)", "", f"{rec.job_s if rec.job_s is not None else na(t.total)} (engine {na(t.total)})"],
    ]


# ------------------------------------------------------------------------------ relearning probe


def _steps(res: dict, steps: int) -> str:
    at = res.get("named_at")
    if at is None:
        return f"not named again within {steps} steps"
    if at == 0:
        return "still named before any step"
    return f"named again after {at} step{'s' if at != 1 else ''}"


def relearn_note(probe: RelearnProbe) -> str:
    """The probe's sentence: steps until the name returns, for this session's model and the reference."""
    s, mine, ref = probe.steps, probe.chain, probe.reference
    return (
        f"**{probe.target}**, relearned from {probe.k} image(s) (a fresh visual LoRA, at most {s} steps; "
        f"back = at least half of {probe.heldout} held-out images named):\n\n"
        f"- **this session's model:** {_steps(mine, s)} ({mine['seconds']} s)\n"
        f"- **reference, {probe.reference_label}:** {_steps(ref, s)} ({ref['seconds']} s)\n\n"
        "A concept only hidden comes back in a step or two; one truly gone needs about as long as the reference."
    )


def relearn_figure(probe: RelearnProbe):
    """Held-out images named (%) before step 1 and after each step: this model and the reference."""
    import plotly.graph_objects as go  # plotly is heavy (~1 s): imported when a figure is drawn

    fig = go.Figure()
    for run, label, colour in ((probe.chain, "this session's model", "#d62728"), (probe.reference, "reference", "#1f77b4")):
        curve = run["curve"]
        fig.add_trace(go.Scatter(x=list(range(len(curve))), y=[100 * v for v in curve], mode="lines+markers",
                                 name=label, line={"color": colour}))  # fmt: skip
    fig.add_hline(y=50, line_dash="dot", line_color="grey")
    fig.update_layout(
        height=300, margin={"l": 40, "r": 10, "t": 30, "b": 40}, title=f"Bringing {probe.target} back (k={probe.k})",
        xaxis_title="relearning steps", yaxis_title="held-out images named (%)", yaxis_range=[-5, 105],
        legend={"orientation": "h", "y": -0.3},
    )  # fmt: skip
    return fig
