"""The disk cache (diskcache): covariances, base answers, features and results, keyed by content
fingerprints of the model state and the image sets, so a repeated request is near instant and a
restart loses nothing finished. Directory: ``$NSCVF_CACHE_DIR`` or ``~/.cache/nscvf``."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image


def default_cache_dir() -> Path:
    return Path(os.environ.get("NSCVF_CACHE_DIR") or Path.home() / ".cache" / "nscvf")


def image_fingerprint(img: Image.Image) -> str:
    h = hashlib.sha256(f"{img.size}{img.mode}".encode())
    h.update(img.tobytes())
    return h.hexdigest()[:16]


def image_set_fingerprint(images, fingerprints: list[str] | None = None) -> str:
    """The fingerprint of a list of images (in its order); ``fingerprints``: their own, if computed already."""
    h = hashlib.sha256()
    for f in fingerprints if fingerprints is not None else map(image_fingerprint, images):
        h.update(f.encode())
    return h.hexdigest()[:16]


class Cache:
    """A thin wrapper: tuple keys, a size limit, and ``enabled=False`` for a pure in-memory dict."""

    def __init__(self, directory: str | Path | None = None, size_limit_gb: float = 2.0, enabled: bool = True):
        self.enabled = enabled
        self._mem: dict = {}
        self._dc = None
        if enabled:
            import diskcache  # diskcache: only for a cache on disk (enabled=False needs none)

            d = Path(directory) if directory else default_cache_dir()
            d.mkdir(parents=True, exist_ok=True)
            self._dc = diskcache.Cache(str(d), size_limit=int(size_limit_gb * 2**30))
        self.directory = None if self._dc is None else self._dc.directory

    @staticmethod
    def _key(key) -> str:
        return repr(key) if not isinstance(key, str) else key

    def get(self, key, default=None):
        k = self._key(key)
        if self._dc is None:
            return self._mem.get(k, default)
        return self._dc.get(k, default)

    def set(self, key, value) -> None:
        k = self._key(key)
        if self._dc is None:
            self._mem[k] = value
        else:
            self._dc.set(k, value)

    def clear(self) -> None:
        self._mem.clear()
        if self._dc is not None:
            self._dc.clear()

    def __getstate__(self):
        raise TypeError("Cache is not picklable; keep it in a per-process registry")


class Memo:
    """The process's memo of deterministic work (issue 20): renders of the world, processor inputs of image
    sets, and features and answers of a model state, each under a key that names everything its value
    depends on (a model state by its content fingerprint: a state after a forget request is another key).
    In memory only, least recently used first out, at most ``budgets[kind]`` bytes of a kind (``default``
    for the others; a value larger than its budget is not kept). It changes nothing but time: with it off
    (``NSCVF_MEMO=0`` or ``memo.configure(enabled=False)``) every value is computed again, by the same code.
    Values are shared: callers must not modify what they get."""

    # A request's image sets are ~1050 renders and ~900 processor inputs (~49 kB each on the embedded model),
    # its features ~9 kB an image there; a covariance chunk holds every tuned layer's sums (~10 MB there).
    BUDGETS = {"render": 128 * 2**20, "image_inputs": 128 * 2**20, "features": 128 * 2**20, "covariance": 512 * 2**20}

    def __init__(self, enabled: bool | None = None, budgets: dict | None = None, default: int = 64 * 2**20):
        self.enabled = os.environ.get("NSCVF_MEMO", "1") != "0" if enabled is None else enabled
        self.budgets = self.BUDGETS | (budgets or {})
        self.default = default
        self._kinds: dict[str, OrderedDict] = {}  # kind -> key -> (value, bytes)
        self._bytes: dict[str, int] = {}
        self._counts: dict[str, list[int]] = {}  # kind -> [hits, misses]
        self._lock = threading.Lock()

    def configure(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def clear(self) -> None:
        with self._lock:
            self._kinds.clear()
            self._bytes.clear()
            self._counts.clear()

    def get(self, kind: str, key, compute):
        """The value of ``compute()`` for (kind, key), computed once while it stays in the memo."""
        return self.get_many(kind, [key], lambda missing: [compute()])[0]

    def get_many(self, kind: str, keys: list, compute) -> list:
        """The values of ``keys``; ``compute(missing)`` gets the indices of those not in the memo (all of them
        when it is off) and returns their values in that order, in one call (one batch). Two threads may
        compute the same value once each, never a wrong one (the lock is not held while computing)."""
        found: dict[int, object] = {}
        if self.enabled:
            with self._lock:
                store = self._kinds.setdefault(kind, OrderedDict())
                for i, k in enumerate(keys):
                    if k in store:
                        store.move_to_end(k)
                        found[i] = store[k][0]
                counts = self._counts.setdefault(kind, [0, 0])
                counts[0] += len(found)
                counts[1] += len(keys) - len(found)
        missing = [i for i in range(len(keys)) if i not in found]
        values = list(compute(missing)) if missing else []
        if self.enabled and missing:
            budget = self.budgets.get(kind, self.default)
            with self._lock:
                store = self._kinds.setdefault(kind, OrderedDict())
                for i, v in zip(missing, values):
                    size = nbytes(v)
                    if size <= budget and keys[i] not in store:
                        store[keys[i]] = (v, size)
                        self._bytes[kind] = self._bytes.get(kind, 0) + size
                while self._bytes.get(kind, 0) > budget:
                    _, (_, size) = store.popitem(last=False)
                    self._bytes[kind] -= size
        found.update(zip(missing, values))
        return [found[i] for i in range(len(keys))]

    def stats(self) -> dict:
        """Hits, misses, entries and megabytes per kind (what the profile prints)."""
        with self._lock:
            return {
                k: {"hits": h, "misses": m, "entries": len(self._kinds.get(k, ())), "mb": round(self._bytes.get(k, 0) / 2**20, 1)}
                for k, (h, m) in self._counts.items()
            }


def nbytes(value) -> int:
    """Approximate memory of a memoised value: tensors, arrays and images by their data, containers by their items."""
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # a torch tensor
        return value.element_size() * value.numel()
    if hasattr(value, "nbytes"):  # a numpy array
        return int(value.nbytes)
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values()) + 64
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value) + 64
    if isinstance(value, str):
        return len(value) + 48
    return 64


memo = Memo()
