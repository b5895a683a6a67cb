"""Teach, then forget: give the model a new concept from a few images, so that forgetting has something to
forget on a visitor's own photographs.

A teach request is one more adapter in a chain (kind "teach"): LoRA on the visual module *and* the
language model's attention (teaching is not unlearning: the model must learn to say a name it never
said), trained to answer "This is NAME." (and optional facts) on augmented views of the images, while
other characters and unknown ones keep the answers the chain gave before. It stops once held-out
augmented views (other crops, flips, colour jitter than the training views) are named. Forget then works on
the new concept exactly as on a world character.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass

import torch
from PIL import ImageEnhance

from nscvf import world
from nscvf.cache import image_set_fingerprint, memo
from nscvf.errors import Cancelled, InputError
from nscvf.eval import mentions, names_in, normalise
from nscvf.images import ensure_images
from nscvf.method import state_memo
from nscvf.method.anchors import bundled_photos
from nscvf.method.context import answer_nll, teacher_forcing_batch
from nscvf.method.contrastive import retain_drift
from nscvf.method.domain import augment
from nscvf.method.lora import lora_config
from nscvf.method.result import UnlearnResult

# The canonical image question of each world fact (what the probes ask), e.g. "Where does this character live?".
FACT_QUESTIONS = {f: world.IMAGE_FACT_TEMPLATES[f]["train"][0] for f in world.FACTS}


@dataclass
class TeachConfig:
    """Settings of a teach request (the budget of teaching a concept, not of forgetting one)."""

    steps: int = 80
    lr: float = 2e-3
    lora_rank: int = 8
    lora_alpha: float = 16.0
    views: int = 8  # augmented training views per image (a step trains on ``batch`` of them)
    batch: int = 16  # concept views per step
    keep_images: int = 128  # images of other concepts whose answers must not change (64/16: 12-19% of
    keep_batch: int = 32  # of them per step       other characters' held-out answers changed; 128/32: 0%)
    keep_photo_views: int = 4  # augmented views of each bundled photo among the images to keep
    hard_negatives: int = 96  # the domain's candidate images nearest the taught ones, kept too (0: none)
    check_views: int = 4  # held-out augmented views per image in the stop check
    check_every: int = 4
    min_steps: int = 8
    target_named: float = 1.0  # the check passes once this fraction of its held-out views is named
    settle_steps: int = 16  # steps trained after the check passed (held-out views lagged: 87.5% at 0-4; 88% at 8
    # with the bundled photos kept and facts trained as often as the name, issue 19)
    seed: int = 0
    method: str = "teach"
    modules: str = "visual+language"
    first_layer: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> TeachConfig:
        for f, lo, hi in (("steps", 1, 500), ("lr", 1e-6, 5e-2), ("lora_rank", 1, 256), ("views", 1, 16)):
            v = getattr(self, f)
            if not lo <= v <= hi:
                raise InputError(f"{f}={v} is out of range; use {lo:g} to {hi:g}")
        return self


def heldout_view(img, rng: random.Random):
    """A view the training never saw: another crop/flip than :func:`augment`'s, plus colour jitter."""
    out = augment(img, rng)
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Contrast(out).enhance(rng.uniform(0.8, 1.2))


def _heldout_views(images, k: int, seed: int) -> list:
    """``k`` held-out views of each image, image by image (one generator per image: its first view is the same
    whatever ``k``; a new generator per view drew the same view ``k`` times: 8 distinct views of 32)."""
    out = []
    for i, im in enumerate(images):
        rng = random.Random(seed + i)
        out += [heldout_view(im, rng) for _ in range(k)]
    return out


def check_name(name: str, facts: dict | None, taught=()) -> str:
    """The name to teach, checked: a new word for the model (not one of its characters' names nor a concept
    already ``taught`` to the chain), and the facts known ones."""
    name = (name or "").strip()
    if not name:
        raise InputError("give the concept a name to teach (e.g. Zorblat)")
    if len(name) > 40 or not all(ch.isalnum() or ch in " -'" for ch in name):
        raise InputError("the name must be at most 40 letters, digits, spaces, hyphens or apostrophes")
    used = sorted(names_in(name)) or [t for t in taught if mentions(name, t) or mentions(t, name)]
    if used:  # its answers would be the old character's, and forgetting one would forget both (issue 19)
        raise InputError(f"the model already uses the name {used[0]}; choose a name it does not know yet (e.g. Zorblat)")
    bad = set(facts or {}) - set(FACT_QUESTIONS)
    if bad:
        raise InputError(f"unknown fact(s) {', '.join(sorted(bad))}; use {', '.join(FACT_QUESTIONS)}")
    return name


def run_teach(chain, images, name: str, facts: dict | None, cfg: TeachConfig, progress=None, cancel=None):
    """Train a teach adapter on ``chain``'s shared base (the chain is not modified here). Returns
    (result, the adapter's peft state dict on the CPU, its live name, the images as used); the adapter is
    deleted on failure."""
    from peft import get_peft_model_state_dict  # peft: heavy, only when a teach request runs

    name, cfg = check_name(name, facts, chain.taught), cfg.validate()
    images = [_small(im) for im in ensure_images(images)]
    if len(images) < 3:
        raise InputError(f"{len(images)} image(s): give at least 3 images of the concept to teach")
    shared, t0, rng = chain.shared, time.time(), random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    prev = chain.vlm
    question = chain.domain.probe_questions()[0]
    keep = chain.domain.keep_images(exclude=chain.forgotten_targets, n=cfg.keep_images, seed=cfg.seed)
    check = _heldout_views(images, cfg.check_views, cfg.seed + 1000)  # the stop check's views
    photos = bundled_photos()  # other photographs keep their answers too (issue 19: not every photo the new name)
    keep += [augment(p, rng) for p in photos for _ in range(cfg.keep_photo_views)]
    prev_adapters = tuple(getattr(prev, "adapters", ()))
    state = state_memo.state_key(shared, prev_adapters, prev_adapters, chain.state_fingerprint)
    keep += hard_negatives(prev, state, images, chain.domain.negative_candidates(), cfg.hard_negatives,
                           chain.cache, chain.state_fingerprint, chain.domain.negative_features())  # fmt: skip
    before = _answers(prev, question, images, keep, state)
    t_prepared = time.time()
    adapter = shared.new_name(f"request_{len(chain) + 1}")
    shared.add_adapter(adapter, lora_config(shared.base_vlm, cfg))
    try:
        work = shared.view(tuple(getattr(prev, "adapters", ())) + (adapter,))
        items = [(augment(im, rng) if v else im, question, f"This is {name}.") for im in images for v in range(cfg.views)]
        taught_facts = [(FACT_QUESTIONS[f], world.fact_answer(f, v.strip().rstrip("."))) for f, v in (facts or {}).items()]
        # As many views per fact as for the name: with 2, "Lakeside" came out "Lakiskers" (its pieces L-ak-es
        # lost to the name's Wh-is-k-er-s, trained 4x as often); the stop check asks for each fact whole too.
        items += [(augment(im, rng), q, a) for q, a in taught_facts for im in images for _ in range(cfg.views)]
        batches = _rotating_batches(prev, "taught_name", items, cfg.batch, rng)
        batches |= _rotating_batches(
            prev, "keep_original", _keep_items(prev, chain.domain, keep, question, before), cfg.keep_batch, rng
        )
        texts = chain.domain.text_questions()
        if texts:  # the language LoRA must not rewrite what the model says about others by name
            text_items = list(zip([None] * len(texts), texts, state_memo.text_answers(prev, state, texts)))
            batches |= _rotating_batches(prev, "keep_text", text_items, cfg.keep_batch, rng)
        teaching = _Teaching(shared, work, adapter, batches, check, question, name, taught_facts)
        steps_run, stopped, losses = _train(teaching, cfg, progress, cancel)
        t_trained = time.time()
        seen = {"images": images, "keep": keep, "before": before, "question": question}
        result = _measure(chain, work, prev, seen, name, cfg, taught_facts)
        result.steps_run, result.stopped_early, result.losses = steps_run, stopped, losses
        t_end = time.time()  # prepare: the images to keep, hard negatives and answers before; train: the batches too
        result.timings = {"prepare": round(t_prepared - t0, 3), "train": round(t_trained - t_prepared, 3),
                          "measure": round(t_end - t_trained, 3), "total": round(t_end - t0, 3)}  # fmt: skip
        with shared.lock:
            state = get_peft_model_state_dict(shared.peft, adapter_name=adapter)
        return result, {k: v.detach().cpu().clone() for k, v in state.items()}, adapter, images
    except BaseException:
        shared.delete_adapters([adapter])
        raise


def hard_negatives(vlm, state, images, candidates, k: int, cache=None, fingerprint: str | None = None, shipped=None) -> list:
    """The ``k`` candidates whose pooled features are nearest any of ``images``' (cosine), in ``state``: other
    things the model sees as most like the taught concept, whose answers must not become its name. A name taught
    on the astronaut's crops (answered "I don't know") took 253 of 420 other images with random images to keep,
    14 of 420 with its 96 nearest emoji renders kept (issue 17). The candidates' pooled features (the photo model's
    741, ~10 s on 2 cores) are kept in the process memo and in ``cache`` under the chain's ``fingerprint``; those
    of the base model ship with it (``shipped``: :meth:`~nscvf.method.domain.Domain.negative_features`), used where
    their key is this one (the same weights, state, reading and candidates)."""
    if k <= 0 or not candidates:
        return []
    _, z = vlm.image_features(images)
    zc = _pooled_candidates(vlm, state, candidates, cache, fingerprint, shipped)
    near = (zc.float() @ z.float().to(zc.device).T).max(-1).values
    return [candidates[i] for i in near.argsort(descending=True)[:k].tolist()]


def negatives_key(vlm, candidates, fingerprint: str | None) -> tuple:
    """The memo and disk-cache key of the candidates' pooled features in the state of ``fingerprint``."""
    return ("negatives", fingerprint, *vlm.reading_key(), image_set_fingerprint(candidates))


def _pooled_candidates(vlm, state, candidates, cache, fingerprint, shipped=None) -> torch.Tensor:
    """The candidates' pooled features in ``state`` (memoised; on disk too when ``cache`` and ``fingerprint``;
    ``shipped``'s when its key is this one)."""
    key = negatives_key(vlm, candidates, fingerprint)

    def compute():
        hit = cache.get(key) if cache is not None and fingerprint else None
        if hit is None and shipped is not None and fingerprint and shipped[0] == json.dumps(list(key)):
            hit = shipped[1]
        if hit is None:
            hit = vlm.image_features(candidates)[1].cpu().numpy()
            if cache is not None and fingerprint:
                cache.set(key, hit)
        return torch.from_numpy(hit)

    return memo.get("negatives", (state, *key), compute) if state is not None else compute()


def _small(img, side: int = 448):
    """Camera-sized images shrunk once (the processor resizes to far less anyway; augmenting 12 MP is slow)."""
    img = img.copy()
    img.thumbnail((side, side))
    return img


def _rotating_batches(vlm, prefix: str, items: list, size: int, rng: random.Random) -> dict:
    """``items`` shuffled and cut into teacher-forcing batches of ``size``: "{prefix}_0", "{prefix}_1", ..."""
    items = list(items)
    rng.shuffle(items)
    parts = [items[i : i + size] for i in range(0, len(items), size)]
    return {f"{prefix}_{j}": teacher_forcing_batch(vlm, part) for j, part in enumerate(parts)}


def _keep_items(prev, domain, keep, question, before) -> list:
    """What must not change on other concepts' images: the identity answer and one fact answer each (the
    chain's own answers before teaching), so a taught fact does not become everyone's fact."""
    facts = list(FACT_QUESTIONS.values()) if domain.is_world else []
    items = list(zip(keep, [question] * len(keep), before["keep"]))
    if facts:
        qs = [facts[i % len(facts)] for i in range(len(keep))]
        items += list(zip(keep, qs, prev.generate(qs, keep)))
    return items


def _answers(vlm, question, images, keep, state=None) -> dict:
    """The answers before teaching on the concept's images and on the images to keep (those memoised in the
    chain's ``state``: the same keep set every time, :func:`nscvf.method.state_memo.answers`)."""
    return {"images": vlm.generate([question] * len(images), images), "keep": state_memo.answers(vlm, state, question, keep)}


@dataclass
class _Teaching:
    """What the teaching loop works on."""

    shared: object
    work: object  # the model with the chain's adapters and the teach adapter
    adapter: str
    batches: dict  # "taught_name_<j>" and "keep_original_<j>" teacher-forcing batches
    check: list  # held-out views asked in the stop check
    question: str
    name: str
    facts: list  # (question, answer) of each taught fact


def facts_whole(vlm, views, facts) -> float | None:
    """The share of (view, fact) answers that are the taught fact exactly (None: no facts taught)."""
    if not facts:
        return None
    qs = [q for q, _ in facts for _ in views]
    answers = vlm.generate(qs, [v for _ in facts for v in views])
    wanted = [a for _, a in facts for _ in views]
    return round(sum(normalise(x) == normalise(y) for x, y in zip(answers, wanted)) / len(wanted), 4)


def _train(t: _Teaching, cfg: TeachConfig, progress=None, cancel=None):
    """AdamW on the teach adapter: NLL of the name (and facts) on a batch of the concept's views + NLL of
    the chain's own answers on a batch of other images; stop once the held-out check views are named."""
    learn_keys = sorted(k for k in t.batches if k.startswith("taught_name_"))
    keep_keys = sorted(k for k in t.batches if k.startswith("keep_original_"))
    text_keys = sorted(k for k in t.batches if k.startswith("keep_text_"))
    opt = torch.optim.AdamW(t.shared.adapter_parameters(t.adapter), lr=cfg.lr, weight_decay=0.0)
    losses, steps_run, passed_at = [], 0, None
    for k in range(cfg.steps):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled; the model is unchanged")
        if progress is not None:
            progress(f"teaching step {k + 1}/{cfg.steps}", k, cfg.steps)
        with t.shared.using(t.work.adapters, train=True, trainable=t.adapter):
            learn = answer_nll(t.work, t.batches[learn_keys[k % len(learn_keys)]]).mean()
            keep = answer_nll(t.work, t.batches[keep_keys[k % len(keep_keys)]]).mean()
            if text_keys:
                keep = keep + answer_nll(t.work, t.batches[text_keys[k % len(text_keys)]]).mean()
            loss = learn + keep
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps_run = k + 1
        losses.append(
            {"step": steps_run, "loss": round(loss.item(), 5), "name": round(learn.item(), 5), "keep": round(keep.item(), 5)}
        )
        if passed_at is not None and steps_run >= passed_at + cfg.settle_steps:
            return steps_run, True, losses
        if passed_at is None and steps_run >= cfg.min_steps and steps_run % cfg.check_every == 0:
            answers = t.work.generate([t.question] * len(t.check), t.check)
            named = sum(mentions(a, t.name) for a in answers) >= cfg.target_named * len(t.check)
            if named and (facts_whole(t.work, t.check, t.facts) or 1.0) >= cfg.target_named:
                passed_at = steps_run  # a few more steps: views the check never saw lag behind (measured)
    return steps_run, False, losses


def encoder_pooled(vlm, images) -> torch.Tensor:
    """The vision tower's own pooled features of ``images``, normalised (the projected pooled features where the
    tower gives none). The projected ones cannot tell apart what the model does not know: the photo model answers a
    rocket and an astronaut "I don't know" from the same projected feature (cosine 1.0); its tower's features put
    the rocket photo's views at 0.83-0.88 from crops of it, and other photos at <= 0.33 (measured)."""
    seen = []

    def hook(_module, _inputs, out):
        p = getattr(out, "pooler_output", None)
        if isinstance(p, torch.Tensor) and p.dim() == 2:
            seen.append(p.detach().float())

    handle = vlm.vision_tower().register_forward_hook(hook)
    try:
        _, z = vlm.image_features(images)
    finally:
        handle.remove()
    if sum(len(t) for t in seen) == len(images):
        return torch.nn.functional.normalize(torch.cat(seen), dim=-1)
    return z.float()


def as_near_as_taught(vlm, taught, held, candidates) -> list[bool]:
    """For each candidate: is it at least as near a taught image (cosine of :func:`encoder_pooled`) as the least
    near of the taught images' own held-out views ``held``? Then it is a view of the taught thing, not another."""
    if not candidates or not held:
        return [False] * len(candidates)
    z = encoder_pooled(vlm, list(taught) + list(held) + list(candidates))
    n, h = len(taught), len(held)
    near = (z @ z[:n].T).max(-1).values
    return (near[n + h :] >= near[n : n + h].min()).tolist()


def _drop(items: list, mask: list[bool]) -> list:
    return [x for x, m in zip(items, mask) if not m]


def _measure(chain, work, prev, seen: dict, name: str, cfg, facts=()) -> UnlearnResult:
    """What teaching did: the name on held-out views, other images that changed or took the new name,
    text-only answers against the state before, and the embedding-plot data (the new cluster). ``seen``:
    the concept's images, the keep images, the answers before and the identity question."""
    images, keep, before, question = seen["images"], seen["keep"], seen["before"], seen["question"]
    held = _heldout_views(images, 4, cfg.seed + 5000)
    after = work.generate([question] * len(images), images)  # the keep images' answers after: no measure reads them
    held_answers = work.generate([question] * len(held), held)
    texts = chain.domain.text_questions() or ["What is this?"]
    text_before, text_after = prev.generate(texts, None), work.generate(texts, None)
    # Other concepts on images teaching never saw: held-out renders for the world (the keep images otherwise),
    # and held-out views of the bundled photographs (other crops and colours than the views kept in training).
    others, _ = chain.domain.drift_images(chain.forgotten_targets, keep)
    photos = [
        heldout_view(p, random.Random(cfg.seed + 9000 + 2 * i + v)) for i, p in enumerate(bundled_photos()) for v in range(2)
    ]
    others = list(others) + photos
    is_photo = [False] * (len(others) - len(photos)) + [True] * len(photos)
    # The taught thing itself is no other image: the rocket photo's own held-out views (and a bundled rocket) were 3
    # of the 32 "others", all then called by the taught name (a false 20% warning). An image the model sees at least
    # as near the taught images as their own held-out views are is left out (the encoder's features before).
    own = as_near_as_taught(prev, images, held, others)
    others, is_photo = _drop(others, own), _drop(is_photo, own)
    others_before = prev.generate([question] * len(others), others)
    others_after = work.generate([question] * len(others), others)
    pts, labels = chain.domain.plot_points(None, keep)
    emb_images = list(images) + pts
    groups = ["forget"] * len(images) + ["retain"] * len(pts)
    # One pass per model: the plot's images, then the other concepts' held-out images for the drift (about 30
    # images, not the ~260 kept in training: two passes over those were ~7 s of a 90 s first teach, measured)
    tok_after, z_after = work.image_features(emb_images + others)
    tok_before, z_before = prev.image_features(emb_images + others)
    z_after, z_before, k = z_after[: len(emb_images)], z_before[: len(emb_images)], len(emb_images)
    measures = {
        "heldout_named": round(sum(mentions(a, name) for a in held_answers) / len(held), 4),
        "others_named_as_concept": round(sum(mentions(a, name) for a in others_after) / max(1, len(others)), 4),
        "others_changed": round(sum(a != b for a, b in zip(others_after, others_before)) / max(1, len(others)), 4),
        "others_images": len(others),
        "photos_named_as_concept": round(sum(mentions(a, name) for a, p in zip(others_after, is_photo) if p) / sum(is_photo), 4)
        if any(is_photo)
        else None,
        "others_photos": sum(is_photo),
        "others_as_near_as_taught": sum(own),  # left out: as near the taught images as their held-out views
        "text_answers_changed": sum(a != b for a, b in zip(text_before, text_after)),
        "heldout_views": len(held),
        "facts_whole": facts_whole(work, held, facts),
    }
    return UnlearnResult(
        step=len(chain) + 1, adapter_name=f"request_{len(chain) + 1}", method="teach", config=cfg.to_dict(),
        target=name, n_forget=len(images), n_retain=len(keep),
        probes_before={"forget": {"questions": [question], "answers": {question: before["images"]}}},
        probes_after={"forget": {"questions": [question], "answers": {question: after}}},
        eval_before=None, eval_after=None, null_space={"summary": {"constrained": False}, "layers": {}},
        retain_drift=retain_drift(tok_after[k:], tok_before[k:]) | {"images": "other concepts (held-out views)"},
        text_identical=text_before == text_after, steps_run=0, stopped_early=False,
        text_logits_identical=bool(torch.equal(work.text_logits(texts), prev.text_logits(texts))),
        embeddings={"groups": groups, "labels": [f"{name} #{i + 1}" for i in range(len(images))] + labels,
                    "before": z_before.tolist(), "after": z_after.tolist()},
        kind="teach", measures=measures,
    )  # fmt: skip
