"""What a request did, from what it measured: never what it was asked to do.

:func:`identify` reads the model's answers about a forget set *before* training (who is in these images,
is it one character, does the given name agree); :func:`assess` reads a finished request's answers and
numbers (forgotten, partly forgotten or not forgotten; which images are still named, by what; collateral
damage beyond the usual). The CLI, the benchmark and the app all say what these return.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from nscvf.eval import is_unknown, mentions, names_in
from nscvf.rates import pct

# Beyond these a request is reported as damaging what it should keep. Measured on the embedded model
# (BENCHMARKS.md): NSCVF drifts 0.04-0.06 on average and never lowers retain accuracy.
RETAIN_DROP_WARN = 0.02  # retain accuracy drop (fraction)
DRIFT_WARN = 0.15  # mean retain drift
EARLIER_WARN = 0.05  # an earlier target named again on held-out renders (fraction)
HELDOUT_OK = 0.05  # the target still named on at most this fraction of held-out renders counts as forgotten


@dataclass
class Identification:
    """Who the model says is in a forget set, image by image, and what that means for the request."""

    answers: list[str]
    names: list[list[str]]  # the character names in each answer
    counts: dict  # name -> images naming it
    unknown: int  # images answered "I don't know"
    inferred: str | None  # the name at least half the images give
    given: str | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def identify(vlm, domain, images, given: str | None = None) -> Identification:
    """Ask the identity question about every image and say what the answers imply (world models only
    name characters; a generic model's answers are returned without names)."""
    question = domain.probe_questions()[0]
    answers = vlm.generate([question] * len(images), images) if images else []
    return identification(answers, given if domain.is_world else None, domain.is_world)


def identification(answers: list[str], given: str | None = None, world: bool = True) -> Identification:
    """:func:`identify` on answers already generated (pure)."""
    names = [sorted(names_in(a)) if world else [] for a in answers]
    counts = Counter(n for ns in names for n in ns)
    unknown = sum(is_unknown(a) for a in answers)
    top = counts.most_common(1)
    inferred = top[0][0] if top and top[0][1] * 2 >= len(answers) else None
    ident = Identification(answers, names, dict(counts.most_common()), unknown, inferred, given)
    if not world:
        return ident
    n = len(answers)
    if not counts:
        ident.warnings.append("the model does not recognise these images (it names nobody): there is nothing to forget")
    elif len(counts) > 1:
        listed = ", ".join(f"{k} ({v} of {n})" for k, v in counts.most_common())
        ident.warnings.append(f"these images show more than one character: {listed}; forgetting would forget them all")
    if given and counts and given not in counts:
        said = inferred or ", ".join(counts)
        ident.warnings.append(f"the name {given} disagrees with the images: the model calls them {said}")
    elif counts and unknown:
        ident.warnings.append(f'{unknown} of {n} images are already answered "I don\'t know"')
    return ident


@dataclass
class Outcome:
    """A finished request, as measured: ``status`` is forgotten / partly forgotten / not forgotten /
    changed (a generic model: answers changed, no names to check) / unchanged."""

    status: str  # or "wrong target": the named target was not what the images showed
    target: str | None
    images: int
    forgotten: int  # forget images now answered "I don't know" (world) or changed (generic)
    still_named: list = field(default_factory=list)  # [(image number, name)] still naming the target
    wrong_names: list = field(default_factory=list)  # [(image number, name)] now naming someone else
    heldout: float | None = None  # target named on held-out renders (from the evaluation), if measured
    warnings: list = field(default_factory=list)  # collateral damage, each a sentence
    partial: bool = False

    @property
    def damaged(self) -> bool:
        return bool(self.warnings)

    def headline(self) -> str:
        """One line for a status bar or a terminal."""
        who = self.target or "the concept"
        text = {
            "forgotten": f'forgot {who}: all {self.images} images now answered "I don\'t know"',
            "partly forgotten": f"partly forgot {who}: {self.forgotten} of {self.images} images forgotten",
            "not forgotten": f'did not forget {who}: no image is answered "I don\'t know"',
            "wrong target": f"{who} was not in these images (the model did not name {who} before): nothing of {who} was forgotten",
            "changed": f"answers changed on {self.forgotten} of {self.images} images",
            "unchanged": "no answer changed",
            "nothing to forget": "nothing to forget: the model named nobody in these images before the request",
            "taught": f"taught {who}: named on {pct(self.heldout or 0, 0, '%')} of held-out views",
            "partly taught": f"partly taught {who}: named on {pct(self.heldout or 0, 0, '%')} of held-out views",
            "not taught": f"did not teach {who}: named on {pct(self.heldout or 0, 0, '%')} of held-out views",
        }[self.status]
        if self.still_named:
            text += "; still named on " + ", ".join(f"#{i}" for i, _ in self.still_named)
        if self.wrong_names:
            text += "; now called " + ", ".join(f"{n} (#{i})" for i, n in self.wrong_names)
        if self.heldout is not None:
            text += f"; held-out renders named {pct(self.heldout, 0, '%')}"
        if self.partial:
            text += " (partial: stopped at the time limit)"
        return text

    def to_dict(self) -> dict:
        return asdict(self) | {"headline": self.headline()}


def assess(result: dict, world: bool = True) -> Outcome:
    """The outcome of a request from its result (``UnlearnResult.to_dict()``), as measured (pure)."""
    if result.get("kind") == "teach":
        return assess_teach(result)
    q = result["probes_before"]["forget"]["questions"][0]
    before = result["probes_before"]["forget"]["answers"][q]
    after = result["probes_after"]["forget"]["answers"][q]
    target = result.get("target")
    partial = bool(result.get("partial"))
    if not world:
        changed = sum(a != b for a, b in zip(before, after))
        status = "unchanged" if changed == 0 else "changed"
        return Outcome(status, target, len(after), changed, warnings=collateral(result), partial=partial)
    still = [(i + 1, target) for i, a in enumerate(after) if target and mentions(a, target)]
    wrong = [(i + 1, n) for i, a in enumerate(after) for n in sorted(names_in(a) - {target})]
    forgotten = sum(is_unknown(a) for a in after)
    heldout = ((result.get("eval_after") or {}).get("summary") or {}).get("target_name_acc_heldout")
    if not target and not any(names_in(b) for b in before):
        status = "nothing to forget"  # nobody was named in these images before the request
    elif target and not any(mentions(b, target) for b in before):
        status = "wrong target"  # the images never showed the named target: it cannot have been forgotten
    elif forgotten == len(after) and (heldout or 0) <= HELDOUT_OK:
        status = "forgotten"
    elif forgotten == 0:
        status = "not forgotten"
    else:
        status = "partly forgotten"
    return Outcome(status, target, len(after), forgotten, still, wrong, heldout, collateral(result), partial)


TAUGHT_OK = 0.9  # a concept is taught once it is named on this fraction of held-out views
OTHERS_AS_CONCEPT_WARN = 0.05  # other concepts' images now answered with the taught name


def assess_teach(result: dict) -> Outcome:
    """The outcome of a teach request (nscvf.method.teach): how far the name reaches, and what else took it."""
    m, target = result.get("measures") or {}, result.get("target")
    q = result["probes_after"]["forget"]["questions"][0]
    after = result["probes_after"]["forget"]["answers"][q]
    heldout = m.get("heldout_named", 0.0)
    status = "taught" if heldout >= TAUGHT_OK else "partly taught" if heldout > 0 else "not taught"
    named = sum(mentions(a, target) for a in after)
    warnings = []
    if m.get("others_named_as_concept", 0) > OTHERS_AS_CONCEPT_WARN:
        warnings.append(f"{pct(m['others_named_as_concept'], 0, '%')} of other concepts' images are now called {target}")
    if m.get("others_changed", 0) > OTHERS_AS_CONCEPT_WARN:
        warnings.append(f"{pct(m['others_changed'], 0, '%')} of other concepts' answers changed")
    return Outcome(status, target, len(after), named, heldout=heldout, warnings=warnings, partial=bool(result.get("partial")))


def collateral(result: dict) -> list[str]:
    """Damage to what should be kept, beyond what this method usually does: retain accuracy, retain
    drift, earlier targets coming back, text answers."""
    out = []
    sb = ((result.get("eval_before") or {}).get("summary")) or {}
    sa = ((result.get("eval_after") or {}).get("summary")) or {}
    if sb.get("retain_acc") is not None and sa.get("retain_acc") is not None:
        drop = sb["retain_acc"] - sa["retain_acc"]
        if drop > RETAIN_DROP_WARN:
            out.append(f"retained characters lost {pct(drop, 0)} points of accuracy ({pct(sb['retain_acc'], 0, '%')} -> "
                       f"{pct(sa['retain_acc'], 0, '%')})")  # fmt: skip
    if (sa.get("earlier_name_acc_heldout") or 0) > EARLIER_WARN:
        out.append(f"an earlier target is named again on {pct(sa['earlier_name_acc_heldout'], 0, '%')} of held-out renders")
    drift = (result.get("retain_drift") or {}).get("mean")  # this request's own drift (vs the state before it)
    if drift is not None and drift > DRIFT_WARN:
        out.append(f"retained images' features moved {drift:.2f} on average (usual: about 0.05)")
    if result.get("text_logits_identical") is False:
        out.append("text-only answers changed (the language model should be untouched)")
    return out
