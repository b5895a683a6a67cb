"""Pure views of a teach request (a RequestRecord of kind "teach") and of the relearning probe: the status
line, the text note, the numbers, and the probe's plot and note. No Gradio, no engine."""

from __future__ import annotations

from webapp.records import RequestRecord


def is_teach(rec_or_result) -> bool:
    r = rec_or_result.result if isinstance(rec_or_result, RequestRecord) else rec_or_result
    return (r or {}).get("kind") == "teach"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def teach_status(rec: RequestRecord, k: int) -> str:
    """The status line of a finished teach request: how far the name reaches, what else took it, and how to
    forget it now (the forget form holds its images and name)."""
    from webapp.views import outcome

    r, o = rec.result, outcome(rec)
    m = r.get("measures") or {}
    seconds = f"{rec.shown_s:.1f} s" if rec.shown_s is not None else "a moment"
    early = " (stopped early: named)" if r.get("stopped_early") else ""
    out = [
        f"**Request {k} done** in {seconds} (queue included): **{o.headline()}** "
        f"(teach, {r.get('steps_run')} of {r['config']['steps']} steps{early})."
    ]
    out.append(
        f"Other characters now named {r.get('target')!r}: {_pct(m.get('others_named_as_concept'))}; other answers "
        f"changed: {_pct(m.get('others_changed'))}; text-only answers changed: {m.get('text_answers_changed', 'n/a')}."
    )
    if o.warnings:
        out.append(f"⚠ {'; '.join(o.warnings)}. Press **Undo last** to go back.")
    out.append(
        f"The forget form now holds these images and the name **{r.get('target')}**: press **Forget** to forget it "
        "again (Undo/Reset walk back through both)."
    )
    return "\n\n".join(out)


def teach_name_note(rec: RequestRecord) -> str:
    """The line under the forget form's name box when it holds a teach request's images."""
    return f"These are the images taught as **{rec.target}** in this session: press **Forget** to forget it."


def teach_text_note(r: dict) -> str:
    m = r.get("measures") or {}
    n = m.get("text_answers_changed")
    same = "identical" if r.get("text_identical") else f"changed on {n}"
    return (
        f"**Text-only answers:** {same} (teaching also trains a language LoRA, so unlike forgetting it may change "
        "them; the Forget that follows is measured against this taught state)."
    )


def teach_number_rows(rec: RequestRecord) -> list[list[str]]:
    """What teaching measured, as rows of the Numbers table (before = the state before the request)."""
    r = rec.result
    m = r.get("measures") or {}
    d = r.get("retain_drift") or {}
    t = r.get("timings") or {}
    return [
        [
            f"taught name on held-out views ({m.get('heldout_views', '?')}: crops, flips, colour)",
            "",
            _pct(m.get("heldout_named")),
        ],
        ["other characters' images now given the taught name", "", _pct(m.get("others_named_as_concept"))],
        ["other characters' answers changed", "", _pct(m.get("others_changed"))],
        ["text-only answers changed", "", str(m.get("text_answers_changed", "n/a"))],
        ["visual drift of other images (mean / max)", "0", f"{d.get('mean', 'n/a')} / {d.get('max', 'n/a')}"],
        ["steps run", "", f"{r.get('steps_run')}{' (stopped early: named)' if r.get('stopped_early') else ''}"],
        ["job time (s)", "", f"{rec.job_s if rec.job_s is not None else t.get('total', 'n/a')} (engine {t.get('total', 'n/a')})"],
    ]


# ------------------------------------------------------------------------------ relearning probe


def _steps(res: dict, steps: int) -> str:
    at = res.get("named_at")
    if at is None:
        return f"not named again within {steps} steps"
    if at == 0:
        return "still named before any step"
    return f"named again after {at} step{'s' if at != 1 else ''}"


def relearn_note(probe: dict) -> str:
    """The probe's sentence: steps until the name returns, for this session's model and the reference."""
    s = probe["steps"]
    mine, ref = probe["chain"], probe["reference"]
    return (
        f"**{probe['target']}**, relearned from {probe['k']} image(s) (a fresh visual LoRA, at most {s} steps; "
        f"back = at least half of {probe.get('heldout', '?')} held-out images named):\n\n"
        f"- **this session's model:** {_steps(mine, s)} ({mine['seconds']} s)\n"
        f"- **reference, {probe['reference_label']}:** {_steps(ref, s)} ({ref['seconds']} s)\n\n"
        "A concept only hidden comes back in a step or two; one truly gone needs about as long as the reference."
    )


def relearn_figure(probe: dict):
    """Held-out images named (%) before step 1 and after each step: this model and the reference."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, label, colour in (("chain", "this session's model", "#d62728"), ("reference", "reference", "#1f77b4")):
        curve = probe[key]["curve"]
        fig.add_trace(go.Scatter(x=list(range(len(curve))), y=[100 * v for v in curve], mode="lines+markers",
                                 name=label, line={"color": colour}))  # fmt: skip
    fig.add_hline(y=50, line_dash="dot", line_color="grey")
    fig.update_layout(
        height=300, margin={"l": 40, "r": 10, "t": 30, "b": 40}, title=f"Bringing {probe['target']} back (k={probe['k']})",
        xaxis_title="relearning steps", yaxis_title="held-out images named (%)", yaxis_range=[-5, 105],
        legend={"orientation": "h", "y": -0.3},
    )  # fmt: skip
    return fig
