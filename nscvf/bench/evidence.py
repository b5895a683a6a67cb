"""Evidence a reviewer can check (issue 10): look-alike neighbours, gold references and relearning.

* **Splits.** An evaluation (:func:`nscvf.eval.evaluate` with ``keep_answers``) is cut into the
  ``target`` (its image questions), the ``neighbour`` (the target's look-alike sibling: same shape, colour
  and eyes), ``retain`` (every other named character) and ``text`` (text-only fact questions).
* **Gold reference.** A model trained with the base recipe in which the target was always an unknown
  character (:func:`nscvf.train_base.train_golds`: the language stage from the base's vision stage; the
  weights are not committed). Its answers to the benchmark's evaluation, its P("I don't know") on the
  target's held-out renders, its relational feature profile and its relearning steps are committed under
  ``assets/gold/<key>.json``; :func:`gold_comparison` compares a method against them.
* **Forget quality** (TOFU): the two-sample Kolmogorov-Smirnov test between a model's and gold's
  P("I don't know") on the target's held-out renders (:func:`ks_test`); a high p-value means the two
  distributions cannot be told apart.
* **Features.** The gold's projector and language model were retrained, so its feature space is not the
  original's: raw distances across models mean nothing. :func:`relational_profile` describes where the
  target sits *within* a model (cosine of its mean feature to every other character's centroid and to the
  unknown region's); profiles are comparable across models.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from nscvf import world
from nscvf.eval import evaluate, is_mentioned_any, is_unknown, normalise

GOLD_DIR = Path(__file__).resolve().parents[2] / "assets" / "gold"  # the repository's assets/gold
# Gold targets: three with a look-alike sibling (two primary characters and one sibling), one without.
GOLD_TARGETS = ["Mirel", "Dravik", "Wrenna", "Kestrin"]
SPLITS = ("target", "neighbour", "retain", "text")
RELEARN_KS = (1, 2, 4)
RELEARN_STEPS = 20
P_UNKNOWN_RENDERS = 12  # held-out renders of the target for P("I don't know") (x 2 held-out identity questions)
PROFILE_RENDERS = 6  # held-out renders per character for the relational profile
NEIGHBOUR_RENDERS = 12  # held-out renders of the sibling for the neighbour retain accuracy


# ------------------------------------------------------------------------------------------ statistics


def ks_test(a: list[float], b: list[float]) -> dict:
    """Two-sample Kolmogorov-Smirnov test (two-sided; exact p-value for small samples): {"stat", "p"}."""
    from scipy.stats import ks_2samp  # scipy.stats takes a second to import; only the KS test needs it

    if not a or not b:
        return {"stat": None, "p": None}
    r = ks_2samp(a, b)
    return {"stat": round(float(r.statistic), 4), "p": round(float(r.pvalue), 4)}


def agreement(a: list[str], b: list[str]) -> float | None:
    """Fraction of aligned answers that are the same after normalisation (case, punctuation, spaces)."""
    if len(a) != len(b):
        raise ValueError(f"agreement: {len(a)} answers against {len(b)}")
    return round(sum(normalise(x) == normalise(y) for x, y in zip(a, b)) / len(a), 4) if a else None


# ------------------------------------------------------------------------------------------ splits


def split_of(row: dict, target: str) -> str | None:
    """The split of one evaluation answer row (None: distractors and earlier targets)."""
    if row["kind"] == "fact_text":
        return "text"
    t = world.get_character(target)
    if row["character"] == t.key:
        return "target"
    if t.neighbour and row["character"] == world.get_character(t.neighbour).key:
        return "neighbour"
    return "retain" if row["group"] == "others" else None


def split_rows(rows: list[dict], target: str, heldout_only: bool = False) -> dict[str, list[int]]:
    """Row indices per split. ``heldout_only``: image questions on held-out renders only (text kept)."""
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, r in enumerate(rows):
        s = split_of(r, target)
        if s is None or (heldout_only and s != "text" and r["render_split"] != "heldout"):
            continue
        out[s].append(i)
    return out


def split_accuracy(rows: list[dict], target: str, heldout_only: bool = True) -> dict[str, float | None]:
    """Accuracy per split (exact match with the expected answer; held-out renders, both question splits)."""
    return {
        s: (round(sum(rows[i]["correct"] for i in idx) / len(idx), 4) if idx else None)
        for s, idx in split_rows(rows, target, heldout_only).items()
    }


def neighbour_retain_acc(rows: list[dict], target: str) -> float | None:
    """The sibling's accuracy in an evaluation's rows (name and facts, held-out renders, both question splits)."""
    return split_accuracy(rows, target)["neighbour"]


def target_identity(vlm, target: str, n: int = NEIGHBOUR_RENDERS) -> dict:
    """Who the model says the target is on ``n`` held-out renders (every identity question of both
    template splits): the share answered "I don't know", named as the target, named as its sibling."""
    t = world.get_character(target)
    qs = [q for split in ("train", "heldout") for q in world.IDENTITY_TEMPLATES[split]]
    imgs = _renders(t, world.heldout_seeds(n, world.SEEDS["eval_heldout"]))
    answers = vlm.generate([q for _ in imgs for q in qs], [im for im in imgs for _ in qs], batch_size=64)
    k = len(answers)
    return {
        "unknown": round(sum(map(is_unknown, answers)) / k, 4),
        "named": round(sum(is_mentioned_any(a, [t.name]) for a in answers) / k, 4),
        "sibling_named": round(sum(is_mentioned_any(a, [t.neighbour]) for a in answers) / k, 4) if t.neighbour else None,
    }


def neighbour_eval(vlm, target: str, n: int = NEIGHBOUR_RENDERS) -> float | None:
    """The sibling's accuracy on its own larger set (an evaluation has only ``renders`` images of it): ``n``
    held-out renders, every identity question of both template splits and each fact in both splits (exact
    match). None when the target has no sibling."""
    sib = world.neighbour_of(target)
    if sib is None:
        return None
    qs, imgs, want = [], [], []
    for img in _renders(sib, world.heldout_seeds(n, world.SEEDS["eval_heldout"])):
        for split in ("train", "heldout"):
            qas = world.image_questions(sib, split)
            picked = [qa for qa in qas if qa.kind == "name"] + [next(qa for qa in qas if qa.fact == f) for f in world.FACTS]
            for qa in picked:
                qs.append(qa.question)
                imgs.append(img)
                want.append(qa.answer)
    answers = vlm.generate(qs, imgs, batch_size=64)
    return round(sum(normalise(a) == normalise(w) for a, w in zip(answers, want)) / len(want), 4)


# ------------------------------------------------------------------------------------------ model probes


def _renders(c: world.Character, seeds: list[int]) -> list:
    """Renders of ``c`` (cached: every method and target asks for the same ones)."""
    return [_render(c.key, s) for s in seeds]


_CACHE: dict = {}


def _render(key: str, seed: int):
    if (key, seed) not in _CACHE:
        if len(_CACHE) > 4096:
            _CACHE.clear()
        _CACHE[key, seed] = world.render(world.get_character(key), seed)
    return _CACHE[key, seed]


def p_unknown(vlm, target: str, n: int = P_UNKNOWN_RENDERS) -> list[float]:
    """P("I don't know who this is.") for each held-out render of ``target`` and held-out identity question."""
    c = world.get_character(target)
    out = []
    for img in _renders(c, world.heldout_seeds(n, world.SEEDS["eval_heldout"])):
        for q in world.IDENTITY_TEMPLATES["heldout"]:
            out.append(round(math.exp(float(vlm.score_answers(q, [world.UNKNOWN_ANSWER], img)[0])), 6))
    return out


def relational_profile(vlm, target: str, n: int = PROFILE_RENDERS) -> list[float]:
    """Cosine of the target's mean pooled feature (held-out renders) to the centroid of every other named
    character and of the unseen distractors (the unknown region), in world order, unknown last."""
    import torch  # torch: seconds to import; the CLI imports this module for `nscvf gold` without a model
    import torch.nn.functional as F  # torch: as above

    def centroid(chars) -> torch.Tensor:
        imgs = [im for c in chars for im in _renders(c, world.heldout_seeds(n, world.SEEDS["heldout_retain"]))]
        return F.normalize(vlm.image_features(imgs)[1].mean(0), dim=-1)

    t = world.get_character(target)
    me = centroid([t])
    others = [centroid([c]) for c in world.CHARACTERS if c.key != t.key] + [centroid(world.HELDOUT_DISTRACTORS)]
    return [round(float(me @ o), 5) for o in others]


def profile_distance(a: list[float], b: list[float]) -> float:
    return round(math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True))), 5)


def neighbour_drift(before, after, target: str, n: int = 8) -> float | None:
    """Mean relative drift ||z_after - z_before|| / ||z_before|| of the sibling's pooled projector features
    on its held-out renders (None when the target has no sibling)."""
    from nscvf.method.contrastive import retain_drift  # torch (see relational_profile)

    sib = world.neighbour_of(target)
    if sib is None:
        return None
    imgs = _renders(sib, world.heldout_seeds(n, world.SEEDS["heldout_retain"]))
    return retain_drift(after.image_features(imgs)[0], before.image_features(imgs)[0])["mean"]


def relearn_steps(vlm, target: str, ks=RELEARN_KS, steps: int = RELEARN_STEPS, heldout: int = 8) -> dict[str, int | None]:
    """The relearning attack for each k: steps until held-out renders are named again (None: not within
    ``steps``; 0: still named). Same renders for every method and the gold model."""
    from nscvf.method.relearn import relearn  # torch (see relational_profile)

    c = world.get_character(target)
    held = _renders(c, world.heldout_seeds(heldout, world.SEEDS["eval_heldout"]))
    out = {}
    for k in ks:
        train = world.forget_examples(c, k)
        out[str(k)] = relearn(vlm, train, c.name, held, steps)["named_at"]
    return out


def censored_mean(steps: dict[str, int | None], limit: int = RELEARN_STEPS) -> float:
    """Mean relearning steps over k, counting 'not within the limit' as limit + 1 (a lower bound)."""
    return round(statistics.fmean(limit + 1 if v is None else v for v in steps.values()), 3)


# ------------------------------------------------------------------------------------------ gold records


def gold_path(target: str, gold_dir: Path | str | None = None) -> Path:
    """Where the gold record of ``target`` lives (``NSCVF_GOLD_DIR`` overrides ``assets/gold``)."""
    root = gold_dir or os.environ.get("NSCVF_GOLD_DIR") or GOLD_DIR
    return Path(root) / f"{world.get_character(target).key}.json"


def gold_record(vlm, target: str, renders: int, training: dict | None = None, progress=None) -> dict:
    """Everything the benchmark compares against a gold model, measured on ``vlm`` (the gold model)."""
    ev = evaluate(vlm, target, renders=renders, mc=False, keep_answers=True)
    rows = ev["answers"]
    if progress:
        progress(f"gold {target}: relearning attack")
    return {
        "target": world.get_character(target).name,
        "neighbour": world.get_character(target).neighbour,
        "renders": renders,
        "training": training or {},
        "items": [[r["character"], r["render_split"], r["template_split"], r["seed"], r["question"]] for r in rows],
        "answers": [r["answer"] for r in rows],
        "split_accuracy": split_accuracy(rows, target),
        "neighbour_acc": neighbour_eval(vlm, target),
        "summary": ev["summary"],
        "p_unknown": p_unknown(vlm, target),
        "profile": relational_profile(vlm, target),
        "relearn_steps": relearn_steps(vlm, target),
    }


def gold_relearn_steps(target: str | None) -> dict[str, int | None] | None:
    """The committed gold record's relearning steps of ``target`` (k -> steps until named again; None: not
    within RELEARN_STEPS), or None when ``target`` has no gold record: the yardstick of "erased"."""
    if not target or target not in world.NAMES:
        return None
    path = gold_path(target)
    return json.loads(path.read_text()).get("relearn_steps") if path.exists() else None


def load_gold(target: str, renders: int, gold_dir: Path | str | None = None) -> dict | None:
    """The committed gold record of ``target`` for an evaluation with ``renders`` (None if there is none)."""
    path = gold_path(target, gold_dir)
    if not path.exists():
        return None
    g = json.loads(path.read_text())
    return g if g.get("renders") == renders else None


def gold_comparison(rows: list[dict], gold: dict, target: str, p_unk: list[float], profile: list[float],
                    original_profile: list[float]) -> dict:  # fmt: skip
    """A method's evaluation against the gold record: answer agreement per split, accuracy gap to gold
    per split (points, method minus gold), the KS test of P("I don't know"), and profile distances."""
    items = [[r["character"], r["render_split"], r["template_split"], r["seed"], r["question"]] for r in rows]
    if items != gold["items"]:
        raise ValueError(f"gold record of {target} was measured on other questions; rebuild it (nscvf gold)")
    agree = {}
    for s, idx in split_rows(rows, target, heldout_only=True).items():
        agree[s] = agreement([rows[i]["answer"] for i in idx], [gold["answers"][i] for i in idx]) if idx else None
    mine = split_accuracy(rows, target)
    gap = {s: None if mine[s] is None or gold["split_accuracy"][s] is None else round(mine[s] - gold["split_accuracy"][s], 4)
           for s in SPLITS}  # fmt: skip
    ks = ks_test(p_unk, gold["p_unknown"])
    return {
        "gold_agreement": agree,
        "gold_gap": gap,
        "ks_stat": ks["stat"],
        "ks_p": ks["p"],
        "feature_distance_gold": profile_distance(profile, gold["profile"]),
        "feature_distance_original": profile_distance(profile, original_profile),
    }
