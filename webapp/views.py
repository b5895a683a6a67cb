"""Pure views: a :class:`~webapp.records.RequestRecord` (and the session's records) -> tables (pandas),
notes (markdown), figures (plotly) and status lines, gathered in :class:`Outputs`. No Gradio, no engine,
no state: the same record gives the same outputs. :data:`KEEP` marks an output to leave as it is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from webapp.nullspace_view import nullspace_figure
from webapp.records import RequestRecord
from webapp.settings import BROWSER_TYPES
from webapp.teach_view import is_teach, teach_name_note, teach_number_rows, teach_status, teach_text_note

FORGET_HEADERS = ["image", "question", "before", "after", "named before", "named after"]
RETAIN_HEADERS = ["character", "question", "before", "after", "change"]
TEXT_HEADERS = ["question (text only, no image)", "before", "after", "change"]
NUMBER_HEADERS = ["measure", "before", "after"]
HISTORY_HEADERS = ["#", "target", "outcome", "method", "steps", "target named", "others named", "earlier named", "seconds"]
ASK_CLEARED = ("", "", "The model changed: ask again to compare the base and the current model.")


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # "leave this output as it is" (the handlers turn it into gr.skip())


class Outputs(NamedTuple):
    """The outputs of Forget, Undo and Reset, in the page's order."""

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
    null_plot: Any = KEEP  # the null space of the request (webapp.nullspace_view)
    null_note: Any = KEEP


def table(rows, headers) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _names(answer: str) -> str:
    from nscvf.eval import names_in

    n = sorted(names_in(answer))
    return ", ".join(n) if n else "-"


# ------------------------------------------------------------------------------------------- rows


def forget_rows(r: dict, names) -> list[list[str]]:
    """Per forget image: the identity question and one fact question, before and after, and who is named."""
    pb, pa = r["probes_before"]["forget"], r["probes_after"]["forget"]
    qs = pb["questions"]
    rows = []
    for i in range(r["n_forget"]):
        fact_q = qs[1 + i % (len(qs) - 1)] if len(qs) > 1 else None
        for q in [qs[0]] + ([fact_q] if fact_q else []):
            b, a = pb["answers"][q][i], pa["answers"][q][i]
            label = f"#{i + 1} {names[i]}" if i < len(names) else f"#{i + 1}"
            rows.append([label, q, b, a, _names(b), _names(a)])
    return rows


def text_rows(r: dict) -> tuple[list[list[str]], str]:
    """Text-only questions about the target, before and after, and the note on whether any answer changed."""
    if is_teach(r):
        return [], teach_text_note(r)
    tb, ta = r["probes_before"].get("text"), r["probes_after"].get("text")
    logits = (
        " and the next-token logits are bit-identical" if r.get("text_logits_identical") else "; the next-token logits differ"
    )
    if not tb or not ta:
        note = "**Text-only:** this model has no text probes; " + (
            "the next-token logits of text prompts are bit-identical: unlearning touched only the visual path."
            if r.get("text_logits_identical")
            else "text logits changed."
        )
        return [], note
    target = r.get("target")
    pairs = list(zip(tb["questions"], tb["answers"], ta["answers"]))
    about = [p for p in pairs if target and target in p[0]] or pairs[:6]
    rows = [[q, b, a, "same" if a == b else "CHANGED"] for q, b, a in about]
    n = len(pairs)
    if r.get("text_identical"):
        note = (
            f"**Text-only answers are identical before and after** on all {n} text questions{logits}: "
            "unlearning touched only the visual path, so the model still knows the facts when asked by name."
        )
    else:
        changed = sum(1 for _, b, a in pairs if a != b)
        note = f"**Text-only answers changed** on {changed} of {n} text questions{logits}."
    return rows, note


def eval_summaries(rec: RequestRecord) -> tuple[dict, dict]:
    r = rec.result
    before = (rec.evals.before if rec.evals else None) or r.get("eval_before") or {}
    after = (rec.evals.after if rec.evals else None) or r.get("eval_after") or {}
    return before.get("summary") or {}, after.get("summary") or {}


ACCURACIES = (
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
    if not rec.evaluable:
        return [["accuracies", "not available", "(the evaluation asks about the embedded model's characters)"]]
    return [["accuracies", "evaluating…", "(the accuracies follow the answers)"]]


def number_rows(rec: RequestRecord) -> list[list[str]]:
    """Accuracies before -> after, retain drift, the null space, text identity, steps and times."""
    r = rec.result
    if is_teach(r):
        return teach_number_rows(rec)
    rows = _accuracy_rows(rec)
    d = r.get("retain_drift") or {}
    rows.append(["retain drift of visual features (mean / max)", "0", f"{d.get('mean', 'n/a')} / {d.get('max', 'n/a')}"])
    ns = (r.get("null_space") or {}).get("summary") or {}
    if ns.get("layers"):
        kept = f"{ns['mean_kept_rank']} ({100 * ns['mean_kept_fraction']:.1f}%) over {ns['layers']} layers"
        rows.append(["null space: mean kept rank (share of dims)", "", kept])
    else:
        rows.append(["null space", "", "not used by this method"])
    rows.append(
        ["text answers identical / logits identical", "", f"{r.get('text_identical')} / {r.get('text_logits_identical')}"]
    )
    rows.append(["steps run", "", f"{r.get('steps_run')}{' (stopped early: forgotten)' if r.get('stopped_early') else ''}"])
    t = r.get("timings") or {}
    job = rec.job_s if rec.job_s is not None else t.get("total", "n/a")
    plots = rec.plots_s if rec.plots_s is not None else "n/a"
    rows.append(
        [
            "job time (s)",
            "",
            f"{job} (engine {t.get('total', 'n/a')}: optimise {t.get('optimise', 'n/a')}, "
            f"{t.get('seconds_per_step', 'n/a')} s/step; plots {plots})",
        ]
    )
    if rec.evals is not None:
        rows.append([f"evaluation time (s, {rec.evals.mode})", f"{rec.evals.seconds_before}", f"{rec.evals.seconds_after}"])
    cache = r.get("cache") or {}
    if cache:
        rows.append(["reused from the cache", "", ", ".join(f"{k}: {v}" for k, v in cache.items())])
    return rows


def history_rows(records) -> list[list]:
    """One row per request of the session: what it measured (the outcome), not what was asked."""
    rows = []
    for i, rec in enumerate(records):
        r, s = rec.result, eval_summaries(rec)[1]
        o = outcome(rec)
        what = verdict(rec, o)[0] + (" (partial)" if o.partial else "") + (", damage" if o.warnings else "")
        total = (r.get("timings") or {}).get("total")
        if is_teach(r):  # the taught name on held-out views
            s = {"target_name_acc_heldout": (r.get("measures") or {}).get("heldout_named")}
        rows.append([i + 1, r.get("target") or "?", what, r["method"], r["steps_run"], pct(s.get("target_name_acc_heldout")),
                     pct(s.get("retain_acc")), pct(s.get("earlier_name_acc_heldout")) if i else "-", total])  # fmt: skip
    return rows


def outcome(rec: RequestRecord):
    """What the request did, as measured (:func:`nscvf.method.outcome.assess`), with the separate
    evaluation's accuracies once they are there (held-out numbers can change the verdict)."""
    from nscvf.method.outcome import assess

    r = dict(rec.result)
    if rec.evals is not None:
        r["eval_before"], r["eval_after"] = rec.evals.before, rec.evals.after
    return assess(r, rec.world)


def verdict(rec: RequestRecord, o=None) -> tuple[str, str]:
    """(status, headline) of a request: the outcome's, except that images the base model named nobody in
    (no target given) had nothing to forget, whatever they are answered now."""
    o = o or outcome(rec)
    if rec.world and rec.target is None and not identification(rec).counts:
        return "nothing to forget", "nothing to forget: the model named nobody in these images before training"
    return o.status, o.headline()


def identification(rec: RequestRecord):
    """Who the base model said the images showed before training, and the warnings that follow."""
    from nscvf import world
    from nscvf.method.outcome import identification as identify

    pb = rec.result["probes_before"]["forget"]
    named_world = rec.world and (rec.target is None or rec.target in world.NAMES)  # not a concept taught in the session
    return identify(pb["answers"][pb["questions"][0]], rec.target, named_world)


# --------------------------------------------------------------------------------- figures, notes


def figures(rec: RequestRecord) -> tuple:
    """The two plotly figures of a record (None where it has none)."""
    import plotly.io as pio

    figs = rec.figures or {}
    fb = pio.from_json(figs["before"]) if figs.get("before") else None
    fa = pio.from_json(figs["after"]) if figs.get("after") else None
    return fb, fa


def plot_note(rec: RequestRecord) -> str:
    figs, emb = rec.figures or {}, rec.result.get("embeddings") or {}
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
        f"{counts['forget']} forget images (red stars), {counts['retain']} retained renders (blue), "
        f'{counts["unknown"]} renders of the "unknown" region (grey). Hover a point for its label.' + why
    )


def gallery(rec: RequestRecord, images, paths) -> list[tuple]:
    """The forget images captioned with who the model says it is, before -> after. A browser-readable
    upload is shown as the file itself (no re-encoding), anything else as the decoded image."""
    pb, pa = rec.result["probes_before"]["forget"], rec.result["probes_after"]["forget"]
    q0 = pb["questions"][0]
    out = []
    for i, im in enumerate(images):
        p = paths[i] if paths and i < len(paths) else None
        shown = p if p and Path(p).suffix.lower() in BROWSER_TYPES else im
        out.append((shown, f"#{i + 1}: {pb['answers'][q0][i] or '(empty)'} → {pa['answers'][q0][i] or '(empty)'}"))
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


def _sentences(items) -> str:
    return "; ".join(items)


def forget_status(rec: RequestRecord, k: int) -> str:
    """The status line of a finished request: what it measured (forgotten or not, which images are still
    named, by what), the warnings from before training, and collateral damage with Undo one click away."""
    if is_teach(rec):
        return teach_status(rec, k)
    r, o = rec.result, outcome(rec)
    headline = verdict(rec, o)[1]
    seconds = f"{rec.shown_s:.1f} s" if rec.shown_s is not None else "a moment"
    early = " (stopped early: forgotten)" if r.get("stopped_early") else ""
    steps = f"{r['method']}, {r['steps_run']} of {r['config']['steps']} steps{early}"
    if rec.restored:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.created))
        head = (f"**Request {k} restored from the cache** in {seconds} (this exact request finished on {when}; "
                f"no retraining): **{headline}** ({steps}).")  # fmt: skip
    else:
        head = f"**Request {k} done** in {seconds} (queue included): **{headline}** ({steps})."
    out = [head]
    before = identification(rec).warnings
    if before:
        out.append(f"Before training: {_sentences(before)}.")
    if o.warnings:
        out.append(f"⚠ **Collateral damage:** {_sentences(o.warnings)}. Press **Undo last** to go back.")
    if o.partial:
        out.append("Training stopped at the time limit; what it learned is kept and measured above (lower Steps to finish).")
    pending = rec.evaluation != "none" and not (rec.evals and rec.evals.mode == rec.evaluation) and rec.evaluable
    if pending:
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
    items = [f"{k}. {rec.target or '?'} ({rec.result.get('method', '?')}): {verdict(rec)[1]}" for k, rec in enumerate(records, 1)]
    return (f"**Imported {len(records)} request(s)** from `{file}`: " + "; ".join(items) + ". This session's model is "
            "now the imported one (Undo and Reset work on it; the last request's results are shown).")  # fmt: skip


# ---------------------------------------------------------------------------------------- outputs


def empty(status: str, records=()) -> Outputs:
    """The base model again (after Reset, or Undo of the only request): no result, an empty form and
    gallery, the Ask answers cleared; the session's history."""
    return Outputs(
        status,
        table(history_rows(records), HISTORY_HEADERS),
        [],
        table([], FORGET_HEADERS),
        table([], RETAIN_HEADERS),
        "",
        table([], TEXT_HEADERS),
        None,
        None,
        "",
        table([], NUMBER_HEADERS),
        None,
        "",
        "",
        *ASK_CLEARED,
        None,
        "",
    )


def status_only(status: str) -> Outputs:
    return Outputs(status, *([KEEP] * 10))


def render(rec: RequestRecord, records, status: str, gallery_items=KEEP, form: bool = False) -> Outputs:
    """Every panel of one request's result; the Ask answers cleared (the model changed). ``form``: also put
    the request's images back in the upload and its target in the name box (after Undo)."""
    rows, note = text_rows(rec.result)
    fb, fa = figures(rec)
    files = (list(rec.paths) or None) if form else KEEP
    name = (rec.target or "") if form else KEEP
    name_note = (teach_name_note(rec) if is_teach(rec) else identify_note(identification(rec))) if form else KEEP
    null_plot, null_note = nullspace_figure(rec.result)
    return Outputs(
        status,
        table(history_rows(records), HISTORY_HEADERS),
        gallery_items,
        table(forget_rows(rec.result, list(rec.names)), FORGET_HEADERS),
        table(rec.retain_rows or [], RETAIN_HEADERS),
        note,
        table(rows, TEXT_HEADERS),
        fb,
        fa,
        plot_note(rec),
        table(number_rows(rec), NUMBER_HEADERS),
        files,
        name,
        name_note,
        *ASK_CLEARED,
        null_plot,
        null_note,
    )


def identify_note(ident) -> str:
    """The line under the name box after an upload: who the model says the images show, and warnings."""
    if ident is None:
        return ""
    n = len(ident.answers)
    if not ident.counts and not ident.warnings:
        return ""
    if ident.inferred and not ident.warnings:
        return f"The base model names **{ident.inferred}** on {ident.counts[ident.inferred]} of {n} images."
    return "⚠ " + _sentences(ident.warnings) + "."
