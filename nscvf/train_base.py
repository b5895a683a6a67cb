"""Train the embedded base model on the concept world (``nscvf train-base --out DIR``).

Two stages, because end-to-end training from scratch on 2 CPU cores learns the vision side slowly:

1. **Vision.** The CLIP tower learns to tell the 24 named characters (16 primary characters and 8
   look-alike siblings) and "unknown" (all distractors, one class) apart, through a linear head on its
   mean-pooled patch tokens (exactly the tokens the projector reads). Collapsing the distractors into one
   class makes the "unknown" region compact: it is the target region that forgetting aims at (METHOD.md, CVF).
2. **Language.** With the tower frozen (its features cached once), the projector and the Llama learn
   to answer identity and fact questions from the image, fact questions from text alone, and
   "I don't know who this is." for distractors. Question words are randomly perturbed so that held-out
   paraphrases are answered too.

Images come from a pool of training renders (render seeds < HELDOUT_SEED_BASE); every number in the
report is measured on held-out renders, held-out distractor characters and held-out paraphrases.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nscvf import world
from nscvf.eval import evaluate
from nscvf.models import load_model
from nscvf.models.embedded import EmbeddedArch, build_untrained


@dataclass
class TrainBaseConfig:
    """Budget and schedule of base-model training (defaults: the committed model)."""

    seed: int = 0
    renders_per_named: int = 1200  # training renders per named character in the pool
    renders_per_distractor: int = 100
    extra_distractors: int = 200  # more unnamed training individuals (world.extra_training_distractors)
    renders_per_extra: int = 20
    shift_pixels: int = 3  # random translation of pool images at each vision step (cheap extra augmentation)
    heldout_renders: int = 24  # held-out renders per character for the stage-1 curve
    vision_steps: int = 4000
    vision_batch: int = 128
    vision_lr: float = 1e-3
    language_steps: int = 1500
    language_batch: int = 64
    language_lr: float = 1e-3
    word_noise: float = 0.35  # probability of inserting stray words into a training question
    vision_from: str | None = None  # reuse the vision tower of a model saved by an earlier run (skips stage 1)
    # Named characters the language stage treats as unknown ("I don't know who this is." for their images;
    # their text facts are still taught): a gold model that never learned them visually.
    unknown: tuple[str, ...] = ()
    eval_every: int = 250
    workers: int = 2


def _render_batch(args):
    c, seeds = args
    return [np.asarray(world.render(c, s)) for s in seeds]


def render_pool(pairs: list[tuple[world.Character, list[int]]], workers: int) -> list[np.ndarray]:
    """Render (character, seeds) pairs in parallel, keeping order."""
    if workers <= 1:
        return [img for p in pairs for img in _render_batch(p)]
    with get_context("fork").Pool(workers) as pool:
        return [img for chunk in pool.map(_render_batch, pairs, chunksize=1) for img in chunk]


def _pixel_values(processor, images: list[np.ndarray]) -> torch.Tensor:
    out = []
    for i in range(0, len(images), 512):
        batch = [Image.fromarray(a) for a in images[i : i + 512]]
        out.append(processor.image_processor(images=batch, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def _lr(step: int, total: int, peak: float, warmup: int = 150) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _patch_tokens(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The vision tokens the projector reads (LLaVA: chosen layer, CLS dropped)."""
    cfg = model.config
    out = model.model.vision_tower(pixel_values=pixel_values, output_hidden_states=True)
    h = out.hidden_states[cfg.vision_feature_layer]
    return h[:, 1:] if cfg.vision_feature_select_strategy == "default" else h


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


class _Log:
    def __init__(self, progress):
        self.progress = progress
        self.curves: dict[str, list] = {}

    def __call__(self, curve: str, step: int, **values):
        self.curves.setdefault(curve, []).append({"step": step, **{k: round(float(v), 5) for k, v in values.items()}})
        if self.progress:
            self.progress(f"{curve} step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))


def _print(msg: str) -> None:
    print(msg, flush=True)


class _Timer:
    """Wall seconds per stage (``lap``) and in total."""

    def __init__(self):
        self.t0 = self.last = time.time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.laps[name] = now - self.last
        self.last = now

    def seconds(self) -> dict:
        return {k: round(v, 1) for k, v in self.laps.items()} | {"total": round(time.time() - self.t0, 1)}


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list) -> None:
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _ema(running: float, value: float, step: int) -> float:
    return 0.98 * running + 0.02 * value if step else value


def _due(step: int, every: int, total: int) -> bool:
    return (step + 1) % every == 0 or step + 1 == total


def train_base(out_dir: str | Path, config: TrainBaseConfig | None = None, progress=_print) -> dict:
    """Train the embedded model from scratch and save it (model, tokenizer, processor, report) to out_dir."""
    return _train(config or TrainBaseConfig(), Path(out_dir), progress)


def train_golds(out_dir: str | Path, targets: list[str], config: TrainBaseConfig, progress=_print) -> dict[str, dict]:
    """Gold references for the benchmark: for each target, the base recipe's language stage (same seed,
    same vision tower: ``config.vision_from``) with that target answered as unknown. The training pool is
    rendered once for all targets. Each model is saved to ``out_dir/<key>``; returns {name: report}."""
    if not config.vision_from:
        raise ValueError("train_golds needs config.vision_from (the base model whose vision stage the golds share)")
    _, processor = build_untrained(EmbeddedArch(), seed=config.seed)
    data = _training_data(config, processor, progress)
    reports = {}
    for name in targets:
        c = world.get_character(name)
        reports[name] = _train(replace(config, unknown=(c.name,)), Path(out_dir) / c.key, progress, data)
    return reports


def _train(cfg: TrainBaseConfig, out_dir: Path, progress, data: _TrainData | None = None) -> dict:
    """One model: seeds, the untrained model, the pool (rendered here unless given), both stages, save,
    evaluate and report."""
    timer = _Timer()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    log = _Log(progress)
    model, processor = build_untrained(EmbeddedArch(), seed=cfg.seed)
    if data is None:
        data = _training_data(cfg, processor, progress)
        timer.lap("render")
    vision_acc = _vision_stage(model, data, cfg, log, progress)
    timer.lap("vision")
    _language_stage(model, processor, data, cfg, log)
    timer.lap("language")
    _save(model, processor, out_dir)
    return _evaluate_and_report(model, out_dir, cfg, timer, log, vision_acc, progress)


# ---- data pool


@dataclass
class _TrainData:
    pv: torch.Tensor  # pixel values of the training pool
    labels: torch.Tensor  # class per pool image: a named character's index, or n_named ("unknown")
    chars: list[world.Character]  # character per pool image
    held_pv: torch.Tensor  # held-out renders of the named characters and the held-out distractors
    held_labels: torch.Tensor
    n_named: int


def _training_data(cfg: TrainBaseConfig, processor, progress) -> _TrainData:
    named = world.CHARACTERS
    extra = world.extra_training_distractors(cfg.extra_distractors)
    pairs = [(c, world.train_seeds(cfg.renders_per_named)) for c in named]
    pairs += [(d, world.train_seeds(cfg.renders_per_distractor)) for d in world.DISTRACTORS]
    pairs += [(d, world.train_seeds(cfg.renders_per_extra)) for d in extra]
    labels = [i for i, c in enumerate(named) for _ in range(cfg.renders_per_named)]
    labels += [len(named)] * (len(world.DISTRACTORS) * cfg.renders_per_distractor + len(extra) * cfg.renders_per_extra)
    chars = [c for c, seeds in pairs for _ in seeds]
    held_pairs = [(c, world.heldout_seeds(cfg.heldout_renders)) for c in named]
    held_pairs += [(d, world.heldout_seeds(cfg.heldout_renders)) for d in world.HELDOUT_DISTRACTORS]
    held_labels = torch.tensor(
        [i for i, c in enumerate(named) for _ in range(cfg.heldout_renders)]
        + [len(named)] * (len(world.HELDOUT_DISTRACTORS) * cfg.heldout_renders)
    )
    progress(f"rendering {len(labels)} training and {len(held_labels)} held-out images")
    pv = _pixel_values(processor, render_pool(pairs, cfg.workers))
    held_pv = _pixel_values(processor, render_pool(held_pairs, cfg.workers))
    return _TrainData(pv, torch.tensor(labels), chars, held_pv, held_labels, len(named))


# ---- stage 1: vision tower + linear head over the named characters and "unknown"


def _vision_stage(model, data: _TrainData, cfg: TrainBaseConfig, log: _Log, progress) -> dict:
    """Train the vision tower (or load it from ``cfg.vision_from``); returns its held-out accuracy ({} when loaded)."""
    vt = model.model.vision_tower
    head = torch.nn.Linear(vt.config.hidden_size, data.n_named + 1)
    params = list(vt.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.vision_from:
        _load_vision_tower(vt, cfg.vision_from)
        progress(f"stage 1 skipped: vision tower loaded from {cfg.vision_from}")
    vt.train()
    running = 0.0
    for step in range(0 if cfg.vision_from else cfg.vision_steps):
        _set_lr(opt, _lr(step, cfg.vision_steps, cfg.vision_lr))
        idx = torch.randint(len(data.pv), (cfg.vision_batch,), generator=gen)
        logits = head(_patch_tokens(model, _shifted(data.pv[idx], cfg.shift_pixels, gen)).mean(1))
        loss = F.cross_entropy(logits, data.labels[idx], label_smoothing=0.1)
        _update(opt, loss, params)
        running = _ema(running, loss.item(), step)
        if _due(step, cfg.eval_every, cfg.vision_steps):
            log("vision", step + 1, loss=running, **_vision_heldout_acc(model, head, data))
    return {} if cfg.vision_from else _vision_heldout_acc(model, head, data)


def _load_vision_tower(vt, path: str) -> None:
    from transformers import LlavaForConditionalGeneration  # transformers: model classes, only when a donor loads

    donor = LlavaForConditionalGeneration.from_pretrained(path)
    vt.load_state_dict(donor.model.vision_tower.state_dict())


def _shifted(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Roll the images by a random translation of at most ``k`` pixels (one draw from ``gen`` when k > 0)."""
    if not k:
        return x
    dx, dy = torch.randint(-k, k + 1, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _vision_heldout_acc(model, head: torch.nn.Linear, data: _TrainData) -> dict:
    vt = model.model.vision_tower
    vt.eval()
    with torch.no_grad():
        held_pv = data.held_pv
        pred = torch.cat([head(_patch_tokens(model, held_pv[s]).mean(1)).argmax(-1) for s in _chunks(len(held_pv), 256)])
    vt.train()
    ok = pred == data.held_labels
    is_named = data.held_labels < data.n_named
    return {
        "heldout_acc": ok.float().mean().item(),
        "heldout_named_acc": ok[is_named].float().mean().item(),
        "heldout_unknown_acc": ok[~is_named].float().mean().item(),
    }


# ---- stage 2: projector + language model on cached vision tokens


def _language_stage(model, processor, data: _TrainData, cfg: TrainBaseConfig, log: _Log) -> None:
    vt = model.model.vision_tower
    vt.eval()
    for p in vt.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        feats = torch.cat([_patch_tokens(model, data.pv[s]) for s in _chunks(len(data.pv), 256)])
    lm = model.model.language_model
    proj = model.model.multi_modal_projector
    train_params = list(proj.parameters()) + list(lm.parameters()) + list(model.lm_head.parameters())
    train_params = list({id(p): p for p in train_params}.values())  # tied embeddings appear twice
    opt = torch.optim.AdamW(train_params, lr=cfg.language_lr, weight_decay=0.01)
    batches = _LanguageBatches(model, processor, data.chars, feats, cfg)
    lm.train()
    proj.train()
    running = 0.0
    for step in range(cfg.language_steps):
        _set_lr(opt, _lr(step, cfg.language_steps, cfg.language_lr))
        loss = batches.loss([batches.sample() for _ in range(cfg.language_batch)])
        _update(opt, loss, train_params)
        running = _ema(running, loss.item(), step)
        if _due(step, cfg.eval_every, cfg.language_steps):
            log("language", step + 1, loss=running)


class _LanguageBatches:
    """Stage-2 examples (pool image index or None for text-only, question, answer) drawn from one seeded
    ``random.Random``, with word noise on the questions, and the loss of a batch of them."""

    def __init__(self, model, processor, chars: list[world.Character], feats: torch.Tensor, cfg: TrainBaseConfig):
        self.model = model
        self.processor = processor
        self.tok = processor.tokenizer
        self.chars = chars
        self.feats = feats
        self.word_noise = cfg.word_noise
        self.filler = sorted(
            {w.strip("?.,'") for t in world.all_template_texts() for w in t.split()} | {"please", "now", "the", "a"}
        )
        self.rng = random.Random(cfg.seed)
        self.unknown = {world.get_character(n).key for n in cfg.unknown}
        self.text_qas = [qa for c in world.CHARACTERS for qa in world.text_questions(c, "train")]

    def noisy(self, q: str) -> str:
        rng = self.rng
        if rng.random() >= self.word_noise:
            return q
        words = q.split()
        for _ in range(rng.randint(1, 2)):
            op = rng.random()
            if op < 0.6:
                words.insert(rng.randint(0, len(words)), rng.choice(self.filler))
            elif len(words) > 3:
                words.pop(rng.randrange(len(words) - 1))  # drop a word, never the last one
        return " ".join(words)

    def prompt_ids(self, question: str, with_image: bool) -> list[int]:
        processor = self.processor
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        text = text.replace(processor.image_token, processor.image_token * self.feats.shape[1])
        return self.tok(text)["input_ids"]

    def sample(self) -> tuple[int | None, str, str]:
        rng = self.rng
        if rng.random() < 0.25:
            qa = rng.choice(self.text_qas)
            return None, qa.question, qa.answer
        i = rng.randrange(len(self.chars))
        qas = world.image_questions(self.chars[i], "train")
        qa = (
            rng.choice([q for q in qas if q.kind == "name"])
            if rng.random() < 0.4
            else rng.choice([q for q in qas if q.kind != "name"])
        )
        return i, qa.question, world.UNKNOWN_ANSWER if self.chars[i].key in self.unknown else qa.answer

    def loss(self, batch: list[tuple[int | None, str, str]]) -> torch.Tensor:
        seqs, labs, img_idx = [], [], []
        for i, q, a in batch:
            p = self.prompt_ids(self.noisy(q), i is not None)
            ans = self.tok(" " + a, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            seqs.append(p + ans)
            labs.append([-100] * len(p) + ans)
            if i is not None:
                img_idx.append(i)
        ids, lab, att = _pad(seqs, labs, self.tok.pad_token_id)
        model = self.model
        lm = model.model.language_model
        emb = lm.get_input_embeddings()(ids)
        if img_idx:
            img_emb = model.model.multi_modal_projector(self.feats[img_idx]).reshape(-1, emb.shape[-1])
            emb = emb.masked_scatter((ids == model.config.image_token_id).unsqueeze(-1), img_emb.to(emb.dtype))
        hidden = lm(inputs_embeds=emb, attention_mask=att).last_hidden_state
        logits = model.lm_head(hidden[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1))


def _pad(seqs: list[list[int]], labs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, labels (-100 on padding) and attention mask."""
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), pad_id)
    lab = torch.full((len(seqs), L), -100)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, (s, lb) in enumerate(zip(seqs, labs)):
        ids[r, : len(s)] = torch.tensor(s)
        lab[r, : len(lb)] = torch.tensor(lb)
        att[r, : len(s)] = 1
    return ids, lab, att


# ---- save, then the held-out evaluation through the one evaluation routine


def _save(model, processor, out_dir: Path) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    model.config.nscvf_world = "v1"  # marks a model trained on the embedded world (nscvf.world)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _evaluate_and_report(
    model, out_dir: Path, cfg: TrainBaseConfig, timer: _Timer, log: _Log, vision_acc: dict, progress
) -> dict:
    progress("evaluating the saved model on held-out renders and paraphrases")
    ev = evaluate(load_model(str(out_dir)), progress=None)
    report = {
        "command": f"nscvf train-base --out {out_dir}"
        + (f" --vision-from {cfg.vision_from}" if cfg.vision_from else "")
        + "".join(f" --unknown {n}" for n in cfg.unknown),
        "config": asdict(cfg),
        "arch": asdict(EmbeddedArch()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_seconds": timer.seconds(),
        "torch_threads": torch.get_num_threads(),
        "vision_heldout_acc": vision_acc,
        "curves": log.curves,
        "heldout": ev["summary"],
        "eval": ev,
    }
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=1))
    return report
