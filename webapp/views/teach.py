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
    photos = (f" (other photographs alone: {pct(m.photos_named_as_concept)} of {m.others_photos} held-out views)"
              if m.others_photos else "")  # fmt: skip
    if m.others_as_near_as_taught:  # e.g. the taught photo's own held-out views: not "other" images
        photos += f" ({m.others_as_near_as_taught} views of the taught thing itself left out)"
    facts = f"; taught facts exact on {pct(m.facts_whole)} of held-out views" if m.facts_whole is not None else ""
    out.append(
        f"Other characters and photos now named {r.target!r}: {pct(m.others_named_as_concept)}{photos}; other answers "
        f"changed: {pct(m.others_changed)}; text-only answers changed: {na(m.text_answers_changed)}{facts}."
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
        ["other characters' and photos' images now given the taught name", "", pct(m.others_named_as_concept)],
        ["other photographs (held-out views) now given the taught name", "", pct(m.photos_named_as_concept)],
        ["taught facts exact on held-out views", "", pct(m.facts_whole)],
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


def relearn_verdict(probe: RelearnProbe) -> str:
    """What the probe shows, against the benchmark's yardstick (BENCHMARKS.md): a gold model, trained without
    the target, is never named within its 20 steps; a concept named again sooner was hidden, not erased.
    The probe's own reference (an unseen character taught the name) learns a new name, a weaker test."""
    s, at = probe.steps, probe.chain.get("named_at")
    if at == 0:
        return f"**Not forgotten:** {probe.target} is still named before any relearning step."
    if at is None:
        gold = " as the benchmark's gold model" if probe.gold_limit else ""
        return f"**Not brought back within {s} steps**{gold}: no sign here that {probe.target} was only hidden."
    if probe.gold_limit is not None and probe.gold is not None and at < probe.gold:
        gold = f"more than {probe.gold_limit}" if probe.gold > probe.gold_limit else f"{probe.gold}"
        return (f"**Hidden, not erased:** {probe.target} is named again after {at} step{'s' if at != 1 else ''}, where a "
                f"model trained without it (the benchmark's gold reference) needs {gold} steps. This is what "
                "BENCHMARKS.md measures: forgetting here hides the concept rather than erasing it.")  # fmt: skip
    return (f"**Back after {at} step{'s' if at != 1 else ''}.** {probe.target} has no gold reference (a model trained "
            "without it), and this probe's reference only learns a new name for an unseen character, a weaker test, "
            "so a similar number of steps does not show erasing. On the gold targets BENCHMARKS.md finds that forgetting "
            "hides rather than erases (named again in 2-5 steps; the gold not within 20).")  # fmt: skip


def relearn_note(probe: RelearnProbe) -> str:
    """The probe's sentence: steps until the name returns, for this session's model, the benchmark's gold
    reference where there is one, and the probe's own (weaker) reference; then the verdict."""
    s, mine, ref = probe.steps, probe.chain, probe.reference
    lines = [f"**{probe.target}**, relearned from {probe.k} image(s) (a fresh visual LoRA, at most {s} steps; "
             f"back = at least half of {probe.heldout} held-out images named):", "",
             f"- **this session's model:** {_steps(mine, s)} ({mine['seconds']} s)"]  # fmt: skip
    if probe.gold_limit is not None:
        g = probe.gold
        gold = (
            f"not named again within {probe.gold_limit} steps"
            if g is None or g > probe.gold_limit
            else f"named again after {g} steps"
        )
        lines.append(f"- **gold reference** (a model trained without {probe.target}; BENCHMARKS.md, k={probe.k}): {gold}")
    lines.append(f"- **weaker reference, {probe.reference_label}:** {_steps(ref, s)} ({ref['seconds']} s)")
    return "\n".join(lines) + "\n\n" + relearn_verdict(probe)


def relearn_figure(probe: RelearnProbe):
    """Held-out images named (%) before step 1 and after each step: this model and the reference."""
    import plotly.graph_objects as go  # plotly is heavy (~1 s): imported when a figure is drawn

    fig = go.Figure()
    for run, label, colour in (
        (probe.chain, "this session's model", "#d62728"),
        (probe.reference, "weaker reference (new name)", "#1f77b4"),
    ):
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
