"""One base model per process; every chain's requests are named peft adapters on it.

peft keeps any number of named LoRA adapters on one set of base weights and switches which are active
(``set_adapter``), so a chain (an app session, a CLI run, a benchmark method) costs its adapters, not a
copy of the model. :class:`SharedBase` owns the peft model and one re-entrant lock; a *view* is a
:class:`~nscvf.models.base.VisionLanguageModel` over the shared weights whose every public call runs with
exactly its adapters active (none for the base view). Base weights are never trained.

Switching happens under the lock, per call: a training step, one batched ``generate``, one feature pass.
Two sessions therefore interleave at call granularity and never see each other's adapters.
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
import weakref
from contextlib import contextmanager

import torch

_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # transformers model -> SharedBase
_REGISTRY_LOCK = threading.Lock()


def cpu_threads(vlm) -> int | None:
    """The torch threads of every call on ``vlm``'s weights on the CPU: ``$NSCVF_CPU_THREADS`` where set (0:
    torch's own count), else its domain's ``cpu_threads`` (the embedded model: 1); None (torch's own) on an
    accelerator or where neither names one."""
    from nscvf.method.domain import domain_for  # the domain module imports the world: only when a base is shared

    if vlm.device.type != "cpu":
        return None
    env = os.environ.get("NSCVF_CPU_THREADS", "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"NSCVF_CPU_THREADS={env!r}: a whole number of threads (0: torch's own count)")
        return int(env) or None
    return domain_for(vlm).cpu_threads


class StaleAdapterError(RuntimeError):
    """A view names an adapter its chain has since undone or released."""


class SharedBase:
    """The process's one copy of a base model, with the adapters of every chain on it."""

    def __init__(self, vlm):
        self.model = vlm.base  # the transformers model (LoRA layers are injected into it in place)
        self.processor = vlm.processor
        self.source = vlm.source
        self.fingerprint = vlm.fingerprint  # before any adapter is injected: the base's content
        self.lock = threading.RLock()
        self.peft = None  # the PeftModel, once the first adapter exists
        self._active: tuple[str, ...] | None = ()
        self._mixed = True  # whether a submodule's train/eval mode may differ from the model's (see _mode)
        self._depth = 0  # how many `using` blocks the lock's holder is inside (see using)
        self._ids = itertools.count(1)
        self._doomed: list[str] = []  # adapters of garbage-collected chains, deleted at the next safe point (_reap)
        self.threads = cpu_threads(vlm)
        if vlm.model is vlm.base:  # the caller's own handle becomes the base view
            self.base_vlm = vlm
            vlm.adapters = ()
            vlm._scope = lambda: self.using(())
        else:
            self.base_vlm = self._wrap(self.model, ())

    @classmethod
    def of(cls, vlm) -> SharedBase:
        """The shared base of ``vlm``'s weights (made on first use; ``vlm`` may be a base or a view)."""
        with _REGISTRY_LOCK:
            shared = _SHARED.get(vlm.base)
            if shared is None:
                shared = _SHARED[vlm.base] = cls(vlm)
            elif vlm.model is vlm.base and vlm._scope is None:  # another handle on the same weights
                vlm._scope = shared.base_vlm._scope
            return shared

    # ------------------------------------------------------------------ views

    def _wrap(self, model, adapters: tuple[str, ...]):
        # heavy: nscvf.models imports every family's transformers classes (2.4 s at the app's page build)
        from nscvf.models import wrap_model

        view = wrap_model(model, self.processor, self.source)
        view.__dict__["fingerprint"] = self.fingerprint  # the base's content; adapters are keyed apart
        view.adapters = adapters
        view._scope = lambda: self.using(view.adapters)
        return view

    def view(self, adapters) -> object:
        """A model whose calls run with ``adapters`` active (empty: the base model)."""
        adapters = tuple(adapters)
        if not adapters:
            return self.base_vlm
        return self._wrap(self.peft, adapters)

    # ------------------------------------------------------------------ adapters

    def new_name(self, label: str) -> str:
        return f"{label}_{next(self._ids)}"

    def add_adapter(self, name: str, lora_config) -> None:
        from peft import get_peft_model  # peft: heavy, only when the first adapter is added

        with self.lock:
            self._reap()
            if self.peft is None:
                with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    self.peft = get_peft_model(self.model, lora_config, adapter_name=name)
            else:
                self.peft.add_adapter(name, lora_config)
            self._fix_active_adapter()
            self._active = None  # peft activated the new adapter; the next call re-selects
            self._mixed = True  # the new LoRA modules are in training mode whatever the model's

    def doom(self, names) -> None:
        """Delete these adapters at the next safe point: a garbage-collected chain's finalizer runs in whatever
        thread the collection happened, possibly inside this model's lock in the middle of iterating its modules
        (``set_peft_model_state_dict``: "dictionary changed size during iteration", seen in the suite)."""
        self._doomed.extend(names)  # list.extend: atomic; no lock (its holder may be this very thread)

    def _reap(self) -> None:
        """Delete the doomed adapters (the caller holds the lock, outside any iteration of the modules)."""
        if self._doomed:
            names, self._doomed = self._doomed, []
            self._delete(names)

    def delete_adapters(self, names) -> None:
        with self.lock:
            self._reap()
            self._delete(names)

    def _delete(self, names) -> None:
        """Delete adapters ``names`` (the caller holds the lock)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft warns that a deleted adapter was active: we re-select
            for name in names:
                if self.peft is not None and name in self.peft.peft_config:
                    self.peft.delete_adapter(name)
            self._fix_active_adapter()
            self._active = None

    def _fix_active_adapter(self) -> None:
        """PeftModel keeps one ``active_adapter`` name of its own (its config lookups use it): keep it an
        existing adapter. Which adapters run is set per call by :meth:`using`."""
        if self.peft is not None and self.peft.peft_config and self.peft.active_adapter not in self.peft.peft_config:
            self.peft.active_adapter = next(iter(self.peft.peft_config))

    def adapter_names(self) -> set[str]:
        with self.lock:
            self._reap()
            return set(self.peft.peft_config) if self.peft is not None else set()

    def adapter_parameters(self, name: str) -> list:
        """The LoRA parameters of adapter ``name`` (the only parameters a request trains)."""
        return [p for n, p in self.peft.named_parameters() if f".{name}." in n and "lora_" in n]

    def _activate(self, names: tuple[str, ...]) -> None:
        if names == self._active:
            return
        if self.peft is not None:
            lora = self.peft.base_model
            if names:
                missing = set(names) - set(self.peft.peft_config)
                if missing:
                    raise StaleAdapterError(
                        f"adapter(s) {', '.join(sorted(missing))} no longer exist: this model state was undone or released"
                    )
                lora.enable_adapter_layers()
                lora.set_adapter(list(names), inference_mode=True)  # every LoRA parameter frozen
            else:
                lora.disable_adapter_layers()
        self._active = names

    def _mode(self, train: bool) -> None:
        """``model.train(train)``, skipped when every module is in that mode already: it walks all ~460
        modules of the embedded model (3.5 ms), and every call and step switched it twice. Modes change only
        by the model's own ``train``/``eval`` (every module alike) except when an adapter adds modules."""
        if self._mixed or self.model.training != train:
            self.model.train(train)
            self._mixed = False

    def _own_threads(self) -> int | None:
        """Set this thread's torch count to the model's (``threads``); the count to restore, or None when unchanged."""
        if not self.threads or torch.get_num_threads() == self.threads:
            return None
        restore = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # this thread's count (OpenMP's is per thread)
        return restore

    @contextmanager
    def thread_count(self):
        """The model's torch thread count for this thread, for work on its tensors outside :meth:`using` (the
        null space's covariances and eigendecompositions). At torch's two threads, in a job's thread beside the
        app's and under OMP_WAIT_POLICY=PASSIVE, 18 eigendecompositions took 0.6 s, at one 0.18 s (issue 20)."""
        restore = self._own_threads()
        try:
            yield
        finally:
            if restore is not None:
                torch.set_num_threads(restore)

    @contextmanager
    def using(self, names, train: bool = False, trainable: str | None = None):
        """Hold the lock with exactly ``names`` active; ``trainable``'s parameters take gradients and the
        model is in training mode when ``train``. Inside another ``using`` block, what was active (and the
        mode) is restored afterwards; the outermost block leaves its adapters and mode as they are, because
        every use of the model selects its own on entry: restoring them cost two ``set_adapter`` and two
        ``train`` walks over all modules per training step and per call (issue 20: 3-9% of a warm request's CPU
        time, benchmarks/issue20/using_ab.py)."""
        names = tuple(names)
        with self.lock:
            before, was_training = self._active, self.model.training
            restore = None  # the caller's thread count, where this block changes it
            if self._depth == 0:
                restore = self._own_threads()
                self._reap()
            self._activate(names)
            params = self.adapter_parameters(trainable) if trainable else []
            for p in params:
                p.requires_grad_(True)
            self._mode(train)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                for p in params:
                    p.requires_grad_(False)
                if self._depth > 0:  # the enclosing block continues with its own adapters and mode
                    self._mode(was_training)
                    if before is not None and before != names:
                        self._activate(before)
                elif restore is not None:
                    torch.set_num_threads(restore)


def release(shared: SharedBase, names: list[str]) -> None:
    """Delete a garbage-collected chain's adapters, at the model's next safe point (:meth:`SharedBase.doom`)."""
    if names:
        shared.doom(list(names))
