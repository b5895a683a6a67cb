"""What a request did, as the page says it: the measured outcome (:func:`outcome`), the status and
headline (:func:`verdict`), who the base model said the images showed (:func:`identification`) and the
line under the name box (:func:`identify_note`). Pure: a record in, words out."""

from __future__ import annotations

from nscvf.eval import names_in
from nscvf.method.outcome import assess
from nscvf.method.outcome import identification as identify
from webapp.state.records import RequestRecord, result_dict
from webapp.views.format import sentences


def outcome(rec: RequestRecord):
    """What the request did, as measured (:func:`nscvf.method.outcome.assess`), with the separate
    evaluation's accuracies once they are there (held-out numbers can change the verdict) and the Retained
    table's answers (a changed one is named as damage)."""
    r = result_dict(rec.result)
    if rec.evals is not None:
        r["eval_before"], r["eval_after"] = rec.evals.before, rec.evals.after
    return assess(r, rec.world, rec.retain_rows)


def identification(rec: RequestRecord):
    """Who the base model said the images showed before training, and the warnings that follow."""
    # not a concept taught in the session: a world character or a concept of the photo model's table
    named = rec.world and (rec.target is None or bool(names_in(f"This is {rec.target}.")))
    return identify(rec.before.forget.identity, rec.target, named)


def verdict(rec: RequestRecord, o=None) -> tuple[str, str]:
    """(status, headline) of a request: the outcome's, except that images the base model named nobody in
    (no target given) had nothing to forget, whatever they are answered now."""
    o = o or outcome(rec)
    if rec.world and rec.target is None and not identification(rec).counts:
        return "nothing to forget", "nothing to forget: the model named nobody in these images before training"
    return o.status, o.headline()


def identify_note(ident) -> str:
    """The line under the name box after an upload: who the model says the images show, and warnings."""
    if ident is None:
        return ""
    n = len(ident.answers)
    if not ident.counts and not ident.warnings:
        return ""
    if ident.inferred and not ident.warnings:
        return f"The base model names **{ident.inferred}** on {ident.counts[ident.inferred]} of {n} images."
    return "⚠ " + sentences(ident.warnings) + "."
