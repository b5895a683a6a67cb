"""Projected embedding plots (UMAP, PCA fallback) of the forget, retain and "unknown" clusters, before
and after unlearning, as plotly figures.

One projection is fitted on the *before* features and applied to the *after* features, so the two
panels share axes and the forget cluster is seen leaving its old place. umap-learn is imported lazily
(its import and first fit take ~10 s each; the app warms it up at launch, in webapp.state.umap_worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

GROUP_COLOURS = {"forget": "#d62728", "retain": "#1f77b4", "unknown": "#7f7f7f"}
MIN_UMAP_POINTS = 12  # below this, UMAP is meaningless: PCA, labelled as such


def _umap():
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "nscvf", "numba"))
    import umap  # noqa: PLC0415  (slow import, on purpose lazy)

    return umap


@dataclass
class Projection:
    method: str  # "UMAP" or "PCA"
    before: np.ndarray  # (N, 2)
    after: np.ndarray  # (N, 2)


def project(before: np.ndarray, after: np.ndarray, method: str = "auto", seed: int = 0) -> Projection:
    """Fit on ``before`` (N, D), transform both. ``method``: "auto" (UMAP unless too few points), "umap", "pca"."""
    before = np.asarray(before, dtype=np.float32)
    after = np.asarray(after, dtype=np.float32)
    n = len(before)
    if method == "auto":
        method = "umap" if n >= MIN_UMAP_POINTS else "pca"
    if method == "umap":
        umap = _umap()
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), n_components=2, random_state=seed, n_jobs=1, metric="cosine")
        b = reducer.fit_transform(before)
        a = reducer.transform(after)
        return Projection("UMAP", b, a)
    mean = before.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(before - mean, full_matrices=False)
    comps = vt[:2].T if vt.shape[0] >= 2 else np.pad(vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    return Projection("PCA", (before - mean) @ comps, (after - mean) @ comps)


def embedding_figures(before: np.ndarray, after: np.ndarray, groups: list[str], labels: list[str], method: str = "auto"):
    """Two plotly figures (before, after) with shared axes, coloured by group, hover = label."""
    import plotly.graph_objects as go  # plotly: heavy, only when a figure is drawn

    proj = project(before, after, method)
    both = np.concatenate([proj.before, proj.after])
    pad = 0.08 * (both.max(0) - both.min(0) + 1e-6)
    lo, hi = both.min(0) - pad, both.max(0) + pad
    figs = []
    for title, pts in (("Before", proj.before), ("After", proj.after)):
        fig = go.Figure()
        for g in ("unknown", "retain", "forget"):
            idx = [i for i, gg in enumerate(groups) if gg == g]
            if not idx:
                continue
            fig.add_trace(
                go.Scatter(
                    x=pts[idx, 0],
                    y=pts[idx, 1],
                    mode="markers",
                    name=g,
                    marker={
                        "color": GROUP_COLOURS[g],
                        "size": 9 if g == "forget" else 7,
                        "opacity": 0.85,
                        "symbol": "star" if g == "forget" else "circle",
                    },
                    text=[labels[i] for i in idx],
                    hovertemplate="%{text}<extra>" + g + "</extra>",
                )
            )
        fig.update_layout(
            title=f"{title} ({proj.method}{', too few points for UMAP' if proj.method == 'PCA' else ''})",
            xaxis={"range": [lo[0], hi[0]], "showticklabels": False, "zeroline": False},
            yaxis={"range": [lo[1], hi[1]], "showticklabels": False, "zeroline": False},
            height=380,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
            legend={"orientation": "h", "y": -0.05},
            template="plotly_white",
        )
        figs.append(fig)
    return figs[0], figs[1], proj.method
