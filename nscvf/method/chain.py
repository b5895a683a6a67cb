"""The chain of unlearning requests on one model (continual unlearning), as adapter states.

``UnlearningChain(vlm)`` never copies the model: every chain over the same weights shares one
:class:`~nscvf.method.shared.SharedBase`, and a chain is its requests' LoRA adapters (named peft adapters
on the shared model, plus their state dicts on the CPU) and results. ``chain.vlm`` answers with exactly the
chain's adapters active; ``undo``/``reset`` delete adapters; ``restore`` adds one from a state dict. After a
request, later requests protect its target in its forgotten state (the forget images' post-unlearning
inputs join the null space's protected set), so earlier targets cannot rebound.

``nscvf.unlearn(vlm, forget_images, ...)`` is a one-request chain.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import weakref
from pathlib import Path

from nscvf.cache import Cache, image_set_fingerprint
from nscvf.errors import InputError
from nscvf.images import ensure_images
from nscvf.method import photo_domain  # noqa: F401  (registers the photo model's Domain)
from nscvf.method.archive import ADAPTER_FILE, read_chain
from nscvf.method.archive_schema import step_record
from nscvf.method.config import UnlearnConfig
from nscvf.method.domain import Domain, domain_for
from nscvf.method.export import export_chain
from nscvf.method.lora import lora_config
from nscvf.method.probes import cached_evaluation
from nscvf.method.request import ChainSnapshot, Request, run_request
from nscvf.method.result import ChainStep, UnlearnResult
from nscvf.method.shared import SharedBase, release
from nscvf.method.teach import TeachConfig, run_teach

_CHAIN_IDS = itertools.count(1)


class UnlearningChain:
    """A sequence of unlearning requests over the shared base of ``vlm`` (which is never modified)."""

    def __init__(self, vlm, cache: Cache | None = None, domain: Domain | None = None):
        self.shared = SharedBase.of(vlm)
        self.base_vlm = self.shared.base_vlm
        self.cache = cache or Cache()
        self.domain = domain or domain_for(self.base_vlm)  # e.g. WorldDomain(region_size=...) for small sets
        self.steps: list[ChainStep] = []
        self.id = next(_CHAIN_IDS)
        self._lock = threading.RLock()  # one operation on this chain at a time
        self._live: list[str] = []  # adapters this chain owns in the shared model (freed with the chain)
        self._finalizer = weakref.finalize(self, release, self.shared, self._live)
        self.vlm = self.shared.base_vlm

    def __len__(self) -> int:
        return len(self.steps)

    # ------------------------------------------------------------------ state

    @property
    def state_fingerprint(self) -> str:
        """Content fingerprint of the chain's state (the base's fingerprint and every adapter's weights)."""
        return self.fingerprint_at(len(self.steps))

    def fingerprint_at(self, k: int) -> str:
        """Content fingerprint of the state after request ``k`` (0: the base model)."""
        h = hashlib.sha256(self.shared.fingerprint.encode())
        for s in self.steps[:k]:
            h.update(s.name.encode())
            for k in sorted(s.adapter_state):
                h.update(s.adapter_state[k].float().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def forgotten_targets(self) -> list[str]:
        """The targets of the forget requests in the chain, in order (requests without a known target skipped)."""
        return [s.target for s in self.steps if s.target and s.kind == "forget"]

    @property
    def results(self) -> list[UnlearnResult]:
        return [s.result for s in self.steps if s.result is not None]

    def adapter_state(self, k: int = -1) -> dict:
        """The peft state dict (CPU tensors) of request ``k`` (1-based; -1: the last)."""
        if not self.steps or not (k == -1 or 1 <= k <= len(self.steps)):
            raise InputError(f"no request {k}: the chain has {len(self.steps)} request(s)")
        return self.steps[k if k == -1 else k - 1].adapter_state

    def _set_steps(self, steps: list[ChainStep]) -> None:
        kept = {id(s) for s in steps}
        gone = [s.adapter for s in self.steps if id(s) not in kept]
        self.steps = steps
        self.vlm = self._view(len(steps))
        self.shared.delete_adapters(gone)
        self._live[:] = [s.adapter for s in steps]

    def model_at(self, k: int):
        """The model in the state after request ``k`` (0 = base): a view on the shared weights, valid while
        the chain still holds those requests (the chain is not touched)."""
        if not 0 <= k <= len(self.steps):
            raise InputError(f"no state {k}: the chain has {len(self.steps)} request(s)")
        return self.vlm if k == len(self.steps) else self._view(k)

    def _view(self, k: int):
        view = self.shared.view([s.adapter for s in self.steps[:k]])
        if k:
            view.chain = self  # a view keeps its chain (and so its adapters) alive
        return view

    def evaluate(self, target: str, mode: str = "quick", k: int | None = None, progress=None) -> dict:
        """:func:`nscvf.eval.evaluate` of the state after request ``k`` (default: now) about ``target``,
        cached under the same key a request uses for its "before" evaluation."""
        k = len(self.steps) if k is None else k
        if mode not in ("quick", "full"):
            raise InputError(f"evaluation mode {mode!r} is not valid; choose quick or full")
        earlier = [s.target for s in self.steps[:k]]
        return cached_evaluation(self.cache, self.fingerprint_at(k), self.model_at(k), target, mode, earlier, progress)[0]

    def undo(self, to_step: int | None = None) -> None:
        """Go back to the state after request ``to_step`` (default: drop the last request); 0 = base."""
        with self._lock:
            k = len(self.steps) - 1 if to_step is None else to_step
            if not 0 <= k <= len(self.steps):
                raise InputError(f"cannot undo to step {k}: the chain has {len(self.steps)} request(s)")
            self._set_steps(self.steps[:k])

    def reset(self) -> None:
        self.undo(0)

    def close(self) -> None:
        """Free this chain's adapters in the shared model (also done when the chain is garbage-collected)."""
        with self._lock:
            self._set_steps([])

    def _add(self, name: str, config, state: dict, target, forget_fp: str, protect, result, kind: str = "forget") -> None:
        from peft import set_peft_model_state_dict  # peft: heavy, only when an adapter is added

        adapter = self.shared.new_name(name)
        self.shared.add_adapter(adapter, lora_config(self.base_vlm, config))
        with self.shared.lock:
            set_peft_model_state_dict(self.shared.peft, state, adapter_name=adapter)
        step = ChainStep(name, adapter, config, dict(state), target, forget_fp, list(protect), result, kind)
        self._set_steps([*self.steps, step])

    def restore(self, result: UnlearnResult | dict, state_dict: dict, forget_images) -> None:
        """Append a finished request without retraining: its adapter weights (peft state dict), its result
        and its forget images (protected in later requests). Used to replay cached requests."""
        r = result if isinstance(result, UnlearnResult) else UnlearnResult(**result)
        forget = ensure_images(forget_images)
        with self._lock:
            config = _config_of(r.kind, r.config)
            self._add(r.adapter_name, config, state_dict, r.target, image_set_fingerprint(forget), forget, r, r.kind)

    # ------------------------------------------------------------------ one request

    def snapshot(self) -> ChainSnapshot:
        return ChainSnapshot(
            shared=self.shared,
            domain=self.domain,
            cache=self.cache,
            adapters=tuple(s.adapter for s in self.steps),
            forgotten=self.forgotten_targets,
            protected=[(s.target, s.protect_images) for s in self.steps],
            taught={
                s.target: (tuple(p.adapter for p in self.steps[:i]), s.protect_images)
                for i, s in enumerate(self.steps)
                if s.kind == "teach"
            },
            fingerprint=self.state_fingerprint,
            index=len(self.steps) + 1,
        )

    def forget(
        self, forget_images, retain_images=None, config: UnlearnConfig | None = None, progress=None, cancel=None,
        target: str | None = None, region_images=None, stop=None,
    ) -> UnlearnResult:  # fmt: skip
        """Forget the concept in ``forget_images`` (one request; see :mod:`nscvf.method.request`). A failed
        or cancelled request leaves the chain as it was; ``stop`` (an Event, e.g. set at a time limit) ends
        training at the next step and keeps what it learned as a request marked ``partial``."""
        request = Request(forget_images, retain_images, config or UnlearnConfig(), target, region_images)
        with self._lock:
            result, state, adapter, forget = run_request(self.snapshot(), request, progress, cancel, stop)
            step = ChainStep(result.adapter_name, adapter, UnlearnConfig.from_dict(result.config), state, result.target,
                             image_set_fingerprint(forget), forget, result)  # fmt: skip
            self._set_steps([*self.steps, step])
            result.history = [self._history_row(i + 1, s) for i, s in enumerate(self.steps)]
            return result

    def teach(self, images, name: str, facts: dict | None = None, config=None, progress=None, cancel=None) -> UnlearnResult:
        """Teach the model a new concept from ``images`` (>= 3) under ``name`` (and optional ``facts``,
        e.g. {"town": "Paris"}): one more adapter, visual and language LoRA (see :mod:`nscvf.method.teach`).
        The taught state is where later requests start; ``forget`` then works on the concept by its name."""
        cfg = config or TeachConfig()
        with self._lock:
            result, state, adapter, imgs = run_teach(self, images, name, facts, cfg, progress, cancel)
            step = ChainStep(result.adapter_name, adapter, cfg, state, result.target,
                             image_set_fingerprint(imgs), imgs, result, kind="teach")  # fmt: skip
            self._set_steps([*self.steps, step])
            result.history = [self._history_row(i + 1, s) for i, s in enumerate(self.steps)]
            return result

    @property
    def taught(self) -> list[str]:
        """Concepts taught to this chain (by :meth:`teach`), in order."""
        return [s.target for s in self.steps if s.kind == "teach"]

    @staticmethod
    def _history_row(k: int, s: ChainStep) -> dict:
        summ = ((s.result.eval_after or {}) if s.result else {}).get("summary", {})
        return {
            "step": k,
            "target": s.target,
            "method": s.config.method,
            "target_name_acc": summ.get("target_name_acc_heldout"),
            "retain_acc": summ.get("retain_acc"),
        }

    # ------------------------------------------------------------------ save / load

    def save(self, out_dir: str | Path) -> Path:
        """Write each adapter as a peft folder (``PeftModel.from_pretrained(model, out_dir / name)`` loads
        it), its protected images, chain.json and report.json."""
        from safetensors.torch import save_file  # safetensors: only when a chain is saved

        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create {out}: {e.strerror}") from None
        for s in self.steps:
            d = out / s.name
            cfg = lora_config(self.base_vlm, s.config)
            cfg.base_model_name_or_path = self.shared.source
            cfg.save_pretrained(str(d))
            save_file({k: v.contiguous() for k, v in s.adapter_state.items()}, str(d / ADAPTER_FILE))
            (d / "protect").mkdir(exist_ok=True)
            for old in (d / "protect").glob("*.png"):  # an earlier save's images (a longer chain's) are not this step's
                old.unlink()
            for i, im in enumerate(s.protect_images):
                im.save(d / "protect" / f"{i:03d}.png")
        meta = {
            "base_model": self.shared.source,
            "base_fingerprint": self.shared.fingerprint,
            "steps": [step_record(s) for s in self.steps],
        }
        (out / "chain.json").write_text(json.dumps(meta, indent=1))
        report = {"chain": meta, "requests": [s.result.to_dict() for s in self.steps if s.result is not None]}
        (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        return out

    def export(self, path: str | Path) -> Path:
        """The chain as one zip file: adapters, protected images, records and a model card (README.md)."""
        return export_chain(self, path)

    @classmethod
    def load(cls, vlm, adapter_dir: str | Path, cache: Cache | None = None) -> UnlearningChain:
        """A chain in the state saved in ``adapter_dir`` (a folder by :meth:`save` or a zip by :meth:`export`),
        on ``vlm``'s shared base. Nothing in the file is trusted (:mod:`nscvf.method.archive` checks it all
        first); a chain made for another base model, or anything save/export would not write, is refused."""
        saved = read_chain(vlm, adapter_dir)
        chain = cls(vlm, cache)
        try:
            for s in saved.steps:
                chain._add(s.name, s.config, s.state, s.target, s.forget_fp, s.protect, s.result, s.kind)
        except BaseException:
            chain.close()
            raise
        return chain


def _config_of(kind: str, d: dict):
    """The settings object of a request of ``kind`` from its dict."""
    if kind == "teach":
        return TeachConfig(**d)
    return UnlearnConfig.from_dict(d)


def unlearn(vlm, forget_images, retain_images=None, config: UnlearnConfig | None = None, progress=None, cancel=None,
            target: str | None = None, cache: Cache | None = None) -> tuple[UnlearningChain, UnlearnResult]:  # fmt: skip
    """One request on a fresh chain over ``vlm`` (which is not modified). Returns (chain, result)."""
    chain = UnlearningChain(vlm, cache)
    return chain, chain.forget(forget_images, retain_images, config, progress, cancel, target)
