"""What a request did, from what it measured: never what it was asked to do.

:func:`identify` reads the model's answers about a forget set *before* training (who is in these images,
is it one character, does the given name agree); :func:`assess` reads a finished request's answers and
numbers (forgotten, partly forgotten or not forgotten; which images are still named, by what; collateral
damage beyond the usual). The CLI, the benchmark and the app all say what these return.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field

from nscvf import world
from nscvf.eval import is_unknown, mentions, names_in, normalise
from nscvf.rates import pct

# Damage is reported only when a person can see it (issue 19): a retained answer that changed, or an accuracy
# drop beyond the evaluation's own sampling noise (:func:`beyond_noise`). Drift alone is a number, not damage.
NOISE_Z = 1.96  # two-sided 95%: the z of the sampling-noise bound
MIN_LOST_ITEMS = 5  # fewer lost quiz items than this is never beyond noise (a sign test needs 5 to reach p < 0.05)
EARLIER_WARN = 0.05  # an earlier target named again on held-out renders (fraction)
HELDOUT_OK = 0.05  # the target still named on at most this fraction of held-out renders counts as forgotten
COLLAPSE_RETAIN = 0.5  # retain accuracy below this share of its value before: the model collapsed
COLLAPSE_FLUENCY = 0.5  # at least this share of answers degenerate ("M M M ..."): the model collapsed
MIN_QUIZ = 100  # retained quiz items assumed when an old evaluation does not say (every evaluation asks more)
MIX_SHARE = 0.25  # a second character named on at least this share of a forget set: a mix, refused


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
    return identification(answers, given if domain.names_things else None, domain.names_things)


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
        top_share = counts.most_common(2)[1][1]
        what = ("Forget refuses a mix like this: keep only one character's images" if top_share >= max(2, MIX_SHARE * n)
                else "the images named otherwise are forgotten too")  # fmt: skip
        ident.warnings.append(f"these images show more than one character: {listed}; {what}")
    if given and counts and given not in counts:
        said = inferred or ", ".join(counts)
        ident.warnings.append(f"the name {given} disagrees with the images: the model calls them {said} (Forget refuses it)")
    elif counts and unknown:
        ident.warnings.append(f'{unknown} of {n} images are already answered "I don\'t know"')
    return ident


def forget_set_problem(ident: Identification, target: str | None) -> str | None:
    """Why a forget set must not be trained as asked, or None (issue 19 item 5: the app, the API and the CLI
    all refuse through this one check, before any training). Refused: a name the images disagree with (the
    model names someone else on them and never ``target``), and a mix (a second character named on at least
    MIX_SHARE of the images and at least 2 of them): training would forget another character under this
    name. A look-alike named on one image of many is no mix. The message says what to do instead."""
    n, counts = len(ident.answers), ident.counts
    if not counts:
        return None
    listed = ", ".join(f"{k} ({v} of {n})" for k, v in counts.items())
    if target and target not in counts:
        said = ident.inferred or next(iter(counts))
        return (f"these images are {said}, not {target} (the model names {listed}, never {target}): to forget {said}, "
                f"type {said} in the name box (or leave it empty); to forget {target}, upload images of {target}")  # fmt: skip
    who = target or ident.inferred or next(iter(counts))
    mixed = [k for k, v in counts.items() if k != who and v >= 2 and v >= MIX_SHARE * n]
    if mixed:
        return (f"these images show more than one character ({listed}): forgetting them would forget "
                f"{' and '.join([who, *mixed])} at once; upload only the images of the one to forget")  # fmt: skip
    return None


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
    also_forgotten: list = field(default_factory=list)  # [(image number, name)] another character named before, now unknown
    collapse: str = ""  # status "collapsed": what gave way (retain accuracy, fluency), as measured

    @property
    def damaged(self) -> bool:
        return bool(self.warnings)

    def headline(self) -> str:
        """One line for a status bar or a terminal."""
        who = self.target or "the concept"
        text = {
            "collapsed": f"the model collapsed: {self.collapse}",
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
        if self.status == "collapsed":
            return text + (" (partial: stopped at the time limit)" if self.partial else "")
        if self.also_forgotten:
            text += "; also forgot " + ", ".join(f"{n} (#{i})" for i, n in self.also_forgotten)
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


def assess(result: dict, world: bool = True, retained=None) -> Outcome:
    """The outcome of a request from its result (``UnlearnResult.to_dict()``), as measured (pure).
    ``retained``: the answers shown on retained images before/after ([label, question, before, after, ...]
    rows, the app's Retained table), if any. A collapse (:func:`collapse`) is the headline whatever else."""
    if result.get("kind") == "teach":
        return assess_teach(result)
    q = result["probes_before"]["forget"]["questions"][0]
    before = result["probes_before"]["forget"]["answers"][q]
    after = result["probes_after"]["forget"]["answers"][q]
    target = result.get("target")
    partial = bool(result.get("partial"))
    warnings = collateral(result, retained)
    gone = collapse(result, retained)
    if not world:
        changed = sum(a != b for a, b in zip(before, after))
        status = "collapsed" if gone else "unchanged" if changed == 0 else "changed"
        return Outcome(status, target, len(after), changed, warnings=warnings, partial=partial, collapse=gone)
    still = [(i + 1, target) for i, a in enumerate(after) if target and mentions(a, target)]
    # "now called": a name this image did not have before (an image named Dravik before and after is no news)
    wrong = [(i + 1, n) for i, (b, a) in enumerate(zip(before, after)) for n in sorted(names_in(a) - names_in(b) - {target})]
    also = [(i + 1, n) for i, (b, a) in enumerate(zip(before, after)) if is_unknown(a) for n in sorted(names_in(b) - {target})]
    forgotten = sum(is_unknown(a) for a in after)
    heldout = ((result.get("eval_after") or {}).get("summary") or {}).get("target_name_acc_heldout")
    if gone:
        status = "collapsed"
    elif not target and not any(names_in(b) for b in before):
        status = "nothing to forget"  # nobody was named in these images before the request
    elif target and not any(mentions(b, target) for b in before):
        status = "wrong target"  # the images never showed the named target: it cannot have been forgotten
    elif forgotten == len(after) and (heldout or 0) <= HELDOUT_OK:
        status = "forgotten"
    elif forgotten == 0:
        status = "not forgotten"
    else:
        status = "partly forgotten"
    return Outcome(status, target, len(after), forgotten, still, wrong, heldout, warnings, partial, also, gone)


def degenerate(answer: str) -> bool:
    """An answer that is no sentence: empty, or one word repeated ("M M M M", "is is is")."""
    words = normalise(answer).split()
    return not words or (len(words) >= 3 and Counter(words).most_common(1)[0][1] * 2 > len(words))


def collapse(result: dict, retained=None) -> str:
    """What gave way when the model collapsed ("" when it did not), from the same measurement as the rest
    of the outcome: retain accuracy below COLLAPSE_RETAIN of its value before (beyond noise), or at least
    COLLAPSE_FLUENCY of the answers after (forget images and the retained answers shown) degenerate
    where they were not before."""
    out = []
    sb = ((result.get("eval_before") or {}).get("summary")) or {}
    sa = ((result.get("eval_after") or {}).get("summary")) or {}
    pb, pa = sb.get("retain_acc"), sa.get("retain_acc")
    if (
        pb
        and pa is not None
        and pa < COLLAPSE_RETAIN * pb
        and beyond_noise(pb, pa, retain_items(result.get("eval_before"), result.get("eval_after")))
    ):
        out.append(f"retain accuracy {pct(pb, 0, '%')} -> {pct(pa, 0, '%')}")
    q = result["probes_before"]["forget"]["questions"][0]
    before = list(result["probes_before"]["forget"]["answers"][q]) + [row[2] for row in retained or ()]
    after = list(result["probes_after"]["forget"]["answers"][q]) + [row[3] for row in retained or ()]
    bad, was = sum(map(degenerate, after)), sum(map(degenerate, before))
    if after and bad >= COLLAPSE_FLUENCY * len(after) and bad > was:
        sample = next(a for a in after if degenerate(a))
        out.append(f"{bad} of {len(after)} answers are no longer sentences (e.g. {sample[:40]!r})")
    return "; ".join(out)


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
    if (m.get("photos_named_as_concept") or 0) > OTHERS_AS_CONCEPT_WARN:
        warnings.append(f"{pct(m['photos_named_as_concept'], 0, '%')} of other photographs (held-out views of the bundled "
                        f"photos) are now called {target}")  # fmt: skip
    if m.get("facts_whole") is not None and m["facts_whole"] < TAUGHT_OK:
        warnings.append(f"the taught facts come out exactly on only {pct(m['facts_whole'], 0, '%')} of held-out views")
    if m.get("others_changed", 0) > OTHERS_AS_CONCEPT_WARN:
        warnings.append(f"{pct(m['others_changed'], 0, '%')} of other concepts' answers changed")
    return Outcome(status, target, len(after), named, heldout=heldout, warnings=warnings, partial=bool(result.get("partial")))


def beyond_noise(before: float, after: float, n: int) -> bool:
    """Whether an accuracy drop from ``before`` to ``after``, each measured on the same ``n`` quiz items, is
    beyond the evaluation's own sampling noise: the quiz is a sample of renders and paraphrases, so another
    draw of ``n`` items would move each accuracy by its binomial standard error sqrt(p (1 - p) / n). The
    drop must exceed NOISE_Z (1.96, two-sided 95%) standard errors of the difference, sqrt((pb (1 - pb) +
    pa (1 - pa)) / n) (the unpaired bound: wider than a paired one, so it errs towards no alarm), and be at
    least MIN_LOST_ITEMS items (a sign test on fewer lost items cannot reach p < 0.05 even if no item was
    gained: 0.5**4 = 0.06)."""
    drop = before - after
    if n <= 0 or drop * n < MIN_LOST_ITEMS - 1e-9:
        return False
    se = math.sqrt((before * (1 - before) + after * (1 - after)) / n)
    return drop > NOISE_Z * se


def retain_damage(eval_before: dict | None, eval_after: dict | None, target: str | None = None) -> list[str]:
    """Retain accuracy lost beyond the quiz's sampling noise, named where it is: per retained character
    (``retain_by_character`` of :func:`nscvf.eval.evaluate`: [correct, items]) each character whose own
    drop is beyond its noise (:func:`beyond_noise`), and the overall drop when it is beyond noise over the
    characters (a paired bound: answers about one character's renders move together, so the sample is the
    characters, not the items: mean per-character drop > NOISE_Z standard errors of the per-character drops).
    Without per-character numbers (an evaluation written before issue 19), the items' bound."""
    sb, sa = (eval_before or {}).get("summary") or {}, (eval_after or {}).get("summary") or {}
    if sb.get("retain_acc") is None or sa.get("retain_acc") is None:
        return []
    pb, pa = sb["retain_acc"], sa["retain_acc"]
    overall = f"retained characters lost {pct(pb - pa, 0)} points of accuracy ({pct(pb, 0, '%')} -> {pct(pa, 0, '%')})"
    cb, ca = (eval_before or {}).get("retain_by_character"), (eval_after or {}).get("retain_by_character")
    if not cb or not ca:
        return [overall] if beyond_noise(pb, pa, retain_items(eval_before, eval_after)) else []
    out, drops = [], []
    for name in sorted(set(cb) & set(ca)):
        (hb, n), (ha, _) = cb[name], ca[name]
        if not n:
            continue
        drops.append((hb - ha) / n)
        if beyond_noise(hb / n, ha / n, n):
            who = f"{name} ({target}'s look-alike)" if target and _neighbour(name) == target else name
            out.append(f"{who} is answered correctly on {pct(ha / n, 0, '%')} of its {n} quiz items (was {pct(hb / n, 0, '%')})")
    if len(drops) > 1:
        mean, se = statistics.fmean(drops), statistics.stdev(drops) / math.sqrt(len(drops))
        if mean > 0 and mean > NOISE_Z * se and beyond_noise(pb, pa, retain_items(eval_before, eval_after)):
            out.insert(0, overall + f", across {sum(d > 0 for d in drops)} of {len(drops)} characters")
    return out


def _neighbour(name: str) -> str | None:
    """A world character's look-alike sibling (None for any other name)."""
    return next((c.neighbour for c in world.CHARACTERS if c.name == name), None)


def retain_items(eval_before: dict | None, eval_after: dict | None) -> int:
    """How many quiz items the retain accuracy is measured on: the evaluation's ``retain_items``; for one
    written before issue 19, half its items (the retained characters' share: 1196 of 2416 at 2 renders), or
    MIN_QUIZ when even that is missing (fewer items than any evaluation asks: a wider, safer bound)."""
    for ev in (eval_after, eval_before):
        n = ((ev or {}).get("summary") or {}).get("retain_items") or ((ev or {}).get("n_items") or 0) // 2
        if n:
            return int(n)
    return MIN_QUIZ


def retained_changes(retained) -> list[str]:
    """The retained answers shown before/after (the app's Retained table: [label, question, before, after,
    ...] rows) that changed, named."""
    changed = [f"{row[0]} now answers {row[3]!r} (was {row[2]!r})" for row in retained or () if row[2] != row[3]]
    more = [f"{len(changed) - 3} more retained answers changed"] if len(changed) > 4 else []
    return changed[:3] + more if more else changed


def collateral(result: dict, retained=None) -> list[str]:
    """Damage to what should be kept that a person can see: a retained answer shown before/after that
    changed (``retained``: the Retained table's rows), retain accuracy lost beyond the evaluation's sampling
    noise (:func:`retain_damage`, named per character), earlier targets named again, text answers changed."""
    out = retained_changes(retained)
    out += retain_damage(result.get("eval_before"), result.get("eval_after"), result.get("target"))
    sa = ((result.get("eval_after") or {}).get("summary")) or {}
    if (sa.get("earlier_name_acc_heldout") or 0) > EARLIER_WARN:
        out.append(f"an earlier target is named again on {pct(sa['earlier_name_acc_heldout'], 0, '%')} of held-out renders")
    if result.get("text_logits_identical") is False or result.get("text_identical") is False:
        out.append("text-only answers changed (the language model should be untouched)")
    return out
