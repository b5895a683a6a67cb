"""What the app keeps of one finished request: :class:`RequestRecord`, its cache key, and a versioned
dict form (the cache stores the dict, so a record written by another version is simply not reused)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

RECORD_VERSION = 2  # 1: the untyped dict of app.py before webapp/


@dataclass(frozen=True)
class Evaluation:
    """The accuracies before and after a request (``nscvf.eval.evaluate`` dicts) and what they cost."""

    mode: str
    before: dict
    after: dict
    seconds_before: float
    seconds_after: float

    @property
    def seconds(self) -> float:
        return round(self.seconds_before + self.seconds_after, 2)


@dataclass(frozen=True)
class RequestRecord:
    """One request of a session, as shown: the engine's result (``UnlearnResult.to_dict()``), its adapter
    weights (to restore it without retraining), the retained-characters rows, the plots (plotly JSON) and
    the app's timings. Frozen: the service replaces a record (``dataclasses.replace``), never edits it."""

    result: dict
    adapter_state: dict  # peft state dict, CPU tensors (chain.adapter_state())
    retain_rows: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # {"before", "after": plotly JSON, "method", "warming_up"}
    job_s: float | None = None
    plots_s: float | None = None
    created: float = 0.0
    key: tuple | None = None  # the cache key it is stored under
    evaluation: str = "quick"  # the evaluation mode asked for
    evals: Evaluation | None = None
    evaluable: bool = True  # the model's domain has evaluation questions about this target
    world: bool = True  # the model's domain names characters (the embedded world): outcomes name who is named
    # per session, not stored:
    names: tuple = ()  # the uploaded files' names
    paths: tuple = ()  # the uploaded files (to show them again after Undo)
    shown_s: float | None = None  # seconds from the click to the result (queue included)
    restored: bool = False  # restored from the cache, not trained
    retain: tuple = ()  # the uploaded images to keep (empty: the model's own), to run the request again

    LOCAL = ("names", "paths", "shown_s", "restored", "retain")

    @property
    def target(self) -> str | None:
        return self.result.get("target")

    def replace(self, **changes) -> RequestRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The stored form (no per-session fields)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.LOCAL}
        d["evals"] = dataclasses.asdict(self.evals) if self.evals else None
        return {"version": RECORD_VERSION, **d}

    @classmethod
    def from_dict(cls, d) -> RequestRecord | None:
        """The record, or None for anything else (another version, a foreign value)."""
        if not isinstance(d, dict) or d.get("version") != RECORD_VERSION:
            return None
        known = {f.name for f in dataclasses.fields(cls)} - set(cls.LOCAL)
        values = {k: v for k, v in d.items() if k in known}
        if values.get("evals"):
            values["evals"] = Evaluation(**values["evals"])
        return cls(**values)


def result_key(state_fingerprint: str, images, cfg, target: str | None, retain=None) -> tuple:
    """The cache key of a request: the chain state it starts from, the images, the settings, the name."""
    from nscvf.cache import image_set_fingerprint

    return (
        "app-result",
        RECORD_VERSION,
        state_fingerprint,
        image_set_fingerprint(images),
        cfg.key(),
        target or "",
        image_set_fingerprint(retain) if retain else "",
    )
