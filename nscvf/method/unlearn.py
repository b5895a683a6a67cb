"""One unlearning request, and the chain of requests on one model (continual unlearning).

``UnlearningChain(vlm)`` works on its own copy of the model: the shared base model is never modified.
Each request adds one LoRA adapter (peft) on the visual module, trained by the chosen method
(:mod:`nscvf.method.registry`); for null-space methods every step is followed by A <- A P. After a
request, the protected set of the next one includes the targets forgotten so far (their
post-unlearning features), so earlier targets cannot rebound. ``undo(k)`` and ``reset()`` rebuild the
model from the stored adapter weights.

``nscvf.unlearn(vlm, forget_images, ...)`` is a one-request chain.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from nscvf import world
from nscvf.cache import Cache, image_set_fingerprint
from nscvf.errors import Cancelled, InputError
from nscvf.eval import evaluate, is_unknown, names_in
from nscvf.images import ensure_images
from nscvf.method.config import UnlearnConfig
from nscvf.method.cvf import pooled, retain_drift
from nscvf.method.nullspace import CovarianceCollector, LayerNullSpace, lora_layers, null_space_projector, project_lora_A
from nscvf.method.registry import get_method, method_config
from nscvf.models.base import VisionLanguageModel, padding_right

GENERIC_IDENTITY_QUESTION = "Who is this?"
GENERIC_UNKNOWN = "I don't know."


# ----------------------------------------------------------------------------------------- data


def is_world_model(vlm: VisionLanguageModel) -> bool:
    """True for the embedded model (or anything trained by ``nscvf train-base``)."""
    return getattr(vlm.base.config, "nscvf_world", None) is not None


def probe_questions(vlm) -> list[str]:
    if is_world_model(vlm):
        return ["Who is this?"] + [world.IMAGE_FACT_TEMPLATES[f]["train"][0] for f in world.FACTS]
    return [GENERIC_IDENTITY_QUESTION, "What is this?"]


def infer_target(answers: list[str]) -> str | None:
    """The named character most of the base model's identity answers name, if any."""
    counts: dict[str, int] = {}
    for a in answers:
        for n in names_in(a):
            counts[n] = counts.get(n, 0) + 1
    if not counts:
        return None
    name, n = max(counts.items(), key=lambda kv: kv[1])
    return name if n * 2 >= len(answers) else None


def _named_except(exclude) -> list:
    """The named characters but ``exclude`` (a name, a list of names, or None)."""
    names = [exclude] if isinstance(exclude, str) else list(exclude or [])
    ex = {world.get_character(n).key for n in names if n}
    return [c for c in world.CHARACTERS if c.key not in ex]


def world_retain_images(exclude, per_character: int, per_distractor: int, seed_offset: int = 0) -> list[Image.Image]:
    """Renders of every named character but ``exclude`` (a name or a list of names), and distractors."""
    imgs = [world.render(c, s) for c in _named_except(exclude) for s in world.train_seeds(per_character, 2000 + seed_offset)]
    imgs += [world.render(d, s) for d in world.DISTRACTORS for s in world.train_seeds(per_distractor, 3000 + seed_offset)]
    return imgs


def world_region_images(n: int) -> list[Image.Image]:
    """The target region: renders of training distractors, whom the base model answers as unknown."""
    ds = world.DISTRACTORS
    return [world.render(ds[i % len(ds)], 4000 + i) for i in range(n)]


def world_heldout_retain(exclude, per_character: int = 2) -> list[Image.Image]:
    """Held-out renders of every named character but ``exclude`` (a name or a list of names)."""
    return [world.render(c, s) for c in _named_except(exclude) for s in world.heldout_seeds(per_character, 7000)]


def augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """A new view of an uploaded image: crop, small rotation, flip, brightness (PIL only, any family)."""
    w, h = img.size
    s = rng.uniform(0.8, 1.0)
    cw, ch = int(w * s), int(h * s)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC)
    out = out.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, fillcolor=out.getpixel((0, 0)))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    return Image.eval(out, lambda v, f=rng.uniform(0.9, 1.1): min(255, int(v * f)))


# --------------------------------------------------------------------------------------- result


@dataclass
class UnlearnResult:
    """What one request did and measured. ``to_dict()`` is the report.json payload."""

    step: int
    adapter_name: str
    method: str
    config: dict
    target: str | None
    n_forget: int
    n_retain: int
    probes_before: dict
    probes_after: dict
    eval_before: dict | None
    eval_after: dict | None
    null_space: dict
    retain_drift: dict
    text_identical: bool
    text_logits_identical: bool
    steps_run: int
    stopped_early: bool
    losses: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    embeddings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------- step context


class StepContext:
    """What a method's loss can read on one step: current features (with grad), frozen references."""

    def __init__(self, vlm, forget_inputs, forget_orig_pooled, region, retain_inputs, retain_orig, cfg, rng, answer_data=None):
        self.vlm = vlm
        self._forget_inputs = forget_inputs  # list of per-image processor dicts (augmented views)
        self.forget_orig_pooled = forget_orig_pooled
        self.region = region
        self._retain_inputs = retain_inputs
        self._retain_orig = retain_orig  # list of (T, D) tensors
        self.cfg = cfg
        self.rng = rng
        self.answers = answer_data or {}
        self.forget_ref_logp = self.answers.get("forget_ref_logp")
        self._known = None

    def forget_tokens(self) -> torch.Tensor:
        n = len(self.forget_orig_pooled)
        views = self._forget_inputs
        # One view of each forget image (views are grouped by image).
        per = len(views) // n
        pick = [views[i * per + self.rng.randrange(per)] for i in range(n)]
        return torch.stack(self.vlm.project_images(self.vlm.collate(pick))).float()

    def known_negatives(self) -> torch.Tensor:
        """The target's original features and the retained images' original pooled features."""
        if self._known is None:
            known = torch.stack([F.normalize(t.float().mean(0), dim=-1) for t in self._retain_orig])
            self._known = torch.cat([self.forget_orig_pooled, known.to(self.forget_orig_pooled.device)])
        return self._known

    def retain_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.rng.sample(range(len(self._retain_inputs)), min(self.cfg.retain_batch, len(self._retain_inputs)))
        cur = self.vlm.project_images(self.vlm.collate([self._retain_inputs[i] for i in idx]))
        orig = [self._retain_orig[i].to(cur[0].device) for i in idx]
        return torch.cat([c.float() for c in cur]), torch.cat(orig).float()

    def answer_nll(self, which: str, toward: str = "original", reduction: str = "mean") -> torch.Tensor:
        batch = self.answers[f"{which}_{toward}"]
        out = self.vlm.model(**{k: v for k, v in batch.items() if k != "labels"})
        logits = out.logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none").view(labels.shape)
        mask = (labels != -100).float()
        total = (nll * mask).sum(-1)
        return total if reduction == "sum" else total / mask.sum(-1).clamp_min(1)

    def retain_kl(self) -> torch.Tensor:
        batch = self.answers["retain_original"]
        ref = self.answers["retain_ref_logprobs"]
        out = self.vlm.model(**{k: v for k, v in batch.items() if k != "labels"})
        mask = batch["labels"][:, 1:] != -100
        cur = out.logits[:, :-1].float().log_softmax(-1)[mask]
        return F.kl_div(cur, ref.to(cur.device), log_target=True, reduction="batchmean")


# ------------------------------------------------------------------------------------- chain


@dataclass
class _Step:
    name: str
    config: UnlearnConfig
    state_dict: dict
    target: str | None
    forget_fp: str
    protect_images: list  # post-unlearning protection for later requests (the forget images)
    result: UnlearnResult | None = None


class UnlearningChain:
    """A sequence of unlearning requests on a private copy of ``vlm``."""

    def __init__(self, vlm: VisionLanguageModel, cache: Cache | None = None):
        self.base_vlm = vlm
        self.cache = cache or Cache()
        self.steps: list[_Step] = []
        self._lock = threading.Lock()
        self.vlm = self._rebuild([])

    # ---- state
    @property
    def state_fingerprint(self) -> str:
        h = hashlib.sha256(self.base_vlm.fingerprint.encode())
        for s in self.steps:
            h.update(s.name.encode())
            for k in sorted(s.state_dict):
                h.update(s.state_dict[k].float().numpy().tobytes())
        return h.hexdigest()[:16]

    def _rebuild(self, steps: list[_Step]) -> VisionLanguageModel:
        from peft import get_peft_model, set_peft_model_state_dict

        from nscvf.models import wrap_model

        model = copy.deepcopy(self.base_vlm.base)
        vlm = wrap_model(model, self.base_vlm.processor, self.base_vlm.source)
        if steps:
            for i, s in enumerate(steps):
                lcfg = self._lora_config(vlm, s.config)
                if i == 0:
                    model = get_peft_model(model, lcfg, adapter_name=s.name)
                else:
                    model.add_adapter(s.name, lcfg)
                set_peft_model_state_dict(model, s.state_dict, adapter_name=s.name)
            model.base_model.set_adapter([s.name for s in steps])
            for p in model.parameters():
                p.requires_grad_(False)
            vlm = wrap_model(model, self.base_vlm.processor, self.base_vlm.source)
        vlm.model.eval()
        return vlm

    @staticmethod
    def _lora_config(vlm, cfg: UnlearnConfig):
        from peft import LoraConfig

        targets = vlm.visual_linear_names()
        if cfg.first_layer:
            import re

            def layer_index(n):
                m = re.search(r"\.(?:layers|blocks)\.(\d+)\.", n)
                return None if m is None else int(m.group(1))

            targets = [t for t in targets if layer_index(t) is None or layer_index(t) >= cfg.first_layer]
        if cfg.modules == "projector":
            proj = {n for n, m in vlm.base.named_modules() if m is vlm.projector()}
            targets = [t for t in targets if any(t.startswith(p) for p in proj)]
        return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none", target_modules=targets)

    def undo(self, to_step: int | None = None) -> None:
        """Go back to the state after request ``to_step`` (default: drop the last request); 0 = base."""
        with self._lock:
            k = len(self.steps) - 1 if to_step is None else to_step
            if not 0 <= k <= len(self.steps):
                raise InputError(f"cannot undo to step {k}: the chain has {len(self.steps)} request(s)")
            self.steps = self.steps[:k]
            self.vlm = self._rebuild(self.steps)

    def reset(self) -> None:
        self.undo(0)

    def model_at(self, k: int) -> VisionLanguageModel:
        """A private model in the state after request ``k`` (0 = base); the chain is not touched."""
        if not 0 <= k <= len(self.steps):
            raise InputError(f"no state {k}: the chain has {len(self.steps)} request(s)")
        if k == 0:
            return self.base_vlm
        if k == len(self.steps):
            return self.vlm
        return self._rebuild(self.steps[:k])

    def restore(self, result: UnlearnResult | dict, state_dict: dict, forget_images) -> None:
        """Append a finished request without retraining: its adapter weights (peft state dict), its
        result and its forget images (protected in later requests). Used to replay cached requests."""
        r = result if isinstance(result, UnlearnResult) else UnlearnResult(**result)
        forget = ensure_images(forget_images)
        step = _Step(
            r.adapter_name, UnlearnConfig(**r.config), dict(state_dict), r.target, image_set_fingerprint(forget), forget, r
        )
        with self._lock:
            self.steps.append(step)
            self.vlm = self._rebuild(self.steps)

    @property
    def forgotten_targets(self) -> list[str]:
        """The targets of the requests in the chain, in order (requests without a known target skipped)."""
        return [s.target for s in self.steps if s.target]

    @property
    def results(self) -> list[UnlearnResult]:
        return [s.result for s in self.steps if s.result is not None]

    # ---- save / load
    def save(self, out_dir: str | Path) -> Path:
        """Write each adapter (loadable with ``PeftModel.from_pretrained(model, out_dir / name)``),
        chain.json and report.json."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create {out}: {e.strerror}") from None
        if self.steps:
            self.vlm.model.save_pretrained(out, selected_adapters=[s.name for s in self.steps])
            # peft puts the first adapter at the top level when it is called "default"; ours never are.
        meta = {
            "base_model": self.base_vlm.source,
            "base_fingerprint": self.base_vlm.fingerprint,
            "steps": [
                {"name": s.name, "target": s.target, "config": s.config.to_dict(), "forget_fp": s.forget_fp} for s in self.steps
            ],
        }
        (out / "chain.json").write_text(json.dumps(meta, indent=1))
        report = {"chain": meta, "requests": [s.result.to_dict() for s in self.steps if s.result is not None]}
        (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        return out

    @classmethod
    def load(cls, vlm: VisionLanguageModel, adapter_dir: str | Path, cache: Cache | None = None) -> UnlearningChain:
        from peft.utils import load_peft_weights

        d = Path(adapter_dir)
        meta_path = d / "chain.json"
        if not meta_path.exists():
            raise InputError(f"{d}: not an unlearning result folder (no chain.json); use the --out folder of `nscvf forget`")
        meta = json.loads(meta_path.read_text())
        chain = cls(vlm, cache)
        if meta.get("base_fingerprint") not in (None, vlm.fingerprint):
            raise InputError(f"{d}: these adapters were trained on another model ({meta.get('base_model')}); load that model")
        steps = []
        for s in meta["steps"]:
            sd = load_peft_weights(str(d / s["name"]), device="cpu")
            steps.append(_Step(s["name"], UnlearnConfig(**s["config"]), sd, s.get("target"), s.get("forget_fp", ""), []))
        report = d / "report.json"
        if report.exists():
            reqs = json.loads(report.read_text()).get("requests", [])
            for st, r in zip(steps, reqs):
                st.result = UnlearnResult(**r)
        # Earlier targets stay protected in later requests.
        for st in steps:
            if st.target:
                st.protect_images = [world.render(world.get_character(st.target), s) for s in world.train_seeds(8, 6000)]
        chain.steps = steps
        chain.vlm = chain._rebuild(steps)
        return chain

    # ---- one request
    def forget(
        self,
        forget_images,
        retain_images=None,
        config: UnlearnConfig | None = None,
        progress=None,
        cancel: threading.Event | None = None,
        target: str | None = None,
        region_images=None,
    ) -> UnlearnResult:
        with self._lock:
            return self._forget(forget_images, retain_images, config or UnlearnConfig(), progress, cancel, target, region_images)

    def _forget(self, forget_images, retain_images, cfg, progress, cancel, target, region_images) -> UnlearnResult:
        from peft import get_peft_model, get_peft_model_state_dict

        cfg = method_config(copy.deepcopy(cfg).validate())
        method = get_method(cfg.method, cfg)
        timings: dict[str, float] = {}
        cache_info: dict[str, str] = {}
        t_start = time.time()
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)

        def stage(name, done=0, total=1):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled; the model is unchanged")
            if progress is not None:
                progress(name, done, total)

        def timed(name):
            t = time.time()
            return lambda: timings.__setitem__(name, round(timings.get(name, 0) + time.time() - t, 3))

        # ---- reading images
        stage("reading images")
        done = timed("read")
        if forget_images is None or len(forget_images) == 0:
            raise InputError("no forget images: give at least one image of the concept to forget")
        if len(forget_images) > cfg.max_forget_images:
            raise InputError(f"{len(forget_images)} forget images is more than max_forget_images={cfg.max_forget_images}")
        forget = ensure_images(forget_images)
        vlm = self.vlm
        world_model = is_world_model(vlm)
        done()

        # ---- base answers (the chain's current state, before this request)
        stage("base answers")
        done = timed("base_answers")
        qs = probe_questions(vlm)
        state_fp = self.state_fingerprint
        probes_before = self._probes(vlm, forget, qs, state_fp, cache_info)
        if target is None and world_model:
            target = infer_target(probes_before["forget"]["answers"][qs[0]])
        if target is not None:
            target = world.get_character(target).name if world_model else target
        done()

        # ---- retained and region images
        if retain_images is None:
            if not world_model:
                raise InputError("retain images are required for this model: pass images of what must be kept")
            # Earlier targets are not retained: they are protected in their forgotten state instead.
            retain = world_retain_images([target, *self.forgotten_targets], cfg.retain_per_character, cfg.retain_per_distractor)
        else:
            retain = ensure_images(retain_images)
            if not retain:
                raise InputError("the retain set is empty: pass images of what must be kept, or none for the default")
        if region_images is None:
            if world_model:
                region_imgs = world_region_images(cfg.region_size)
            else:
                from nscvf.method.anchors import anchor_images

                region_imgs = anchor_images()
        else:
            region_imgs = ensure_images(region_images)

        # ---- before evaluation
        eval_before = None
        if world_model and target is not None and cfg.evaluate != "none":
            stage("evaluating (before)")
            done = timed("eval_before")
            eval_before = self._evaluate(vlm, target, cfg.evaluate, state_fp, cache_info)
            done()

        # ---- wrap with a new LoRA adapter
        name = f"request_{len(self.steps) + 1}"
        lcfg = self._lora_config(vlm, cfg)
        model = vlm.model
        if hasattr(model, "peft_config"):
            model.add_adapter(name, lcfg)
            model.base_model.set_adapter([s.name for s in self.steps] + [name])
        else:
            model = get_peft_model(model, lcfg, adapter_name=name)
        for n, p in model.named_parameters():
            p.requires_grad_(f".{name}." in n and "lora_" in n)
        from nscvf.models import wrap_model

        work = wrap_model(model, vlm.processor, vlm.source)
        language = work.language_parameter_names()
        trainable = [n for n, p in model.base_model.model.named_parameters() if p.requires_grad]
        assert trainable and not any(n in language for n in trainable), "a language-model parameter is trainable"
        layers = lora_layers(model, name)
        try:
            result = self._train(
                work,
                model,
                name,
                layers,
                method,
                cfg,
                forget,
                retain,
                region_imgs,
                target,
                qs,
                probes_before,
                eval_before,
                state_fp,
                stage,
                timed,
                timings,
                cache_info,
                rng,
            )
        except BaseException:
            # Never lose work: a failed or cancelled request leaves the chain as it was.
            self.vlm = self._rebuild(self.steps)
            raise
        sd = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}
        step = _Step(name, cfg, sd, target, image_set_fingerprint(forget), forget, result)
        self.steps.append(step)
        self.vlm = work
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        result.timings = timings | {"total": round(time.time() - t_start, 3)}
        result.cache = cache_info
        result.history = [self._history_row(s) for s in self.steps]
        return result

    def _history_row(self, s: _Step) -> dict:
        r = s.result
        summ = (r.eval_after or {}).get("summary", {}) if r else {}
        return {
            "step": self.steps.index(s) + 1,
            "target": s.target,
            "method": s.config.method,
            "target_name_acc": summ.get("target_name_acc_heldout"),
            "retain_acc": summ.get("retain_acc"),
        }

    def _probes(self, vlm, forget, qs, state_fp, cache_info) -> dict:
        """Answers on the forget images (every probe question), a few retained images and text questions."""
        key = ("probes", state_fp, image_set_fingerprint(forget), tuple(qs))
        hit = self.cache.get(key)
        if hit is not None:
            cache_info["base_answers"] = "reused"
            return hit
        cache_info["base_answers"] = "computed"
        out = self._answer_probes(vlm, forget, qs)
        self.cache.set(key, out)
        return out

    def _answer_probes(self, vlm, forget, qs) -> dict:
        flat_q = [q for _ in forget for q in qs]
        flat_i = [im for im in forget for _ in qs]
        ans = vlm.generate(flat_q, flat_i)
        forget_answers = {q: [ans[i * len(qs) + j] for i in range(len(forget))] for j, q in enumerate(qs)}
        out = {"forget": {"questions": qs, "answers": forget_answers}}
        if is_world_model(vlm):
            text_qs = [qa.question for c in world.CHARACTERS for qa in world.text_questions(c)[::3]]
            out["text"] = {"questions": text_qs, "answers": vlm.generate(text_qs, None)}
        return out

    def _evaluate(self, vlm, target, mode, state_fp, cache_info) -> dict:
        key = ("eval", state_fp, target, mode)
        hit = self.cache.get(key)
        if hit is not None:
            cache_info["eval_before"] = "reused"
            return hit
        cache_info["eval_before"] = "computed"
        res = evaluate(vlm, target, renders=2 if mode == "quick" else 3, mc=mode == "full")
        self.cache.set(key, res)
        return res

    def _null_space(self, work, layers, protect, cfg, state_fp, cache_info, stage) -> dict[str, LayerNullSpace]:
        key = ("cov", state_fp, image_set_fingerprint(protect), tuple(sorted(layers)))
        hit = self.cache.get(key)
        if hit is not None:
            cache_info["covariance"] = "reused"
            covs = {n: (torch.from_numpy(s), c) for n, (s, c) in hit.items()}
        else:
            cache_info["covariance"] = "computed"
            inputs = [work.image_inputs([im]) for im in protect]
            with torch.no_grad(), CovarianceCollector(layers) as col:
                for i in range(0, len(inputs), 64):
                    stage("null space", i, len(inputs))
                    work.project_images(work.collate(inputs[i : i + 64]))
            covs = col.covariances()
            self.cache.set(key, {n: (s.numpy(), c) for n, (s, c) in covs.items()})
        return {n: null_space_projector(s, c, cfg.energy, cfg.relative_threshold) for n, (s, c) in covs.items()}

    def _train(
        self,
        work,
        model,
        name,
        layers,
        method,
        cfg,
        forget,
        retain,
        region_imgs,
        target,
        qs,
        probes_before,
        eval_before,
        state_fp,
        stage,
        timed,
        timings,
        cache_info,
        rng,
    ) -> UnlearnResult:
        # ---- frozen references: the chain's state before this request (the original model at first)
        done = timed("references")
        before = self._state_before(model, name)
        views = [
            forget[i] if v == 0 or not cfg.augment else augment(forget[i], rng) for i in range(len(forget)) for v in range(4)
        ]
        forget_inputs = [work.image_inputs([im]) for im in views]
        retain_inputs = [work.image_inputs([im]) for im in retain]
        with torch.no_grad(), before():
            orig_forget_tokens = work.project_images(work.collate([work.image_inputs([im]) for im in forget]))
            forget_orig_pooled = torch.stack([pooled(t[None].float())[0] for t in orig_forget_tokens])
            retain_orig = []
            for i in range(0, len(retain_inputs), 64):
                retain_orig += [t.float() for t in work.project_images(work.collate(retain_inputs[i : i + 64]))]
            _, region = work.image_features(region_imgs)
        region = region.to(work.device)
        forget_orig_pooled = forget_orig_pooled.to(work.device)
        answer_data = (
            self._answer_data(work, before, forget, retain, qs, probes_before, rng)
            if method.needs_answers or cfg.answer_weight > 0
            else None
        )
        done()

        # ---- null space of the protected inputs (retained + earlier targets)
        spaces: dict[str, LayerNullSpace] = {}
        use_ns = method.null_space and cfg.null_space
        if use_ns:
            stage("null space")
            done = timed("null_space")
            protect = list(retain)
            if is_world_model(work):
                tk = world.get_character(target).key if target else None
                extra = [
                    world.render(c, s)
                    for c in world.CHARACTERS
                    if c.key != tk
                    for s in world.train_seeds(cfg.protect_per_character, 5000)
                ]
                protect += extra
            for s in self.steps:
                protect += list(s.protect_images)
            spaces = self._null_space(work, layers, protect, cfg, state_fp, cache_info, stage)
            empty = [n for n, s in spaces.items() if s.kept_rank == 0]
            if len(empty) == len(spaces):
                raise InputError(
                    f"the retain set leaves no null space in any layer at energy={cfg.energy:g}: "
                    "raise the energy threshold (e.g. 1e-3) or use fewer retain images"
                )
            project_lora_A(layers, spaces, name)
            done()

        # ---- optimise
        ctx = StepContext(work, forget_inputs, forget_orig_pooled, region, retain_inputs, retain_orig, cfg, rng, answer_data)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        losses, stopped_early, steps_run = [], False, 0
        # The stop check asks about the forget images and fixed augmented views of them: stopping when
        # only the given images say "unknown" left new renders of the target named (measured).
        view_rng = random.Random(cfg.seed + 1)
        check_images = list(forget) + [augment(im, view_rng) for im in forget for _ in range(cfg.check_views)]
        t_opt = time.time()
        t_proj = 0.0
        model.train()
        for k in range(cfg.steps):
            stage(f"step {k + 1}/{cfg.steps}", k, cfg.steps)
            loss, logs = method.loss(ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if use_ns:
                tp = time.time()
                project_lora_A(layers, spaces, name)
                t_proj += time.time() - tp
            steps_run = k + 1
            losses.append({"step": steps_run, "loss": round(loss.item(), 5), **{a: round(b, 5) for a, b in logs.items()}})
            if (
                cfg.stop_when_forgotten
                and steps_run >= cfg.min_steps
                and steps_run % cfg.check_every == 0
                and steps_run < cfg.steps
            ):
                model.eval()
                if self._forgotten(work, check_images, qs, region, forget_orig_pooled):
                    stopped_early = True
                    break
                model.train()
        model.eval()
        timings["optimise"] = round(time.time() - t_opt, 3)
        timings["projection"] = round(t_proj, 4)
        timings["seconds_per_step"] = round((time.time() - t_opt) / max(1, steps_run), 4)

        # ---- after
        stage("evaluating")
        done = timed("eval_after")
        probes_after = self._answer_probes(work, forget, qs)
        stage("evaluating")
        eval_after = (
            evaluate(
                work,
                target,
                renders=2 if cfg.evaluate == "quick" else 3,
                mc=cfg.evaluate == "full",
                progress=lambda d, n: stage("evaluating", d, n),
            )
            if eval_before is not None
            else None
        )
        text_identical = probes_after.get("text", {}).get("answers") == probes_before.get("text", {}).get("answers")
        text_qs = probes_before.get("text", {}).get("questions") or ["What is this?"]
        with torch.no_grad():
            after_logits = work.text_logits(text_qs)
            with model.disable_adapter():
                base_logits = work.text_logits(text_qs)
        logits_identical = bool(torch.equal(after_logits, base_logits))
        # Drift of what is retained (earlier targets are forgotten on purpose), against the original model.
        held = world_heldout_retain([target, *self.forgotten_targets]) if is_world_model(work) else retain[:64]
        tok_after, _ = work.image_features(held)
        with model.disable_adapter():
            tok_orig, _ = work.image_features(held)
        drift = retain_drift(tok_after, tok_orig) | {
            "images": "held-out retain renders" if is_world_model(work) else "retain images"
        }
        stage("evaluating")
        embeddings = self._embeddings(work, model, forget, retain, region_imgs, target)
        done()
        ns_stats = {n: s.stats() for n, s in spaces.items()}
        ns_summary = {}
        if spaces:
            ns_summary = {
                "energy": cfg.energy,
                "relative_threshold": cfg.relative_threshold,
                "layers": len(spaces),
                "mean_kept_rank": round(sum(s.kept_rank for s in spaces.values()) / len(spaces), 2),
                "mean_kept_fraction": round(sum(s.kept_rank / s.dim for s in spaces.values()) / len(spaces), 4),
                "max_energy_in_null_space": max(s.discarded_energy for s in spaces.values()),
            }
        return UnlearnResult(
            step=len(self.steps) + 1,
            adapter_name=name,
            method=cfg.method,
            config=cfg.to_dict(),
            target=target,
            n_forget=len(forget),
            n_retain=len(retain),
            probes_before=probes_before,
            probes_after=probes_after,
            eval_before=eval_before,
            eval_after=eval_after,
            null_space={"summary": ns_summary, "layers": ns_stats}
            if spaces
            else {"summary": {"constrained": False}, "layers": {}},
            retain_drift=drift,
            text_identical=bool(text_identical),
            text_logits_identical=logits_identical,
            steps_run=steps_run,
            stopped_early=stopped_early,
            losses=losses,
            embeddings=embeddings,
        )

    def _state_before(self, model, name):
        """A context manager in which ``model`` is the chain's state before this request: the original
        model for the first request, the earlier requests' adapters for later ones (the references of
        the loss: continual requests keep what the chain is now, and earlier targets stay forgotten)."""
        import contextlib

        prev = [s.name for s in self.steps]
        if not prev:
            return model.disable_adapter

        @contextlib.contextmanager
        def ctx():
            grads = {n: p.requires_grad for n, p in model.named_parameters()}
            model.base_model.set_adapter(prev)
            try:
                yield
            finally:
                model.base_model.set_adapter(prev + [name])
                for n, p in model.named_parameters():  # peft's set_adapter marks active adapters trainable
                    p.requires_grad_(grads[n])

        return ctx

    @staticmethod
    def _embeddings(work, model, forget, retain, region_imgs, target) -> dict:
        """Pooled features z(x) of the forget images, retained images and the unknown region, from the
        original model (before) and the unlearned one (after): the data of the embedding plots."""
        if is_world_model(work):
            tk = world.get_character(target).key if target else None
            others = [c for c in world.CHARACTERS if c.key != tk]
            keep = [world.render(c, s) for c in others for s in world.heldout_seeds(3, 8000)]
            keep_labels = [c.name for c in others for _ in range(3)]
        else:
            keep = retain[:48]
            keep_labels = [f"retain #{i + 1}" for i in range(len(keep))]
        unknown = region_imgs[:24]
        images = forget + keep + unknown
        groups = ["forget"] * len(forget) + ["retain"] * len(keep) + ["unknown"] * len(unknown)
        labels = [f"forget #{i + 1}" for i in range(len(forget))] + keep_labels + ["unknown region"] * len(unknown)
        _, after = work.image_features(images)
        with model.disable_adapter():
            _, before = work.image_features(images)
        return {
            "groups": groups,
            "labels": labels,
            "before": [[round(v, 5) for v in row] for row in before.tolist()],
            "after": [[round(v, 5) for v in row] for row in after.tolist()],
        }

    def _forgotten(self, work, images, qs, region, forget_orig_pooled) -> bool:
        if is_world_model(work):
            answers = work.generate([qs[0]] * len(images), images)
            return all(is_unknown(a) for a in answers)
        _, z = work.image_features(images)
        z = z.to(region.device)
        to_region = (z @ region.T).max(-1).values
        to_orig = (z @ forget_orig_pooled.T).max(-1).values
        return bool((to_region > to_orig).all())

    def _answer_data(self, work, before, forget, retain, qs, probes_before, rng) -> dict:
        """Teacher-forcing batches for answer-level losses: the model's own answers (original) and the
        unknown answer, on forget images; the model's own identity answers on a sample of retain images."""
        unknown = world.UNKNOWN_ANSWER if is_world_model(work) else GENERIC_UNKNOWN
        fa = probes_before["forget"]["answers"]
        f_items = [(forget[i], q, fa[q][i]) for i in range(len(forget)) for q in qs]
        r_imgs = rng.sample(retain, min(16, len(retain)))
        r_ans = work.generate([qs[0]] * len(r_imgs), r_imgs)
        data = {
            "forget_original": self._tf_batch(work, f_items),
            "forget_unknown": self._tf_batch(work, [(im, q, unknown) for im, q, _ in f_items]),
            "retain_original": self._tf_batch(work, [(im, qs[0], a) for im, a in zip(r_imgs, r_ans)]),
        }
        with torch.no_grad(), before():
            ctx = StepContext(work, [], torch.empty(0), None, [], [], None, rng, data)
            data["forget_ref_logp"] = -ctx.answer_nll("forget", "original", reduction="sum").detach()
            b = data["retain_original"]
            out = work.model(**{k: v for k, v in b.items() if k != "labels"})
            mask = b["labels"][:, 1:] != -100
            data["retain_ref_logprobs"] = out.logits[:, :-1].float().log_softmax(-1)[mask].detach()
        return data

    @staticmethod
    def _tf_batch(work, items) -> dict:
        tok = work.tokenizer
        prompts = [work.prompt(q, True) for _, q, _ in items]
        texts = [p + " " + a + (tok.eos_token or "") for p, (_, _, a) in zip(prompts, items)]
        with padding_right(tok):
            batch = work.processor(text=texts, images=[im for im, _, _ in items], return_tensors="pt", padding=True)
            plens = [
                len(work.processor(text=[p], images=[im], return_tensors="pt")["input_ids"][0])
                for p, (im, _, _) in zip(prompts, items)
            ]
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        for r, pl in enumerate(plens):
            labels[r, :pl] = -100
        batch = dict(batch)
        batch["labels"] = labels
        return work._to_device(batch)


def unlearn(
    vlm: VisionLanguageModel,
    forget_images,
    retain_images=None,
    config: UnlearnConfig | None = None,
    progress=None,
    cancel: threading.Event | None = None,
    target: str | None = None,
    cache: Cache | None = None,
) -> tuple[UnlearningChain, UnlearnResult]:
    """One request on a fresh chain over ``vlm`` (which is not modified). Returns (chain, result)."""
    chain = UnlearningChain(vlm, cache)
    return chain, chain.forget(forget_images, retain_images, config, progress, cancel, target)
