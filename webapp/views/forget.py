"""Pure views of a forget request: a :class:`~webapp.state.records.RequestRecord` (and the session's
records) -> tables (pandas), notes (markdown), figures (plotly) and status lines, gathered in
:class:`Outputs`, the one list of what Forget, Undo, Reset, Teach and Import show (the page wires its
components from ``Outputs._fields``). No Gradio, no engine, no state: the same record gives the same
outputs. :data:`KEEP` marks an output to leave as it is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

from webapp.state.records import RequestRecord, na
from webapp.state.settings import BROWSER_TYPES
from webapp.views.format import drift_text, names_of, pct, sentences, table
from webapp.views.nullspace import nullspace_figure
from webapp.views.teach import teach_name_note, teach_number_rows, teach_status, teach_text_note
from webapp.views.verdict import identification, identify_note, outcome, verdict

FORGET_HEADERS = ["image", "question", "before", "after", "named before", "named after"]
RETAIN_HEADERS = ["character", "question", "before", "after", "change"]
TEXT_HEADERS = ["question (text only, no image)", "before", "after", "change"]
NUMBER_HEADERS = ["measure", "before", "after"]
HISTORY_HEADERS = ["#", "target", "outcome", "method", "steps", "target named", "others named", "earlier named", "seconds"]
ASK_CLEARED = ("", "", "The model changed: ask again to compare the base and the current model.")


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # "leave this output as it is" (the page turns it into gr.skip())


class Outputs(NamedTuple):
    """The outputs of Forget, Undo, Reset, Teach and Import, in the page's order (each field is the name of
    one component of the page: :func:`webapp.page.common.Page.outputs`)."""

    status: str
    history: Any
    gallery: Any
    forget_table: Any
    retain_table: Any
    text_note: Any
    text_table: Any
    plot_before: Any
    plot_after: Any
    plot_note: Any
    numbers: Any
    files: Any = KEEP  # the upload
    name: Any = KEEP  # the name box
    name_note: Any = KEEP  # the line under it (who the images show)
    ask_base: Any = KEEP
    ask_current: Any = KEEP
    ask_note: Any = KEEP
    null_plot: Any = KEEP  # the null space of the request (webapp.views.nullspace)
    null_note: Any = KEEP


# ------------------------------------------------------------------------------------------- rows


def forget_rows(rec: RequestRecord, names) -> list[list[str]]:
    """Per forget image: the identity question and one fact question, before and after, and who is named."""
    pb, pa = rec.before.forget, rec.after.forget
    qs = pb.questions
    rows = []
    for i in range(rec.result.n_forget):
        fact_q = qs[1 + i % (len(qs) - 1)] if len(qs) > 1 else None
        for q in [qs[0]] + ([fact_q] if fact_q else []):
            b, a = pb.answers[q][i], pa.answers[q][i]
            label = f"#{i + 1} {names[i]}" if i < len(names) else f"#{i + 1}"
            rows.append([label, q, b, a, names_of(b), names_of(a)])
    return rows


def text_rows(rec: RequestRecord) -> tuple[list[list[str]], str]:
    """Text-only questions about the target, before and after, and the note on whether any answer changed."""
    r = rec.result
    if rec.is_teach:
        return [], teach_text_note(rec)
    tb, ta = rec.before.text, rec.after.text
    logits = " and the next-token logits are bit-identical" if r.text_logits_identical else "; the next-token logits differ"
    if not tb or not ta:
        note = "**Text-only:** this model has no text probes; " + (
            "the next-token logits of text prompts are bit-identical: unlearning touched only the visual path."
            if r.text_logits_identical
            else "text logits changed."
        )
        return [], note
    target = r.target
    pairs = list(zip(tb.questions, tb.answers, ta.answers))
    about = [p for p in pairs if target and target in p[0]] or pairs[:6]
    rows = [[q, b, a, "same" if a == b else "CHANGED"] for q, b, a in about]
    n = len(pairs)
    if r.text_identical:
        note = (
            f"**Text-only answers are identical before and after** on all {n} text questions{logits}: "
            "unlearning touched only the visual path, so the model still knows the facts when asked by name."
        )
    else:
        changed = sum(1 for _, b, a in pairs if a != b)
        note = f"**Text-only answers changed** on {changed} of {n} text questions{logits}."
    return rows, note


def eval_summaries(rec: RequestRecord) -> tuple[dict, dict]:
    """The accuracies (``nscvf.eval.evaluate``'s summary, metric -> fraction) before and after a request:
    the app's separate evaluation, else the engine's own, else none."""
    r = rec.result
    before = (rec.evals.before if rec.evals else None) or r.eval_before or {}
    after = (rec.evals.after if rec.evals else None) or r.eval_after or {}
    return before.get("summary") or {}, after.get("summary") or {}


ACCURACIES = (  # (metric of the evaluation's summary, label): a declarative table
    ("target_name_acc", "forget: target named (training renders)"),
    ("target_name_acc_heldout", "forget: target named (held-out renders)"),
    ("target_fact_image_acc_heldout", "forget: target's facts from image (held-out)"),
    ("target_unknown_rate", 'forget: target answered "I don\'t know"'),
    ("retain_acc", "retain: other characters named / facts"),
    ("earlier_name_acc_heldout", "earlier targets: still named (held-out renders)"),
    ("earlier_unknown_rate", 'earlier targets: answered "I don\'t know"'),
    ("fact_text_acc", "text: facts asked by name (no image)"),
    ("unknown_rate_unseen_distractors", 'unknown: unseen characters answered "I don\'t know"'),
)


def _accuracy_rows(rec: RequestRecord) -> list[list[str]]:
    eb, ea = eval_summaries(rec)
    rows = [[label, pct(eb.get(key)), pct(ea.get(key))] for key, label in ACCURACIES if key in eb or key in ea]
    if rows:
        return rows
    if rec.evaluation == "none":
        return [["accuracies", "not evaluated", "(set Evaluation to quick or full)"]]
    if rec.evaluation == "cancelled":
        return [["accuracies", "cancelled", "(press Evaluate to measure them)"]]
    if not rec.evaluable:
        return [["accuracies", "not available", "(the evaluation asks about the embedded model's characters)"]]
    return [["accuracies", "evaluating…", "(the accuracies follow the answers)"]]


def number_rows(rec: RequestRecord) -> list[list[str]]:
    """Accuracies before -> after, retain drift, the null space, text identity, steps and times."""
    r = rec.result
    if rec.is_teach:
        return teach_number_rows(rec)
    rows = _accuracy_rows(rec)
    rows.append(["retain drift of visual features (mean / max)", "0", drift_text(rec.drift)])
    ns = rec.null_summary
    if ns.layers:
        kept = f"{ns.mean_kept_rank} ({100 * ns.mean_kept_fraction:.1f}%) over {ns.layers} layers"
        rows.append(["null space: mean kept rank (share of dims)", "", kept])
    else:
        rows.append(["null space", "", "not used by this method"])
    rows.append(["text answers identical / logits identical", "", f"{r.text_identical} / {r.text_logits_identical}"])
    rows.append(["steps run", "", f"{r.steps_run}{' (stopped early: forgotten)' if r.stopped_early else ''}"])
    t = rec.timings
    job = rec.job_s if rec.job_s is not None else na(t.total)
    plots = rec.plots_s if rec.plots_s is not None else "n/a"
    engine = f"engine {na(t.total)}: optimise {na(t.optimise)}, {na(t.seconds_per_step)} s/step"
    rows.append(["job time (s)", "", f"{job} ({engine}; plots {plots})"])
    if rec.evals is not None:
        rows.append([f"evaluation time (s, {rec.evals.mode})", f"{rec.evals.seconds_before}", f"{rec.evals.seconds_after}"])
    if r.cache:
        rows.append(["reused from the cache", "", ", ".join(f"{k}: {v}" for k, v in r.cache.items())])
    return rows


def history_rows(records) -> list[list]:
    """One row per request of the session: what it measured (the outcome), not what was asked."""
    rows = []
    for i, rec in enumerate(records):
        r, s = rec.result, eval_summaries(rec)[1]
        o = outcome(rec)
        what = verdict(rec, o)[0] + (" (partial)" if o.partial else "") + (", damage" if o.warnings else "")
        if rec.is_teach:  # the taught name on held-out views
            s = {"target_name_acc_heldout": rec.measures.heldout_named}
        rows.append([i + 1, r.target or "?", what, r.method, r.steps_run, pct(s.get("target_name_acc_heldout")),
                     pct(s.get("retain_acc")), pct(s.get("earlier_name_acc_heldout")) if i else "-", rec.timings.total])  # fmt: skip
    return rows


# --------------------------------------------------------------------------------- figures, notes


def figures(rec: RequestRecord) -> tuple:
    """The two plotly figures of a record (None where it has none)."""
    import plotly.io as pio  # plotly is heavy (~1 s): imported when a figure is shown

    figs = rec.figures or {}
    fb = pio.from_json(figs["before"]) if figs.get("before") else None
    fa = pio.from_json(figs["after"]) if figs.get("after") else None
    return fb, fa


def plot_note(rec: RequestRecord) -> str:
    figs, emb = rec.figures or {}, rec.result.embeddings or {}
    if not figs.get("before"):
        return "No embedding data for this request."
    counts = {g: emb["groups"].count(g) for g in ("forget", "retain", "unknown")}
    if figs.get("warming_up"):
        why = (
            " UMAP is still warming up (numba compiles it once after start): PCA is shown instead; "
            "the plots switch to UMAP when this result is shown again (repeat or undo)."
        )
    else:
        why = " Too few points for UMAP: PCA is shown instead." if figs["method"] == "PCA" else ""
    return (
        f"**{figs['method']}** of the pooled visual features z(x) (fitted on *before*, applied to *after*, same axes): "
        f"{counts['forget']} forget images (red stars), {counts['retain']} retained images (blue), "
        f'{counts["unknown"]} images of the "unknown" region (grey). Hover a point for its label.' + why
    )


def gallery(rec: RequestRecord, images, paths) -> list[tuple]:
    """The forget images captioned with who the model says it is, before -> after. A browser-readable
    upload is shown as the file itself (no re-encoding), anything else as the decoded image."""
    before, after = rec.before.forget.identity, rec.after.forget.identity
    out = []
    for i, im in enumerate(images):
        p = paths[i] if paths and i < len(paths) else None
        shown = p if p and Path(p).suffix.lower() in BROWSER_TYPES else im
        out.append((shown, f"#{i + 1}: {before[i] or '(empty)'} → {after[i] or '(empty)'}"))
    return out


def numbers_note(rec: RequestRecord) -> str:
    ev = rec.evals
    if ev is None:
        return ""
    return (
        f"Evaluation ({ev.mode}): {ev.before.get('n_items', '?')} questions per model on renders of every character, "
        f"held-out renders and paraphrases included; before {ev.seconds_before} s, after {ev.seconds_after} s "
        f"(0 s = reused from the cache){'' if ev.after else '; no result after'}."
    )


# --------------------------------------------------------------------------------------- statuses


QUIZ_DAMAGE_MEANS = (
    "*What the warning means:* the quiz of section 5 asks every retained character the same questions about the "
    "same renders before and after this request; the characters named above now answer some of them wrongly (the "
    "questions about one render move together: a render the model no longer recognises costs every question on "
    "it). A look-alike shares the target's shape and colour, the very features forgetting has to move."
)


def forget_status(rec: RequestRecord, k: int) -> str:
    """The status line of a finished request: what it measured (forgotten or not, which images are still
    named, by what), the warnings from before training, and collateral damage with Undo one click away."""
    if rec.is_teach:
        return teach_status(rec, k)
    r, o = rec.result, outcome(rec)
    headline = verdict(rec, o)[1]
    seconds = f"{rec.shown_s:.1f} s" if rec.shown_s is not None else "a moment"
    early = " (stopped early: forgotten)" if r.stopped_early else ""
    steps = f"{r.method}, {r.steps_run} of {r.config['steps']} steps{early}"
    if rec.restored:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.created))
        head = (f"**Request {k} restored from the cache** in {seconds} (this exact request finished on {when}; "
                f"no retraining): **{headline}** ({steps}).")  # fmt: skip
    else:
        head = f"**Request {k} done** in {seconds} (queue included): **{headline}** ({steps})."
    out = [head]
    before = identification(rec).warnings
    if before:
        out.append(f"Before training: {sentences(before)}.")
    if o.warnings:
        out.append(f"⚠ **Collateral damage:** {sentences(o.warnings)}. Press **Undo last** to go back.")
        if any("quiz items" in w for w in o.warnings):  # a quiz drop (retain_damage): say what it counts
            out.append(QUIZ_DAMAGE_MEANS)
    if o.partial:
        out.append("Training stopped at the time limit; what it learned is kept and measured above (lower Steps to finish).")
    pending = rec.evaluation not in ("none", "cancelled") and not (rec.evals and rec.evals.mode == rec.evaluation)
    if rec.evaluation == "cancelled" and rec.evaluable:
        out.append("Accuracies cancelled: the verdict is from the answers above; press **Evaluate** (section 5) to measure them.")
    elif pending and rec.evaluable:
        out.append("Accuracies (section 5) follow these answers; the verdict is updated with them.")
    return "\n\n".join(out)


def stopped_status(why: str, k: int, seconds: float, time_limit: int) -> str:
    if why == "queued":
        return "Cancelled before it started; the model is unchanged."
    if why == "time limit":
        return (f"Request {k + 1} stopped at the time limit of {time_limit} s after {seconds:.1f} s before it learned "
                "anything; the model is unchanged. Lower Steps and try again.")  # fmt: skip
    return f"Request {k + 1} cancelled after {seconds:.1f} s; the model is unchanged."


def import_status(records, file: str) -> str:
    """The status line after an import: how many requests, and what each one measured."""
    items = [f"{k}. {rec.target or '?'} ({rec.result.method or '?'}): {verdict(rec)[1]}" for k, rec in enumerate(records, 1)]
    return (f"**Imported {len(records)} request(s)** from `{file}`: " + "; ".join(items) + ". This session's model is "
            "now the imported one (Undo and Reset work on it; the last request's results are shown).")  # fmt: skip


# ---------------------------------------------------------------------------------------- outputs


def empty(status: str, records=()) -> Outputs:
    """The base model again (after Reset, or Undo of the only request): no result, an empty form and
    gallery, the Ask answers cleared; the session's history."""
    ask_base, ask_current, ask_note = ASK_CLEARED
    return Outputs(
        status=status, history=table(history_rows(records), HISTORY_HEADERS), gallery=[],
        forget_table=table([], FORGET_HEADERS), retain_table=table([], RETAIN_HEADERS), text_note="",
        text_table=table([], TEXT_HEADERS), plot_before=None, plot_after=None, plot_note="",
        numbers=table([], NUMBER_HEADERS), files=None, name="", name_note="",
        ask_base=ask_base, ask_current=ask_current, ask_note=ask_note, null_plot=None, null_note="",
    )  # fmt: skip


def status_only(status: str) -> Outputs:
    """Only the status line (and nothing of the result panels) changes."""
    return Outputs(status, *([KEEP] * 10))


def render(rec: RequestRecord, records, status: str, gallery_items=KEEP, form: bool = False) -> Outputs:
    """Every panel of one request's result; the Ask answers cleared (the model changed). ``form``: also put
    the request's images back in the upload and its target in the name box (after Undo)."""
    rows, note = text_rows(rec)
    fb, fa = figures(rec)
    name_note = (teach_name_note(rec) if rec.is_teach else identify_note(identification(rec))) if form else KEEP
    null_plot, null_note = nullspace_figure(rec.result.null_space, rec.result.method)
    ask_base, ask_current, ask_note = ASK_CLEARED
    return Outputs(
        status=status, history=table(history_rows(records), HISTORY_HEADERS), gallery=gallery_items,
        forget_table=table(forget_rows(rec, list(rec.names)), FORGET_HEADERS),
        retain_table=table(rec.retain_rows or [], RETAIN_HEADERS), text_note=note, text_table=table(rows, TEXT_HEADERS),
        plot_before=fb, plot_after=fa, plot_note=plot_note(rec), numbers=table(number_rows(rec), NUMBER_HEADERS),
        files=(list(rec.paths) or None) if form else KEEP, name=(rec.target or "") if form else KEEP, name_note=name_note,
        ask_base=ask_base, ask_current=ask_current, ask_note=ask_note, null_plot=null_plot, null_note=null_note,
    )  # fmt: skip
