"""The null space of one request, as measured by the run (``UnlearnResult.null_space``): per constrained
layer, the kept rank as a share of the layer's input dimension and the energy of the protected inputs inside
the kept space, as plotly bars. Pure: the measurement in, a figure (or None) and a note out."""

from __future__ import annotations

import re

from webapp.state.records import NullSpaceSummary, typed

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|blocks|h)\.(\d+)\.(.+)$")
_WORDS = {"self_attn.": "attn.", "attention.": "attn.", "multi_modal_projector": "projector"}


def _tidy(s: str) -> str:
    for long, short in _WORDS.items():
        s = s.replace(long, short)
    return s


def short_names(names: list[str]) -> list[str]:
    """Readable, unique labels for the layers: ``L3 attn.q_proj`` for encoder layer 3's query projection,
    the last two parts otherwise (``projector.linear_1``); the full names when the short ones collide."""
    out = []
    for n in names:
        m = _LAYER.search(n)
        out.append(f"L{m.group(1)} {_tidy(m.group(2))}" if m else _tidy(".".join(n.split(".")[-2:])))
    return out if len(set(out)) == len(out) else list(names)


def not_constrained_note(method: str | None) -> str:
    return (
        f"**Not constrained:** the method `{method or '?'}` keeps no null space; its update is free "
        "to move the features of what must not change (compare the retain drift in the numbers above)."
    )


def nullspace_figure(null_space: dict, method: str | None):
    """(figure, note) of a request's null space (``UnlearnResult.null_space``, by ``method``): two bar rows
    over the same layers (kept rank / dimension; energy inside the null space), or (None, note) for a method
    without one."""
    ns = null_space or {}
    layers, summary = ns.get("layers") or {}, typed(NullSpaceSummary, ns.get("summary"))
    if not layers:
        return None, not_constrained_note(method)
    from plotly.subplots import make_subplots  # plotly is heavy (~1 s): imported when a figure is drawn

    names = list(layers)
    labels = short_names(names)
    kept = [layers[n]["kept_rank"] / max(1, layers[n]["dim"]) for n in names]
    energy = [float(layers[n].get("energy_in_null_space") or 0.0) for n in names]
    hover = [f"{n}<br>kept rank {layers[n]['kept_rank']} of {layers[n]['dim']}" for n in names]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("kept rank / layer dimension", "energy inside the null space"))  # fmt: skip
    fig.add_bar(x=labels, y=kept, name="kept rank / dim", marker_color="#3b6fb6", hovertext=hover, row=1, col=1)
    fig.add_bar(x=labels, y=energy, name="energy in null space", marker_color="#c0504d", hovertext=names, row=2, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(tickformat=".1e" if max(energy, default=0) < 1e-2 else ".2%", row=2, col=1)
    fig.update_layout(height=460, showlegend=False, margin=dict(l=50, r=20, t=40, b=110), bargap=0.25)
    fig.update_xaxes(tickangle=-45, row=2, col=1)
    return fig, _note(summary, len(names))


def _note(summary: NullSpaceSummary, n: int) -> str:
    threshold = summary.energy
    at = f" at energy threshold {threshold:g}" if isinstance(threshold, (int, float)) else ""
    mean = summary.mean_kept_fraction
    kept = f"; on average {100 * mean:.1f}% of each layer's dimensions kept" if mean is not None else ""
    top = summary.max_energy_in_null_space
    worst = f"; at most {top:.2e} of the protected inputs' energy inside the kept space" if top is not None else ""
    return (
        f"**Null space of this request**{at}: {n} constrained layers{kept}{worst}. The update of each layer "
        "stays inside its kept directions, where the images to keep have (almost) no energy."
    )
