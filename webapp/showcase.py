"""What the result shows besides the engine's numbers: the retained characters' answers (on held-out renders
the base model names correctly) and the two embedding plots (UMAP from the worker process, else PCA)."""

from __future__ import annotations

import threading

from nscvf import world
from webapp.settings import UMAP_WAIT_S

_SEEDS: dict = {}  # (base fingerprint, character key) -> a showcase seed the base model names correctly
_SEEDS_LOCK = threading.Lock()
SEED_CANDIDATES = 8


def retained_characters(target: str | None, forgotten: list[str]) -> list:
    """A few characters that must not change: the target's look-alike sibling first, then those sharing
    its shape or colour."""
    out = [c for c in world.CHARACTERS if c.name not in forgotten]
    t = next((c for c in world.CHARACTERS if target and c.name == target), None)  # a taught concept is none
    if t is not None:
        out.sort(key=lambda c: (c.name != t.neighbour, c.shape != t.shape and c.colour != t.colour, world.CHARACTERS.index(c)))
    return out[:3]


def showcase_seeds(base_vlm, chars) -> list[int]:
    """One held-out render seed per character that the base model names correctly (deterministic: the first
    of :data:`SEED_CANDIDATES` showcase seeds that works, remembered per model), so that a retained row never
    shows the base model failing before anything was forgotten."""
    from nscvf.eval import names_in

    candidates = world.heldout_seeds(SEED_CANDIDATES, world.SEEDS["showcase"])
    fp = base_vlm.fingerprint
    for j, seed in enumerate(candidates):
        with _SEEDS_LOCK:
            todo = [c for c in chars if (fp, c.key) not in _SEEDS]
        if not todo:
            break
        answers = base_vlm.generate(["Who is this?"] * len(todo), [world.render(c, seed) for c in todo])
        with _SEEDS_LOCK:
            for c, a in zip(todo, answers):
                if names_in(a) == {c.name} or j == len(candidates) - 1:
                    _SEEDS[(fp, c.key)] = seed
    with _SEEDS_LOCK:
        return [_SEEDS.get((fp, c.key), candidates[0]) for c in chars]


def retain_rows(chain, target: str | None, retain=None) -> list[list[str]]:
    """Before/after answers on what must not change: held-out renders of a few other characters (the
    embedded world), else the first uploaded images to keep."""
    if chain.domain.is_world:
        chars = retained_characters(target, chain.forgotten_targets + ([target] if target else []))
        qs = ["Who is this?", world.IMAGE_FACT_TEMPLATES["town"]["train"][0]]
        imgs = [world.render(c, s) for c, s in zip(chars, showcase_seeds(chain.base_vlm, chars))]
        labels = [
            f"{c.name} (held-out render{'; look-alike sibling' if target and c.neighbour == target else ''})" for c in chars
        ]
    else:
        imgs = list(retain or [])[:3]
        qs = chain.domain.probe_questions()
        labels = [f"kept image #{i + 1}" for i in range(len(imgs))]
    if not imgs:
        return []
    flat_q = [q for _ in imgs for q in qs]
    flat_i = [im for im in imgs for _ in qs]
    before = chain.base_vlm.generate(flat_q, flat_i)
    after = chain.vlm.generate(flat_q, flat_i)
    flat_l = [label for label in labels for _ in qs]
    return [[flat_l[k], q, before[k], after[k], "same" if before[k] == after[k] else "CHANGED"] for k, q in enumerate(flat_q)]


def draw_figures(emb: dict, projector) -> dict:
    """The two embedding figures (plotly JSON). UMAP from the worker once it is warm; before that (the first
    ~30-60 s after start on a small CPU) PCA, labelled as such and redrawn on a later view."""
    import numpy as np

    from nscvf import plots

    if not emb or not emb.get("before"):
        return {"before": None, "after": None, "method": "none"}
    before, after = np.asarray(emb["before"], dtype=np.float32), np.asarray(emb["after"], dtype=np.float32)
    small = len(before) < plots.MIN_UMAP_POINTS
    got = None if small or not projector.wait(UMAP_WAIT_S) else projector.project(before, after)
    if got is not None:
        # PCA of the 2-D UMAP layout is a rotation about its centre: the layout and its axes are kept.
        fb, fa, _ = plots.embedding_figures(got[0], got[1], emb["groups"], emb["labels"], method="pca")
        for title, fig in (("Before", fb), ("After", fa)):
            fig.update_layout(title=f"{title} (UMAP)")
        return {"before": fb.to_json(), "after": fa.to_json(), "method": "UMAP", "warming_up": False}
    fb, fa, method = plots.embedding_figures(before, after, emb["groups"], emb["labels"], method="pca")
    warming = not small and not projector.done.is_set()
    if warming or (not small and projector.error):
        why = "UMAP is still warming up" if warming else "UMAP is unavailable"
        for title, fig in (("Before", fb), ("After", fa)):
            fig.update_layout(title=f"{title} (PCA: {why})")
    return {"before": fb.to_json(), "after": fa.to_json(), "method": method, "warming_up": warming}


def refresh_figures(projector, rec):
    """The record with its plots redrawn with UMAP when they were drawn with PCA during the warm-up."""
    if rec.figures.get("warming_up") and projector.ready:
        return rec.replace(figures=draw_figures(rec.result.get("embeddings") or {}, projector))
    return rec
