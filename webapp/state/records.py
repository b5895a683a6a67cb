"""What the app keeps of one finished request: :class:`RequestRecord` (the engine's typed
:class:`~nscvf.method.result.UnlearnResult` and what the page adds), its cache key, a versioned dict form
(the cache stores the dict, so a record written by another version is simply not reused), the comparison
record (:class:`Comparison`), and small typed views of the result's nested measurements (:class:`Probes`,
:class:`Drift`, ...), so that the views read attributes, not string keys."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field

from nscvf.method.result import UnlearnResult

RECORD_VERSION = 2  # 1: the untyped dict of app.py before webapp/; the stored form of 2 is unchanged


def typed(cls, d: dict | None):
    """``cls`` (a dataclass) from the known keys of ``d``; a missing key is the field's default (else None)."""
    d = d or {}
    return cls(**{f.name: d.get(f.name, None if f.default is MISSING else f.default) for f in dataclasses.fields(cls)})


def na(v):
    """A measurement as shown: the value, or "n/a" when it was not measured."""
    return "n/a" if v is None else v


# ------------------------------------------------------------------------- typed views of a result


@dataclass(frozen=True)
class ForgetProbe:
    """The answers about the forget images at one moment: per question (the first is the identity one),
    one answer per image."""

    questions: list
    answers: dict

    @property
    def identity(self) -> list[str]:
        return list(self.answers[self.questions[0]]) if self.questions else []


@dataclass(frozen=True)
class TextProbe:
    """The text-only questions (no image) and one answer each."""

    questions: list
    answers: list


@dataclass(frozen=True)
class Probes:
    """``UnlearnResult.probes_before`` / ``probes_after``, typed."""

    forget: ForgetProbe
    text: TextProbe | None

    @classmethod
    def of(cls, d: dict) -> Probes:
        text = d.get("text")
        return cls(typed(ForgetProbe, d["forget"]), typed(TextProbe, text) if text else None)


@dataclass(frozen=True)
class Drift:
    """Retain drift of the visual features (``UnlearnResult.retain_drift``)."""

    mean: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class NullSpaceSummary:
    """``UnlearnResult.null_space["summary"]``: over how many layers, and how much of each is kept."""

    layers: int | None = None
    mean_kept_rank: float | None = None
    mean_kept_fraction: float | None = None
    energy: float | None = None
    max_energy_in_null_space: float | None = None


@dataclass(frozen=True)
class Timings:
    """``UnlearnResult.timings`` (seconds), the parts the page shows."""

    total: float | None = None
    optimise: float | None = None
    seconds_per_step: float | None = None


@dataclass(frozen=True)
class TeachMeasures:
    """``UnlearnResult.measures`` of a teach request: how far the taught name reaches."""

    heldout_named: float | None = None
    heldout_views: int | None = None
    others_named_as_concept: float | None = None
    others_changed: float | None = None
    text_answers_changed: int | None = None
    photos_named_as_concept: float | None = None  # held-out views of the bundled photographs given the name
    others_photos: int | None = None
    others_as_near_as_taught: int | None = None  # other images left out: views of the taught thing itself
    facts_whole: float | None = None  # held-out views whose taught facts come out exactly


def result_dict(r: UnlearnResult) -> dict:
    """The result as the engine's pure functions read it (``assess``): a shallow dict, no deep copy."""
    return {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}


# ------------------------------------------------------------------------------------ the record


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
    """One request of a session, as shown: the engine's result, its adapter weights (to restore it without
    retraining), the retained-characters rows, the plots (plotly JSON) and the app's timings. Frozen: the
    service replaces a record (``dataclasses.replace``), never edits it."""

    result: UnlearnResult
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
        return self.result.target

    @property
    def is_teach(self) -> bool:
        return self.result.kind == "teach"

    @property
    def before(self) -> Probes:
        return Probes.of(self.result.probes_before)

    @property
    def after(self) -> Probes:
        return Probes.of(self.result.probes_after)

    @property
    def drift(self) -> Drift:
        return typed(Drift, self.result.retain_drift)

    @property
    def null_summary(self) -> NullSpaceSummary:
        return typed(NullSpaceSummary, (self.result.null_space or {}).get("summary"))

    @property
    def timings(self) -> Timings:
        return typed(Timings, self.result.timings)

    @property
    def measures(self) -> TeachMeasures:
        return typed(TeachMeasures, self.result.measures)

    def replace(self, **changes) -> RequestRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The stored form (no per-session fields; the result as ``UnlearnResult.to_dict()``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.LOCAL}
        d["result"] = self.result.to_dict()
        d["evals"] = dataclasses.asdict(self.evals) if self.evals else None
        return {"version": RECORD_VERSION, **d}

    @classmethod
    def from_dict(cls, d) -> RequestRecord | None:
        """The record, or None for anything else (another version, a foreign value)."""
        if not isinstance(d, dict) or d.get("version") != RECORD_VERSION:
            return None
        known = {f.name for f in dataclasses.fields(cls)} - set(cls.LOCAL)
        values = {k: v for k, v in d.items() if k in known}
        try:
            values["result"] = UnlearnResult(**values["result"])
        except (KeyError, TypeError):  # another engine's result fields: not reused
            return None
        if values.get("evals"):
            values["evals"] = Evaluation(**values["evals"])
        return cls(**values)


def result_key(state_fingerprint: str, forget_fp: str, cfg, target: str | None, retain_fp: str = "") -> tuple:
    """The cache key of a request: the chain state it starts from, the images (their fingerprints, computed
    once per request: :class:`webapp.service.form.ForgetRequest`), the settings, the name."""
    return ("app-result", RECORD_VERSION, state_fingerprint, forget_fp, cfg.key(), target or "", retain_fp)


# ------------------------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class Side:
    """One method's run of the request: its result and "after" figure."""

    method: str
    result: UnlearnResult
    figure: str | None  # plotly JSON of the "after" embeddings
    seconds: float | None = None


@dataclass(frozen=True)
class Comparison:
    """The session's request (``first``) and the same request with another method (``second``)."""

    first: Side
    second: Side
    target: str | None
    n_forget: int
    world: bool = True


# ------------------------------------------------------------------------------ relearning probe


@dataclass(frozen=True)
class RelearnProbe:
    """ "Try to bring it back": the forgotten target relearned from ``k`` images for at most ``steps`` steps,
    on this session's model (``chain``) and on a reference that never knew it (``reference``), each as
    :func:`nscvf.method.relearn.relearn` returns it ({"named_at", "curve", "seconds", ...})."""

    target: str
    k: int
    steps: int
    chain: dict
    reference: dict
    heldout: int  # held-out images the name is checked on
    reference_label: str  # what the reference is
    gold: int | None = None  # the benchmark's gold model's steps for this k (GOLD_LIMIT + 1: not within it)
    gold_limit: int | None = None  # the gold's step budget; None: this target has no gold record
