"""The disk cache (diskcache): covariances, base answers, features and results, keyed by content
fingerprints of the model state and the image sets, so a repeated request is near instant and a
restart loses nothing finished. Directory: ``$NSCVF_CACHE_DIR`` or ``~/.cache/nscvf``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image


def default_cache_dir() -> Path:
    return Path(os.environ.get("NSCVF_CACHE_DIR") or Path.home() / ".cache" / "nscvf")


def image_fingerprint(img: Image.Image) -> str:
    h = hashlib.sha256(f"{img.size}{img.mode}".encode())
    h.update(img.tobytes())
    return h.hexdigest()[:16]


def image_set_fingerprint(images) -> str:
    h = hashlib.sha256()
    for im in images:
        h.update(image_fingerprint(im).encode())
    return h.hexdigest()[:16]


class Cache:
    """A thin wrapper: tuple keys, a size limit, and ``enabled=False`` for a pure in-memory dict."""

    def __init__(self, directory: str | Path | None = None, size_limit_gb: float = 2.0, enabled: bool = True):
        self.enabled = enabled
        self._mem: dict = {}
        self._dc = None
        if enabled:
            import diskcache

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
