"""Train the photo model (``nscvf train-base --photo --out DIR``; issue 17).

The encoder is the pretrained EfficientNet-Lite0, frozen, with its ImageNet head as its last layer: the tower's
one image token is the head's class probabilities (``image_tokens_kind="head"``). No photo dataset at scale is
reachable here, so the language stage learns to *read the head*, which works the same on any photograph:

1. **Projector, first layer = the concept table.** Channel j of ``linear_1`` sums the probabilities of concept j's
   ImageNet classes (scaled and shifted: ``gain * p - offset``, so the GELU after it passes the concepts the head
   gives a real share and silences the rest), one more channel sums all the table's classes; it stays frozen here.
2. **Every concept seen, at every confidence.** The language model is trained on concept-probability vectors:
   those of the training images (emoji renders, views, mixtures, unknown images) under random permutations of the
   concepts (an image of concept a becomes an input of concept b), and synthetic ones drawn directly (one concept
   at p >= 0.4 and a few others below it; or nothing above 0.15). Earlier designs read the pooled features through
   the head's rows and named 58.6% of the held-out photos the head is confident on (BENCHMARKS.md, photo model):
   the features of photos and emoji differ where their class probabilities do not.
3. **Answers from the teacher.** Concept probability = the head's softmax summed over the concept's classes;
   >= ``name_threshold``: "This is a cat." / its kind; below ``unknown_threshold``: "I don't know what this is.";
   in between: not trained on. Text-only questions teach each concept's two facts.

``linear_2`` and the Llama (with its tokenizer) are trained; the fidelity on held-out emoji, real photos, crops and
unknown images is measured by ``scripts/photo_fidelity.py`` on the saved model.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nscvf import photo_features as pf
from nscvf.concepts import table
from nscvf.method.photo_domain import MARKER
from nscvf.models.efficientnet import load_pretrained_lite0
from nscvf.models.photo import PhotoArch, build
from nscvf.train_base import _due, _ema, _lr, _pad, _print, _set_lr, _update


@dataclass
class PhotoTrainConfig:
    """Budget and schedule of the photo model's language stage (defaults: the committed model)."""

    seed: int = 0
    steps: int = 1200
    batch: int = 32
    lr: float = 1e-3
    text_fraction: float = 0.25  # share of text-only fact questions in a batch
    kind_fraction: float = 0.35  # share of image examples asking "What kind of thing is this?"
    synthetic: float = 0.5  # image examples drawn directly as concept probabilities (the rest: training images)
    permuted: float = 0.7  # training images whose concepts are permuted (the rest: as they are)
    gain: float = 8.0  # linear_1: gain * p - offset per concept (p = 0.25 is GELU's zero)
    offset: float = 2.0
    name_threshold: float = 0.4
    unknown_threshold: float = 0.15
    eval_every: int = 100
    features: str = "runs/photo"  # where the precomputed head logits are (computed there if missing)


def membership() -> torch.Tensor:
    """(1000, concepts): 1 where an ImageNet class belongs to a concept of the table."""
    concepts = table().concepts
    m = torch.zeros(1000, len(concepts))
    for j, c in enumerate(concepts):
        m[list(c.classes), j] = 1.0
    return m


@torch.no_grad()
def init_projector_from_table(model, cfg: PhotoTrainConfig) -> None:
    """``linear_1`` rows: ``gain`` times each concept's classes (then all the table's classes), bias ``-offset``;
    the rest zeros. On the head token (class probabilities) channel j is ``gain * p(concept j) - offset``."""
    lin = model.model.multi_modal_projector.linear_1
    m = membership()
    n = m.shape[1]
    if n + 1 > lin.out_features:
        raise ValueError(f"{n} concepts do not fit a projector of width {lin.out_features}")
    lin.weight.zero_()
    lin.bias.zero_()
    lin.weight[:n, : m.shape[0]] = cfg.gain * m.T
    lin.weight[n, : m.shape[0]] = cfg.gain * m.sum(1).clamp(max=1)
    lin.bias[: n + 1] = -cfg.offset


class _Examples:
    """Training examples drawn from one seeded ``random.Random``: (projector inputs or None, question, answer)."""

    def __init__(self, model, processor, train: pf.ImageSet, cfg: PhotoTrainConfig):
        self.t = table()
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.tok = processor.tokenizer
        self.processor = processor
        self.n = len(self.t.concepts)
        self.width = model.model.multi_modal_projector.linear_1.out_features
        # Concept probabilities of every training image (N, concepts) and their total.
        self.q = train.logits.float().softmax(-1) @ membership()
        self.text_qas = [qa for c in self.t.concepts for qa in self.t.text_qa(c)]

    def synthetic(self) -> torch.Tensor:
        """A concept-probability vector: one concept at p >= the name threshold, others below it (named); or every
        concept below the unknown threshold."""
        rng, cfg = self.rng, self.cfg
        q = torch.zeros(self.n)
        if rng.random() < 0.6:
            j = rng.randrange(self.n)
            q[j] = p = rng.uniform(cfg.name_threshold, 1.0) if rng.random() < 0.7 else rng.uniform(cfg.name_threshold, 0.6)
            rest = (1 - p) * rng.random()  # the rest of the members' share (the remainder: classes outside the table)
            others = rng.sample([k for k in range(self.n) if k != j], rng.randrange(0, 6))
            if others and rest > 0:
                w = torch.distributions.Dirichlet(torch.ones(len(others))).sample()
                q[others] = (rest * w).clamp(max=p * 0.9)
        else:
            cap = cfg.unknown_threshold * rng.uniform(0.3, 0.95)
            others = rng.sample(range(self.n), rng.randrange(1, 40))
            w = torch.distributions.Dirichlet(torch.ones(len(others))).sample()
            q[others] = (rng.random() * w).clamp(max=cap)
        return q

    def image_q(self) -> torch.Tensor:
        q = self.q[self.rng.randrange(len(self.q))]
        if self.rng.random() < self.cfg.permuted:
            g = torch.Generator().manual_seed(self.rng.randrange(2**31))
            q = q[torch.randperm(self.n, generator=g)]
        return q

    def inputs(self, q: torch.Tensor) -> torch.Tensor:
        """``linear_1``'s output for concept probabilities ``q`` (1, width): what the frozen layer gives the token."""
        e = torch.zeros(1, self.width)
        e[0, : self.n] = self.cfg.gain * q - self.cfg.offset
        e[0, self.n] = self.cfg.gain * float(q.sum().clamp(max=1)) - self.cfg.offset
        return e

    def answer(self, q: torch.Tensor, kind: bool) -> str | None:
        best, j = q.max(0)
        c = self.t.concepts[int(j)]
        if best >= self.cfg.name_threshold:
            return c.kind if kind else self.t.name_answer(c)
        if best < self.cfg.unknown_threshold:
            return self.t.unknown_answer
        return None  # ambiguous: not trained on

    def sample(self):
        rng = self.rng
        if rng.random() < self.cfg.text_fraction:
            q, a = rng.choice(self.text_qas)
            return None, q, a
        while True:
            q = self.synthetic() if rng.random() < self.cfg.synthetic else self.image_q()
            kind = rng.random() < self.cfg.kind_fraction
            a = self.answer(q, kind)
            if a is not None:
                return self.inputs(q), self.t.questions["kind_image" if kind else "name"], a

    def prompt_ids(self, question: str, with_image: bool) -> list[int]:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return self.tok(text)["input_ids"]  # one image token: the head token


def _loss(model, ex: _Examples, batch) -> torch.Tensor:
    seqs, labs, feats = [], [], []
    for e, q, a in batch:
        p = ex.prompt_ids(q, e is not None)
        ans = ex.tok(" " + a, add_special_tokens=False)["input_ids"] + [ex.tok.eos_token_id]
        seqs.append(p + ans)
        labs.append([-100] * len(p) + ans)
        if e is not None:
            feats.append(e)
    ids, lab, att = _pad(seqs, labs, ex.tok.pad_token_id)
    lm = model.model.language_model
    proj = model.model.multi_modal_projector
    emb = lm.get_input_embeddings()(ids)
    if feats:
        img = proj.linear_2(proj.act(torch.stack(feats))).reshape(-1, emb.shape[-1])
        emb = emb.masked_scatter((ids == model.config.image_token_id).unsqueeze(-1), img.to(emb.dtype))
    hidden = lm(inputs_embeds=emb, attention_mask=att).last_hidden_state
    logits = model.lm_head(hidden[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1))


def features(cfg: PhotoTrainConfig, image_processor, tower, progress) -> dict[str, pf.ImageSet]:
    """The train and held-out image sets' tokens and head logits, computed once into ``cfg.features``."""
    root = Path(cfg.features)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, make in (("train", pf.train_images), ("heldout", pf.heldout_images)):
        path = root / f"{name}.pt"
        if not path.exists():
            ims, labels = make()
            progress(f"encoding {len(ims)} {name} images with the frozen encoder (once)")
            pf.encode(tower, image_processor, ims, labels, progress=progress).save(path)
        out[name] = pf.ImageSet.load(path)
    return out


def train_photo(out_dir: str | Path, cfg: PhotoTrainConfig | None = None, progress=_print) -> dict:
    cfg = cfg or PhotoTrainConfig()
    out_dir = Path(out_dir)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    arch = PhotoArch(image_tokens="head")
    model, processor = build(arch, table().corpus(), tower=load_pretrained_lite0(), seed=cfg.seed)
    init_projector_from_table(model, cfg)
    sets = features(cfg, processor.image_processor, model.model.vision_tower, progress)
    ex = _Examples(model, processor, sets["train"], cfg)
    lm, proj = model.model.language_model, model.model.multi_modal_projector
    params = list({id(p): p for p in [*proj.linear_2.parameters(), *lm.parameters(), *model.lm_head.parameters()]}.values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    lm.train()
    running, curve = 0.0, []
    for step in range(cfg.steps):
        _set_lr(opt, _lr(step, cfg.steps, cfg.lr))
        loss = _loss(model, ex, [ex.sample() for _ in range(cfg.batch)])
        _update(opt, loss, params)
        running = _ema(running, loss.item(), step)
        if _due(step, cfg.eval_every, cfg.steps):
            curve.append({"step": step + 1, "loss": running, "seconds": round(time.time() - t0, 1)})
            progress(f"language step {step + 1}/{cfg.steps}: loss {running:.4f} ({time.time() - t0:.0f} s)")
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.nscvf_world = MARKER  # marks a model trained on the photo concept table: its Domain is PhotoDomain
    model.save_pretrained(out_dir, max_shard_size="9MB")  # shards under 10 MB: a Space's git takes them without LFS
    processor.save_pretrained(out_dir)
    report = {
        "command": f"nscvf train-base --photo --out {out_dir}",
        "config": asdict(cfg),
        "arch": asdict(arch),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_images": len(sets["train"].labels),
        "wall_seconds": round(time.time() - t0, 1),
        "curve": curve,
    }
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=1))
    return report
