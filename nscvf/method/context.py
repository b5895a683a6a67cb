"""What a method's loss reads on one step (:class:`StepContext`), and teacher-forcing batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def teacher_forcing_batch(vlm, items) -> dict:
    """``items`` = (image, question, answer) triples -> a right-padded batch with ``labels`` on the answer
    tokens only (-100 elsewhere)."""
    tok = vlm.tokenizer
    prompts = [vlm.prompt(q, True) for _, q, _ in items]
    texts = [p + " " + a + (tok.eos_token or "") for p, (_, _, a) in zip(prompts, items)]
    batch = vlm.encode(texts, [im for im, _, _ in items], "right")
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for r, (p, (im, _, _)) in enumerate(zip(prompts, items)):
        labels[r, : vlm.prompt_length(p, im)] = -100
    return batch | {"labels": labels}


def answer_logits(vlm, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits (float32) and labels, aligned: position t predicts token t + 1."""
    out = vlm.model(**{k: v for k, v in batch.items() if k != "labels"})
    return out.logits[:, :-1].float(), batch["labels"][:, 1:]


def masked_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (B, T) and the answer mask (B, T) of aligned logits and labels."""
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none", ignore_index=-100)
    return nll.view(labels.shape), (labels != -100).float()


class StepContext:
    """What a method's loss can read on one step: current features (with grad), frozen references."""

    def __init__(self, vlm, cfg, rng, refs: dict):
        self.vlm = vlm
        self.cfg = cfg
        self.rng = rng
        self._forget_inputs = refs.get("forget_inputs", [])  # per-image processor dicts (views, grouped by image)
        self.forget_orig_pooled = refs.get("forget_orig_pooled")
        self.region = refs.get("region")
        self._retain_inputs = refs.get("retain_inputs", [])
        self._retain_orig = refs.get("retain_orig", [])  # list of (T, D) tensors
        self.answers = refs.get("answers") or {}
        self.forget_ref_logp = self.answers.get("forget_ref_logp")
        self._known = None

    def forget_tokens(self) -> torch.Tensor:
        """Projector tokens of one random view of each forget image, (N, T, D)."""
        n = len(self.forget_orig_pooled)
        per = len(self._forget_inputs) // n
        pick = [self._forget_inputs[i * per + self.rng.randrange(per)] for i in range(n)]
        return torch.stack(self.vlm.project_images(self.vlm.collate(pick))).float()

    def known_negatives(self) -> torch.Tensor:
        """The target's original features and the retained images' original pooled features."""
        if self._known is None:
            known = torch.stack([F.normalize(t.float().mean(0), dim=-1) for t in self._retain_orig])
            self._known = torch.cat([self.forget_orig_pooled, known.to(self.forget_orig_pooled.device)])
        return self._known

    def retain_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current and original projector tokens of a random retain batch, concatenated over images."""
        idx = self.rng.sample(range(len(self._retain_inputs)), min(self.cfg.retain_batch, len(self._retain_inputs)))
        cur = self.vlm.project_images(self.vlm.collate([self._retain_inputs[i] for i in idx]))
        orig = [self._retain_orig[i].to(cur[0].device) for i in idx]
        return torch.cat([c.float() for c in cur]), torch.cat(orig).float()

    def answer_nll(self, which: str, toward: str = "original", reduction: str = "mean") -> torch.Tensor:
        """Answer NLL per example of the teacher-forcing batch ``{which}_{toward}`` (mean or sum over tokens)."""
        nll, mask = masked_token_nll(*answer_logits(self.vlm, self.answers[f"{which}_{toward}"]))
        total = (nll * mask).sum(-1)
        return total if reduction == "sum" else total / mask.sum(-1).clamp_min(1)

    def retain_kl(self) -> torch.Tensor:
        """KL(reference || current) of the answer-token distributions on the retain answers."""
        logits, labels = answer_logits(self.vlm, self.answers["retain_original"])
        cur = logits.log_softmax(-1)[labels != -100]
        ref = self.answers["retain_ref_logprobs"]
        return F.kl_div(cur, ref.to(cur.device), log_target=True, reduction="batchmean")
