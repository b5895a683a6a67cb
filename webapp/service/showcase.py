"""What the result shows besides the engine's numbers: the answers on what must not change (which images,
and which questions, the model's Domain decides: :meth:`nscvf.method.domain.Domain.showcase`) and the two
embedding plots (UMAP from the worker process, else PCA)."""

from __future__ import annotations

import numpy as np

from nscvf import plots
from webapp.state.records import RequestRecord
from webapp.state.settings import UMAP_WAIT_S


def retain_rows(chain, target: str | None, retain=None) -> list[list[str]]:
    """Before/after answers on what must not change: the Domain's showcase images (the embedded world: a
    few other characters' held-out renders; another model: the first uploaded images to keep)."""
    domain = chain.domain
    labels, imgs = domain.showcase(chain.base_vlm, target, chain.forgotten_targets + ([target] if target else []), retain)
    if not imgs:
        return []
    qs = domain.showcase_questions()
    flat_q = [q for _ in imgs for q in qs]
    flat_i = [im for im in imgs for _ in qs]
    before = chain.base_vlm.generate(flat_q, flat_i)
    after = chain.vlm.generate(flat_q, flat_i)
    flat_l = [label for label in labels for _ in qs]
    return [[flat_l[k], q, before[k], after[k], "same" if before[k] == after[k] else "CHANGED"] for k, q in enumerate(flat_q)]


def retained_answers(chain, result, retain=None) -> list[list[str]]:
    """:func:`retain_rows` as a GPU job's ``then`` hook (run in the same call, the new request applied;
    module level so that it crosses to a ZeroGPU worker by name)."""
    return retain_rows(chain, result.target, None if retain is None else list(retain))


def draw_figures(emb: dict, umap) -> dict:
    """The two embedding figures (plotly JSON). UMAP from the worker once it is warm; before that (the first
    ~30-60 s after start on a small CPU) PCA, labelled as such and redrawn on a later view."""
    if not emb or not emb.get("before"):
        return {"before": None, "after": None, "method": "none"}
    before, after = np.asarray(emb["before"], dtype=np.float32), np.asarray(emb["after"], dtype=np.float32)
    small = len(before) < plots.MIN_UMAP_POINTS
    got = None if small or not umap.wait(UMAP_WAIT_S) else umap.project(before, after)
    if got is not None:
        # PCA of the 2-D UMAP layout is a rotation about its centre: the layout and its axes are kept.
        fb, fa, _ = plots.embedding_figures(got[0], got[1], emb["groups"], emb["labels"], method="pca")
        for title, fig in (("Before", fb), ("After", fa)):
            fig.update_layout(title=f"{title} (UMAP)")
        return {"before": fb.to_json(), "after": fa.to_json(), "method": "UMAP", "warming_up": False}
    fb, fa, method = plots.embedding_figures(before, after, emb["groups"], emb["labels"], method="pca")
    warming = not small and not umap.done.is_set()
    if warming or (not small and umap.error):
        why = "UMAP is still warming up" if warming else "UMAP is unavailable"
        for title, fig in (("Before", fb), ("After", fa)):
            fig.update_layout(title=f"{title} (PCA: {why})")
    return {"before": fb.to_json(), "after": fa.to_json(), "method": method, "warming_up": warming}


def refresh_figures(umap, rec: RequestRecord) -> RequestRecord:
    """The record with its plots redrawn with UMAP when they were drawn with PCA during the warm-up."""
    if rec.figures.get("warming_up") and umap.ready:
        return rec.replace(figures=draw_figures(rec.result.embeddings or {}, umap))
    return rec
