"""What a method's loss reads on one step (:class:`StepContext`), teacher-forcing batches, and activation
checkpointing for the training step."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from nscvf.method import state_memo


def split(n: int, m: int) -> list[range]:
    """``range(n)`` in ``m`` contiguous parts of near-equal size (the last ones empty when n < m)."""
    q, r = divmod(n, m)
    parts, start = [], 0
    for j in range(m):
        stop = start + q + (j < r)
        parts.append(range(start, stop))
        start = stop
    return parts


def teacher_forcing_batch(vlm, items) -> dict:
    """``items`` = (image, question, answer) triples -> a right-padded batch with ``labels`` on the answer
    tokens only (-100 elsewhere). Images are all given or all None (text-only questions)."""
    tok = vlm.tokenizer
    text_only = all(im is None for im, _, _ in items)
    prompts = [vlm.prompt(q, not text_only) for _, q, _ in items]
    texts = [p + " " + a + (tok.eos_token or "") for p, (_, _, a) in zip(prompts, items)]
    batch = vlm.encode(texts, None if text_only else [im for im, _, _ in items], "right")
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for r, (p, (im, _, _)) in enumerate(zip(prompts, items)):
        labels[r, : vlm.prompt_length(p, im)] = -100
    return batch | {"labels": labels}


def answer_logits(vlm, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits (float32) and labels, aligned: position t predicts token t + 1. Only the positions
    from the first answer token on are projected to the vocabulary (``logits_to_keep``): the image and prompt
    positions' logits are never read, and at 7B with a 32k-152k vocabulary they were gigabytes."""
    labels = batch["labels"]
    answer = labels != -100
    T = labels.shape[1]
    first = int(answer.float().argmax(1).min()) if bool(answer.any()) else T - 1
    keep = max(2, T - first + 1)  # logits of positions T - keep .. T - 1 predict labels T - keep + 1 .. T - 1
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = vlm.model(**inputs, use_cache=False, logits_to_keep=keep)
    return out.logits[:, :-1].float(), labels[:, T - keep + 1 :]


def masked_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (B, T) and the answer mask (B, T) of aligned logits and labels."""
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none", ignore_index=-100)
    return nll.view(labels.shape), (labels != -100).float()


def answer_nll(vlm, batch, reduction: str = "mean") -> torch.Tensor:
    """Answer NLL per example of a teacher-forcing batch (mean or sum over its answer tokens), (B,)."""
    nll, mask = masked_token_nll(*answer_logits(vlm, batch))
    total = (nll * mask).sum(-1)
    return total if reduction == "sum" else total / mask.sum(-1).clamp_min(1)


def answer_logprobs(vlm, batch) -> torch.Tensor:
    """Log-probabilities over the vocabulary at every answer token of a batch, (answer tokens, V)."""
    logits, labels = answer_logits(vlm, batch)
    return logits.log_softmax(-1)[labels != -100]


def answer_tokens(batch) -> int:
    """Answer tokens of a teacher-forcing batch (the labels that are scored)."""
    return int((batch["labels"][:, 1:] != -100).sum())


ANSWER_BATCHES = ("forget_original", "forget_unknown", "retain_original")


def answer_batches(
    prev,
    forget_items: list,
    retain_images: list,
    question: str,
    unknown: str,
    micro_batches: int,
    state: tuple | None = None,
    needed: tuple[str, ...] = ANSWER_BATCHES,
) -> dict:
    """Teacher-forcing batches for answer-level losses: the model's own answers (``forget_items``: image,
    question, answer) and the ``unknown`` answer on forget images; the model's own answers to ``question``
    on ``retain_images``; and the reference log-probabilities (NPO, KL) under ``prev``, the chain's state
    before the request (its memo key ``state``: :func:`nscvf.method.state_memo.state_key`). Every step uses all
    rows, so each is built once as ``micro_batches`` parts (None where a part has no row). Only the batches in
    ``needed`` (the method's ``answer_batches``) are built, and a reference only with its batch: NSCVF reads
    "forget_unknown" alone, and the others' forward passes were 0.2 s of a 5 s request (issue 20)."""
    rows = {}
    if "forget_original" in needed:
        rows["forget_original"] = forget_items
    if "forget_unknown" in needed:
        rows["forget_unknown"] = [(im, q, unknown) for im, q, _ in forget_items]
    if "retain_original" in needed:
        r_ans = state_memo.answers(prev, state, question, retain_images)
        rows["retain_original"] = [(im, question, a) for im, a in zip(retain_images, r_ans)]
    data = {
        name: [
            teacher_forcing_batch(prev, [items[i] for i in part]) if part else None for part in split(len(items), micro_batches)
        ]
        for name, items in rows.items()
    }
    with torch.no_grad(), prev.scope():
        if "forget_original" in data:
            data["forget_ref_logp"] = [None if b is None else -answer_nll(prev, b, "sum") for b in data["forget_original"]]
        if "retain_original" in data:
            data["retain_ref_logprobs"] = [None if b is None else answer_logprobs(prev, b) for b in data["retain_original"]]
    return data


@contextmanager
def activation_checkpointing(model, on: bool):
    """Recompute each transformer layer's activations in backward instead of keeping them, in the frozen LLM
    (the answer term back-propagates through it) and the vision tower. Non-reentrant checkpointing: it needs
    no input that requires grad (the frozen embeddings give none), so gradients reach the LoRA parameters.
    The model is shared by every session: it is on only inside this block (the caller holds the model's
    lock); transformers' layers checkpoint only in training mode with grad enabled in any case."""
    if not on:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        model.activation_checkpointing_disable()
        if getattr(model, "_require_grads_hooks", None):  # added by the enable call; not removed by disable
            model.disable_input_require_grads()


class StepContext:
    """What a method's loss reads on one step: current features (with grad) and frozen references.

    :meth:`begin_step` draws the step's batch once (one random view of each forget image, ``retain_batch``
    retain images; the answer batches are used whole); :meth:`micro` restricts every accessor to micro-batch
    ``j`` of it. Every loss term is a mean over the step's items: a method computes per-item terms and
    ``ctx.mean(terms, over)`` divides their sum by the *step's* count of ``over``. The micro-batches' losses
    (and logs) therefore add up to the one-batch loss, and their accumulated gradients to its gradient.
    Counts: "forget" (anchors), "retain_tokens", and each answer batch by name ("forget_unknown",
    "forget_original", "retain_original": rows; "retain_original_tokens": answer tokens)."""

    def __init__(self, vlm, cfg, rng, refs: dict):
        self.vlm = vlm
        self.cfg = cfg
        self.rng = rng
        self._forget_inputs = refs.get("forget_inputs", [])  # per-image processor dicts (views, grouped by image)
        self.forget_orig_pooled = refs.get("forget_orig_pooled")
        self.region = refs.get("region")
        self._retain_inputs = refs.get("retain_inputs", [])
        self._retain_orig = refs.get("retain_orig", [])  # list of (T, D) tensors
        self.answers = refs.get("answers") or {}  # name -> one batch (or None) per micro-batch
        self.micro_batches = getattr(cfg, "micro_batches", 1)
        self._known = None
        self._j = 0
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ the step's batch

    def begin_step(self) -> None:
        """Draw this step's batch (once, whatever the number of micro-batches) and its item counts."""
        n = len(self.forget_orig_pooled)
        per = len(self._forget_inputs) // n
        self._views = [i * per + self.rng.randrange(per) for i in range(n)]
        nr = len(self._retain_inputs)
        self._retain_idx = self.rng.sample(range(nr), min(self.cfg.retain_batch, nr))
        orig = torch.cat([self._retain_orig[i] for i in self._retain_idx]).float()
        self.retain_scale = orig.pow(2).mean().clamp_min(1e-8)  # the retain MSE's normaliser, over the whole batch
        self.counts = {"forget": n, "retain_tokens": len(orig)}
        for name, parts in self.answers.items():
            parts = [b for b in (parts if isinstance(parts, list) else [parts]) if isinstance(b, dict)]
            if parts and "labels" in parts[0]:  # a teacher-forcing batch
                self.counts[name] = sum(len(b["labels"]) for b in parts)
                self.counts[f"{name}_tokens"] = sum(answer_tokens(b) for b in parts)
        self.micro(0)

    def micro(self, j: int) -> None:
        """Restrict the accessors to micro-batch ``j`` (of ``micro_batches``) of the step's batch."""
        m = self.micro_batches
        self._j = j
        self._views_j = [self._views[i] for i in split(len(self._views), m)[j]]
        self._retain_j = [self._retain_idx[i] for i in split(len(self._retain_idx), m)[j]]

    def mean(self, terms: torch.Tensor, over: str) -> torch.Tensor:
        """This micro-batch's share of the step's mean of ``terms``: their sum over the step's count."""
        return terms.sum() / max(1, self.counts[over])

    # ------------------------------------------------------------------ features

    def forget_tokens(self) -> torch.Tensor:
        """Projector tokens of the step's view of each forget image in this micro-batch, (n, T, D)."""
        if not self._views_j:
            return self._empty(0, 1, self.region.shape[-1])
        pick = [self._forget_inputs[i] for i in self._views_j]
        return torch.stack(self.vlm.project_images(self.vlm.collate(pick))).float()

    def known_negatives(self) -> torch.Tensor:
        """The target's original features and the retained images' original pooled features."""
        if self._known is None:
            known = torch.stack([F.normalize(t.float().mean(0), dim=-1) for t in self._retain_orig])
            self._known = torch.cat([self.forget_orig_pooled, known.to(self.forget_orig_pooled.device)])
        return self._known

    def retain_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current and original projector tokens of this micro-batch's retain images, concatenated, (N, D)."""
        if not self._retain_j:
            empty = self._empty(0, self.region.shape[-1])
            return empty, empty
        cur = self.vlm.project_images(self.vlm.collate([self._retain_inputs[i] for i in self._retain_j]))
        orig = [self._retain_orig[i].to(cur[0].device) for i in self._retain_j]
        return torch.cat([c.float() for c in cur]), torch.cat(orig).float()

    # ------------------------------------------------------------------ answers

    def _answers(self, name: str):
        """This micro-batch's part of answer data ``name`` (a list per micro-batch, or one batch for all)."""
        data = self.answers[name]
        return data[self._j] if isinstance(data, list) else data

    def _empty(self, *shape) -> torch.Tensor:
        """An empty term: this micro-batch has no item of it (fewer items than micro-batches)."""
        return torch.zeros(*shape, device=self.vlm.device)

    def answer_nll(self, which: str, toward: str = "original", reduction: str = "mean") -> torch.Tensor:
        """Answer NLL per example of this micro-batch's rows of ``{which}_{toward}`` (mean or sum over tokens);
        average with ``ctx.mean(nll, f"{which}_{toward}")``."""
        batch = self._answers(f"{which}_{toward}")
        if batch is None:
            return self._empty(0)
        return answer_nll(self.vlm, batch, reduction)

    @property
    def forget_ref_logp(self) -> torch.Tensor:
        """Reference log-probabilities (sum over answer tokens) of this micro-batch's forget answers."""
        ref = self._answers("forget_ref_logp")
        return self._empty(0) if ref is None else ref

    def retain_kl(self) -> torch.Tensor:
        """KL(reference || current) of the answer-token distributions on this micro-batch's retain answers, one
        term per answer token; ``ctx.mean(kl, "retain_original_tokens")`` is KL ``batchmean`` over the step."""
        batch = self._answers("retain_original")
        if batch is None:
            return self._empty(0)
        cur = answer_logprobs(self.vlm, batch)
        ref = self._answers("retain_ref_logprobs").to(cur.device)
        return F.kl_div(cur, ref, log_target=True, reduction="none").sum(-1)
