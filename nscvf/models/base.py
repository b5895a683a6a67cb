"""One interface over vision-language model families.

A family adapter says where the visual module (vision tower + projector) lives and how images become
projector tokens; everything else (prompting, batched generation, answer scoring, LoRA targets,
fingerprints) is shared here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from functools import cached_property

import torch
import torch.nn.functional as F
from PIL import Image

from nscvf.cache import memo
from nscvf.images import ensure_images

# Config fields that say where or how a checkpoint was loaded, not what it is (left out of fingerprints).
_NOT_CONTENT = {"_name_or_path", "dtype", "torch_dtype", "transformers_version", "_attn_implementation_autoset"}


def scoped(fn):
    """Run a public entry point inside the model's scope: for a model that shares its weights with others
    (:class:`nscvf.method.shared.SharedBase`), the right adapters are active and nobody else's call
    interleaves; a plain model has no scope."""

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        with self.scope():
            return fn(self, *args, **kwargs)

    return run


def pool_tokens(tokens: list[torch.Tensor]) -> torch.Tensor:
    """z(x) = L2-normalised mean over tokens, per image, (N, D) (METHOD.md, CVF representation)."""
    return torch.stack([F.normalize(t.mean(0), dim=-1) for t in tokens]) if tokens else torch.empty(0)


class VisionLanguageModel:
    """A loaded MLLM with its processor. ``model`` may be wrapped by peft; ``base`` never is."""

    family = "base"
    model_types: tuple[str, ...] = ()  # the config.model_type values this adapter handles (registry keys)
    # Resolution cap for every image the model sees here (unlearning, its references and answers): at most this
    # many pixels per image, for families whose processors resize to a pixel budget (None: the processor's own).
    unlearn_max_pixels: int | None = None
    # GPU seconds budgets of one request at that resolution (nscvf.models.budget.zerogpu_duration): per
    # optimisation step (with its share of the stop checks), and for everything else (references, null space,
    # answers and evaluation). Issue 9's targets on one H100/H200 for 7B models: <= 1.5 s/step, <= 60 s per
    # 20-step request.
    step_seconds: float = 2.0
    fixed_seconds: float = 45.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "project_images" in cls.__dict__:  # a family's projection runs in the model's scope too
            cls.project_images = scoped(cls.__dict__["project_images"])

    def __init__(self, model, processor, source: str):
        self.model = model
        self.processor = processor
        self.source = source
        self.tokenizer = getattr(processor, "tokenizer", processor)
        # Padding side is passed per call (left to generate, right to teacher-force), never set here: the
        # tokenizer is shared by every view of a model and every thread.
        if self.tokenizer.pad_token_id is None:  # set once, never changed back
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._scope = None  # a context-manager factory, set by SharedBase for its views

    def scope(self):
        """The context every public call runs in (see :func:`scoped`)."""
        return self._scope() if self._scope is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------ family-specific (override)

    @classmethod
    def load_processor(cls, source: str):
        """The processor saved with a checkpoint (a family overrides this where AutoProcessor needs help)."""
        from transformers import AutoProcessor  # transformers: heavy, only when a processor loads

        return AutoProcessor.from_pretrained(source)

    @property
    def base(self):
        """The transformers model, under any peft wrapper."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def vision_tower(self) -> torch.nn.Module:
        raise NotImplementedError  # implemented by every family subclass

    def projector(self) -> torch.nn.Module:
        raise NotImplementedError  # implemented by every family subclass

    def language_model(self) -> torch.nn.Module:
        raise NotImplementedError  # implemented by every family subclass

    def image_kwargs(self) -> dict:
        """Per-call image-processor arguments that apply ``unlearn_max_pixels`` (passed to every call, never set
        on the processor: it is shared by every view and thread). None of them by default."""
        return {}

    def image_inputs(self, images: list[Image.Image]) -> dict:
        """Processor output for images alone (tensors on the model's device and dtype)."""
        out = self.processor.image_processor(images=images, return_tensors="pt", **self.image_kwargs())
        return self._to_device(dict(out))

    def collate(self, inputs: list[dict]) -> dict:
        """Concatenate per-image ``image_inputs`` dicts into one batch."""
        return {
            k: torch.cat([d[k] for d in inputs]) if isinstance(inputs[0][k], torch.Tensor) else inputs[0][k] for k in inputs[0]
        }

    def project_images(self, inputs: dict) -> list[torch.Tensor]:
        """Projector output per image: a list of (tokens, hidden) tensors (the visual tokens the LLM sees)."""
        raise NotImplementedError  # implemented by every family subclass

    # ------------------------------------------------------------------ shared

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.base.parameters()).dtype

    def _to_device(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(self.dtype)
            out[k] = v
        return out

    def visual_modules(self) -> dict[str, torch.nn.Module]:
        """The modules that unlearning may tune, by their full names in ``base``."""
        names = {id(m): n for n, m in self.base.named_modules()}
        return {names[id(m)]: m for m in (self.vision_tower(), self.projector())}

    def visual_linear_names(self) -> list[str]:
        """Full names of every nn.Linear inside the vision tower and projector: the LoRA targets.
        The same names once LoRA is attached (a LoRA layer counts as its linear, not its parts)."""
        return self._linear_names(self.visual_modules())

    def language_linear_names(self) -> list[str]:
        """Full names of every nn.Linear inside the language model (teaching only; unlearning never tunes it)."""
        lm = self.language_model()
        names = {id(m): n for n, m in self.base.named_modules()}
        return self._linear_names({names[id(lm)]: lm})

    @staticmethod
    def _linear_names(modules: dict) -> list[str]:
        from peft.tuners.tuners_utils import BaseTunerLayer  # peft: heavy, only when LoRA targets are listed

        out = []
        for prefix, module in modules.items():
            tuned = [n for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
            for n, m in module.named_modules():
                if any(n.startswith(t + ".") for t in tuned):
                    continue
                if isinstance(m, torch.nn.Linear) or n in tuned:
                    out.append(f"{prefix}.{n}" if n else prefix)
        return out

    def language_parameter_names(self) -> set[str]:
        lm = self.language_model()
        ids = {id(p) for p in lm.parameters()}
        head = self.base.get_output_embeddings()
        if head is not None:
            ids |= {id(p) for p in head.parameters()}
        return {n for n, p in self.base.named_parameters() if id(p) in ids}

    @cached_property
    def fingerprint(self) -> str:
        """Content fingerprint of the weights (for cache keys): config + a hash of every tensor's bytes
        sampled at a fixed stride, so that two different checkpoints never share a key. Where the checkpoint
        was loaded from is not content: the config's path and dtype fields are left out, the dtype in use is in."""

        def content(d):
            return {k: content(v) if isinstance(v, dict) else v for k, v in d.items() if k not in _NOT_CONTENT}

        config = json.dumps(content(self.base.config.to_dict()), sort_keys=True, default=str)
        h = hashlib.sha256(f"{config}|{self.dtype}".encode())
        with torch.no_grad():
            for n, p in sorted(self.base.state_dict().items()):
                flat = p.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
                h.update(n.encode())
                h.update(sample.tobytes())
        return h.hexdigest()[:16]

    def prompt(self, question: str, with_image: bool) -> str:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def _inputs(self, questions: list[str], images: list[Image.Image] | None) -> dict:
        prompts = [self.prompt(q, images is not None) for q in questions]
        return self.encode(prompts, images, padding_side="left")

    def encode(self, texts: list[str], images: list[Image.Image] | None, padding_side: str) -> dict:
        """Tokenise ``texts`` (with one image each, or none), padded on ``padding_side``: "left" to
        generate, "right" to teacher-force or score (the side is an argument: the tokenizer is shared)."""
        if images is None:
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side=padding_side)
        else:
            batch = self.processor(
                text=texts, images=images, return_tensors="pt", padding=True, padding_side=padding_side, **self.image_kwargs()
            )
        return self._to_device(dict(batch))

    def reading_key(self) -> tuple:
        """What the processor's output for an input depends on besides the input (memo keys): these weights,
        the device and dtype, the per-call image arguments and the image processor's and tokenizer's settings."""
        image_processor = getattr(self.processor, "image_processor", None)
        settings = json.dumps(image_processor.to_dict() if image_processor is not None else {}, sort_keys=True, default=str)
        return (self.fingerprint, str(self.device), str(self.dtype), json.dumps(self.image_kwargs(), sort_keys=True),
                hashlib.sha256(settings.encode()).hexdigest()[:16], len(self.tokenizer))  # fmt: skip

    def prompt_length(self, prompt: str, image: Image.Image | None) -> int:
        """Tokens of ``prompt`` (with its image's tokens expanded): where an answer starts. It depends on the
        image only through its size (the image's token count), so it is memoised by that: a request's
        teacher-forcing batches asked it once per row (80 processor calls)."""

        def count():
            return int(self.encode([prompt], None if image is None else [image], "right")["input_ids"].shape[1])

        return memo.get("prompt_length", (*self.reading_key(), prompt, None if image is None else image.size), count)

    @scoped
    @torch.no_grad()
    def image_features(self, images, batch_size: int = 64) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Projector output for each image: token-level (list of (T, D), float32 on CPU) and pooled
        z(x) = L2-normalised mean over tokens, (N, D) (METHOD.md, CVF representation)."""
        images = ensure_images(images)
        tokens: list[torch.Tensor] = []
        for i in range(0, len(images), batch_size):
            feats = self.project_images(self.image_inputs(images[i : i + batch_size]))
            tokens += [f.float().cpu() for f in feats]
        return tokens, pool_tokens(tokens)

    @scoped
    @torch.no_grad()
    def generate(self, questions: list[str], images=None, max_new_tokens: int = 16, batch_size: int = 32) -> list[str]:
        """Greedy answers. ``images`` is None (text-only) or one image per question."""
        if images is not None:
            images = ensure_images(images)
            if len(images) != len(questions):
                raise ValueError("generate: one image per question")
        self.model.eval()
        answers = []
        for i in range(0, len(questions), batch_size):
            qs = questions[i : i + batch_size]
            ims = None if images is None else images[i : i + batch_size]
            batch = self._inputs(qs, ims)
            out = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new = out[:, batch["input_ids"].shape[1] :]
            answers += [a.strip() for a in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers

    def ask(self, question: str, image=None, max_new_tokens: int = 16) -> str:
        return self.generate([question], None if image is None else [image], max_new_tokens=max_new_tokens)[0]

    @scoped
    @torch.no_grad()
    def score_answers(self, question: str, answers: list[str], image=None) -> torch.Tensor:
        """Sum of log-probabilities of each answer after the prompt (the multiple-choice variant)."""
        self.model.eval()
        images = None if image is None else ensure_images([image]) * len(answers)
        prompt = self.prompt(question, image is not None)
        texts = [prompt + " " + a + (self.tokenizer.eos_token or "") for a in answers]
        batch = self.encode(texts, images, "right")
        plen = self.prompt_length(prompt, None if images is None else images[0])
        logits = self.model(**batch).logits.float()
        logp = logits[:, :-1].log_softmax(-1)
        target = batch["input_ids"][:, 1:]
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        mask = batch["attention_mask"][:, 1:].clone()
        mask[:, : plen - 1] = 0
        return (tok_lp * mask).sum(-1).cpu()

    @scoped
    @torch.no_grad()
    def text_logits(self, questions: list[str]) -> torch.Tensor:
        """Next-token logits at the end of each text-only prompt (to prove text answers are untouched)."""
        batch = self._inputs(questions, None)
        return self.model(**batch).logits[:, -1].float().cpu()
