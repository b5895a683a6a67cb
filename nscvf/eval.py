"""The one evaluation routine (MLLMU-Bench / MMUnlearner protocol, adapted; METHOD.md "Evaluation").

For each group of characters (the forget ``target``, the ``others`` named characters, unseen
``distractors``), each render split (``train`` seeds, ``heldout`` seeds) and each question split
(``train`` templates, ``heldout`` paraphrases) it generates answers and scores them by normalised exact
match: name-from-image, fact-from-image, "I don't know" rate and wrong-name rate; fact-from-text per
question split; and the 4-option likelihood (multiple-choice) variant on the canonical questions.
The CLI, the benchmark, the app and the tests all call :func:`evaluate`.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from functools import cache

from nscvf import world
from nscvf.concepts import table
from nscvf.rates import rate

_PUNCT = re.compile(r"[^\w\s']")


def normalise(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower().replace("\u2019", "'")).split())


@cache
def _photo_vocabulary() -> tuple[str, dict[str, str]]:
    """The photo model's unknown answer and concept names, normalised (empty without its concept table)."""
    try:
        t = table()
    except (OSError, ValueError, KeyError):
        return "", {}
    return normalise(t.unknown_answer), {normalise(n): n for n in t.names}


def is_unknown(answer: str) -> bool:
    """"I don't know": the drawn world's, the photo model's ("I don't know what this is."), or bare."""
    a = normalise(answer)
    return a in (normalise(world.UNKNOWN_ANSWER), "i don't know") or (bool(a) and a == _photo_vocabulary()[0])


_THIS_IS = re.compile(r"^this is (.+)$")


def concept_in(answer: str) -> str | None:
    """The photo model's concept an answer names ("This is a cat." -> "a cat"), if it is one of its table's."""
    m = _THIS_IS.match(normalise(answer))
    return _photo_vocabulary()[1].get(m.group(1).strip()) if m else None


def mentions(answer: str, name: str) -> bool:
    """Whether ``answer`` names ``name`` as a whole word (a world character or any other name, e.g. a
    concept taught to a chain), case and punctuation aside."""
    return re.search(rf"\b{re.escape(normalise(name))}\b", normalise(answer)) is not None


def is_mentioned_any(answer: str, names) -> bool:
    """Whether ``answer`` names any of ``names`` (see :func:`mentions`)."""
    return any(mentions(answer, n) for n in names if n)


def names_in(answer: str) -> set[str]:
    """What an answer names: the drawn world's characters in it, or the photo model's concept it says it is (the
    outcome of a request reads both models' answers through this)."""
    words = set(normalise(answer).split())
    found = {n for n in world.NAMES if n.lower() in words}
    concept = concept_in(answer)
    return found | {concept} if concept else found


@dataclass(frozen=True)
class Item:
    group: str
    character: str
    render_split: str
    template_split: str
    kind: str
    fact: str | None
    question: str
    expected: str
    seed: int | None


def _group_of(target: str | None, earlier=()):
    """Character -> its group: the ``target``, the ``earlier`` targets of a chain (forgotten on purpose,
    so never counted as retained), or the ``others`` (what must be retained)."""
    tkey = world.get_character(target).key if target else None
    known = {c.name.lower() for c in world.CHARACTERS}  # a chain's earlier targets may be taught concepts
    ekeys = {world.get_character(n).key for n in earlier if n and n.lower() in known} - {tkey}
    return lambda c: "target" if c.key == tkey else "earlier" if c.key in ekeys else "others"


def build_items(target: str | None = None, renders: int = 3, seed_offset: int = 0, earlier=()) -> list[Item]:
    """The evaluation questions. ``renders`` images per character and render split; per image every
    identity template of the split and one question per fact (templates rotate across images)."""
    group_of = _group_of(target, earlier)
    groups = [(group_of(c), c) for c in world.CHARACTERS]
    # Unseen distractor characters for held-out renders; training distractors for training renders.
    items: list[Item] = []
    rng = random.Random(1234)
    train_distractors = rng.sample(world.DISTRACTORS, 16)
    for render_split in ("train", "heldout"):
        seeds = (world.train_seeds if render_split == "train" else world.heldout_seeds)(renders, 500 + seed_offset)
        chars = groups + [
            ("distractors", d) for d in (train_distractors if render_split == "train" else world.HELDOUT_DISTRACTORS)
        ]
        for group, c in chars:
            for r, s in enumerate(seeds):
                for tsplit in ("train", "heldout"):
                    qas = world.image_questions(c, tsplit)
                    names = [qa for qa in qas if qa.kind == "name"]
                    picked = list(names)
                    for fact in world.FACTS:
                        options = [qa for qa in qas if qa.fact == fact]
                        picked.append(options[r % len(options)])
                    for qa in picked:
                        items.append(Item(group, c.key, render_split, tsplit, qa.kind, qa.fact, qa.question, qa.answer, s))
    for c in world.CHARACTERS:
        for tsplit in ("train", "heldout"):
            for qa in world.text_questions(c, tsplit):
                items.append(Item(group_of(c), c.key, "text", tsplit, qa.kind, qa.fact, qa.question, qa.answer, None))
    return items


def _score(item: Item, answer: str) -> dict[str, float]:
    correct = normalise(answer) == normalise(item.expected)
    c = world.get_character(item.character)
    wrong_name = bool(names_in(answer) - ({c.name} if c.name else set()))
    return {"correct": float(correct), "unknown": float(is_unknown(answer)), "wrong_name": float(wrong_name)}


def _aggregate(rows: list[tuple[Item, str, dict]]) -> dict:
    """Nested results[group][render_split][template_split][metric]."""
    acc: dict = {}
    for item, _, s in rows:
        key = {"name": "name_acc", "fact_image": "fact_image_acc", "fact_text": "fact_text_acc"}[item.kind]
        cell = acc.setdefault(item.group, {}).setdefault(item.render_split, {}).setdefault(item.template_split, {})
        for metric, value in ((key, s["correct"]), ("unknown_rate", s["unknown"]), ("wrong_name_rate", s["wrong_name"])):
            if item.kind == "fact_text" and metric != key:
                continue
            tot = cell.setdefault(metric, [0.0, 0])
            tot[0] += value
            tot[1] += 1
    return {
        g: {
            r: {
                t: {m: round(v[0] / v[1], 4) for m, v in cell.items()} | {"n": max(v[1] for v in cell.values())}
                for t, cell in ts.items()
            }
            for r, ts in rs.items()
        }
        for g, rs in acc.items()
    }


def multiple_choice(vlm, target: str | None = None, renders: int = 2, groups=("target", "others"), earlier=()) -> dict:
    """4-option likelihood accuracy on held-out renders with the canonical questions: the right answer
    against three wrong ones of the same kind."""
    group_of = _group_of(target, earlier)
    rng = random.Random(99)
    hits: dict[str, list[float]] = {}
    for c in world.CHARACTERS:
        group = group_of(c)
        if group not in groups:
            continue
        for s in world.heldout_seeds(renders, world.SEEDS["eval_heldout"]):
            img = world.render(c, s)
            others = rng.sample([n for n in world.NAMES if n != c.name], 3)
            opts = [f"This is {c.name}."] + [f"This is {n}." for n in others]
            hits.setdefault(f"{group}.name", []).append(float(vlm.score_answers("Who is this?", opts, img).argmax() == 0))
            fact = world.FACTS[s % 3]
            pool = {"town": world.TOWNS, "job": world.JOBS, "food": world.FOODS}[fact]
            wrong = rng.sample([v for v in pool if v != c.facts[fact]], 3)
            fake = [world.Character(c.key, c.shape, c.colour, c.pattern, c.accessory, c.eyes, c.name, {fact: w}) for w in wrong]
            opts = [c.fact_answer(fact)] + [f.fact_answer(fact) for f in fake]
            q = world.IMAGE_FACT_TEMPLATES[fact]["train"][0]
            hits.setdefault(f"{group}.fact_image", []).append(float(vlm.score_answers(q, opts, img).argmax() == 0))
    return {k: round(sum(v) / len(v), 4) for k, v in hits.items()}


def evaluate(
    vlm,
    target: str | None = None,
    renders: int = 3,
    mc: bool = True,
    keep_answers: bool = False,
    progress=None,
    batch_size: int = 64,
    earlier=(),
) -> dict:
    """Evaluate ``vlm`` on the embedded world. Returns {"summary", "results", "mc", "n_items", "seconds"}
    (and "answers" when keep_answers). ``progress(done, total)`` is called after each batch. ``earlier``:
    targets forgotten before (a chain's earlier requests), reported as their own group, not as retained."""
    t0 = time.time()
    items = build_items(target, renders, earlier=earlier)
    answers = _answer(vlm, items, batch_size, progress)
    rows = [(it, a, _score(it, a)) for it, a in zip(items, answers)]
    answer_rows = [_answer_row(it, a, s) for it, a, s in rows]
    out = {
        "target": target,
        "summary": _summary(answer_rows, target, any(it.group == "earlier" for it in items)),
        "results": _aggregate(rows),
        "n_items": len(items),
        "retain_by_character": _retain_by_character(answer_rows),
    }
    if mc:
        out["mc"] = multiple_choice(vlm, target, earlier=earlier)
    out["seconds"] = round(time.time() - t0, 2)
    if keep_answers:
        out["answers"] = answer_rows
    return out


def _answer(vlm, items: list[Item], batch_size: int, progress) -> list[str]:
    """The model's answer to every item: image questions in batches (``progress(done, total)`` after each),
    then the text-only questions."""
    answers: list[str] = [""] * len(items)
    image_items = [i for i, it in enumerate(items) if it.seed is not None]
    text_items = [i for i, it in enumerate(items) if it.seed is None]
    cache: dict = {}

    def img(it: Item):
        k = (it.character, it.seed)
        if k not in cache:
            cache[k] = world.render(world.get_character(it.character), it.seed)
        return cache[k]

    total = len(items)
    done = 0
    for chunk_start in range(0, len(image_items), batch_size):
        idx = image_items[chunk_start : chunk_start + batch_size]
        outs = vlm.generate([items[i].question for i in idx], [img(items[i]) for i in idx], batch_size=batch_size)
        for i, a in zip(idx, outs):
            answers[i] = a
        done += len(idx)
        if progress:
            progress(done, total)
    outs = vlm.generate([items[i].question for i in text_items], None, batch_size=batch_size)
    for i, a in zip(text_items, outs):
        answers[i] = a
    if progress:
        progress(total, total)
    return answers


def _summary(rows: list[dict], target: str | None, has_earlier: bool) -> dict:
    """The headline rates; the target's (when there is one) and the earlier targets' (when ``has_earlier``)."""
    named = ("others", "target") if target is None else ("others",)
    summary = {
        # Held-out renders, canonical (training) templates and held-out paraphrases.
        "name_acc_heldout": rate(rows, "correct", group=named, kind="name", render_split="heldout", template_split="train"),
        "name_acc_heldout_paraphrase": rate(
            rows, "correct", group=named, kind="name", render_split="heldout", template_split="heldout"
        ),
        "fact_image_acc_heldout": rate(
            rows, "correct", group=named, kind="fact_image", render_split="heldout", template_split="train"
        ),
        "fact_image_acc_heldout_paraphrase": rate(
            rows, "correct", group=named, kind="fact_image", render_split="heldout", template_split="heldout"
        ),
        "fact_text_acc": rate(rows, "correct", group=named, kind="fact_text", template_split="train"),
        "fact_text_acc_paraphrase": rate(rows, "correct", group=named, kind="fact_text", template_split="heldout"),
        "unknown_rate_unseen_distractors": rate(rows, "unknown", group="distractors", render_split="heldout"),
        "wrong_name_rate_unseen_distractors": rate(rows, "wrong_name", group="distractors", render_split="heldout"),
        "name_acc_train_renders": rate(rows, "correct", group=named, kind="name", render_split="train"),
    }
    if target is not None:
        summary |= {
            "target_name_acc": rate(rows, "correct", group="target", kind="name", render_split="train"),
            "target_name_acc_heldout": rate(rows, "correct", group="target", kind="name", render_split="heldout"),
            "target_fact_image_acc": rate(rows, "correct", group="target", kind="fact_image", render_split="train"),
            "target_fact_image_acc_heldout": rate(rows, "correct", group="target", kind="fact_image", render_split="heldout"),
            "target_unknown_rate": rate(rows, "unknown", group="target", kind=("name", "fact_image")),
            "target_wrong_name_rate": rate(rows, "wrong_name", group="target", kind=("name", "fact_image")),
            "target_fact_text_acc": rate(rows, "correct", group="target", kind="fact_text"),
            "retain_acc": rate(rows, "correct", group="others", kind=("name", "fact_image")),
            "retain_items": sum(r["group"] == "others" and r["kind"] in ("name", "fact_image") for r in rows),
        }
    summary["sibling_confusion_heldout"] = _sibling_confusion(rows)
    if has_earlier:
        summary["earlier_name_acc_heldout"] = rate(rows, "correct", group="earlier", kind="name", render_split="heldout")
        summary["earlier_unknown_rate"] = rate(rows, "unknown", group="earlier", kind=("name", "fact_image"))
    return summary


def _retain_by_character(rows: list[dict]) -> dict[str, list[int]]:
    """Per retained character (group "others"; identity and fact-from-image items): [correct, items]. The
    outcome's damage check (:func:`nscvf.method.outcome.retain_damage`) names a character whose answers moved."""
    out: dict[str, list[int]] = {}
    for r in rows:
        if r["group"] == "others" and r["kind"] in ("name", "fact_image"):
            cell = out.setdefault(world.get_character(r["character"]).name or r["character"], [0, 0])
            cell[0] += int(r["correct"])
            cell[1] += 1
    return out


def _sibling_confusion(rows: list[dict]) -> float | None:
    """How often a character with a look-alike sibling is called by the sibling's name (identity questions,
    held-out renders, both question splits; every such character, the target included)."""
    hits = []
    for r in rows:
        if r["kind"] != "name" or r["render_split"] != "heldout" or r["group"] == "distractors":
            continue
        c = world.get_character(r["character"])
        if c.neighbour:
            hits.append(float(c.neighbour in names_in(r["answer"])))
    return round(sum(hits) / len(hits), 4) if hits else None


def _answer_row(it: Item, answer: str, scores: dict) -> dict:
    return {
        "group": it.group,
        "character": it.character,
        "render_split": it.render_split,
        "template_split": it.template_split,
        "kind": it.kind,
        "seed": it.seed,
        "question": it.question,
        "expected": it.expected,
        "answer": answer,
        **scores,
    }
