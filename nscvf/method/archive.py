"""Reading a saved chain (a folder by ``UnlearningChain.save``, a zip by ``UnlearningChain.export``) without
trusting anything in it: the file may come from anyone (the app's "Import a timeline", ``--adapter``).

Nothing in the file names a path: ``chain.json`` is checked against the schema :func:`step_record` writes
(steps ``request_1`` .. ``request_<n>`` in order, known kinds and settings, bounded counts and strings), and
the reader builds every path itself from those validated names, inside the folder, refusing symbolic links.
It reads only ``chain.json``, ``report.json``, each step's ``adapter_model.safetensors`` and
``adapter_config.json`` and its ``protect/NNN.png`` images; tensors are read with safetensors (never a
pickle) and must have exactly the shapes the base model's LoRA layers have for that step's settings. A zip is
checked member by member against what an export of its requests can hold (names, and sizes bounded by the
model's LoRA shapes) before anything is extracted, into a temporary folder removed afterwards. Every refusal
is one :class:`~nscvf.errors.InputError` line naming the file (never a server path or an exception class).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import typing
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from nscvf.errors import InputError
from nscvf.method.config import UnlearnConfig

MAX_STEPS = 100  # requests in one chain
MAX_PROTECT_IMAGES = 4096  # per step (a forget step: at most its max_forget_images)
MAX_TEXT = 200  # characters of a target name or a fingerprint
MAX_CHAIN_JSON = 1 << 20
MAX_README = 64 << 10  # per request, the model card (never read; only allowed in a zip)
MAX_REPORT_PER_STEP = 4 << 20  # report.json: numbers and plot points of each request (a quick one: 0.4 MB)
MAX_REPORT = 64 << 20  # report.json in all (parsed in memory)
MAX_PROTECT_PIXELS = 1 << 28  # decoded protect images in all (~0.8 GB RGB: 1024 images of 512x512)
MAX_PNG_BYTES = 2 << 20  # a protect image is at most WORK_SIZE a side (a 512x512 RGB PNG is ~0.8 MB)
MAX_ADAPTER_CONFIG = 64 << 10  # adapter_config.json, plus its target names
MAX_JSON_DEPTH = 64
MAX_UNPACKED = 2 * 1024**3  # a whole archive, unpacked
KINDS = ("forget", "teach")
STEP_KEYS = ("name", "kind", "target", "config", "forget_fp")
ADAPTER_FILE = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME
TENSOR_DTYPES = ("F32", "F16", "BF16")
PNG_NAME = re.compile(r"[0-9]{3,4}\.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONTENTS = (
    "an export holds only chain.json, report.json, README.md and request_<k>/ folders of adapter_model.safetensors, "
    "adapter_config.json and protect/NNN.png"
)


def step_name(k: int) -> str:
    """The public name (and folder) of request ``k`` (1-based) in a saved chain."""
    return f"request_{k}"


def step_record(s) -> dict:
    """A ChainStep as chain.json holds it (the schema :func:`read_chain` checks)."""
    return dict(zip(STEP_KEYS, (s.name, s.kind, s.target, s.config.to_dict(), s.forget_fp)))


@dataclass
class SavedStep:
    """One validated request of a saved chain, in memory (nothing refers to the file any more)."""

    name: str
    kind: str
    target: str | None
    config: object  # UnlearnConfig or TeachConfig
    forget_fp: str
    state: dict  # peft state dict, CPU tensors with the base model's LoRA shapes
    protect: list  # PIL images
    result: object | None  # UnlearnResult


@dataclass
class SavedChain:
    base_model: str
    base_fingerprint: str
    steps: list[SavedStep]


class _Refused(Exception):
    """A reason inside the reader; :func:`read_chain` turns it into one InputError line with the file's label."""


def read_chain(vlm, source: str | os.PathLike) -> SavedChain:
    """The chain saved in ``source`` (a folder or an exported zip), validated for ``vlm``'s base model.
    InputError (one line, naming the file) for anything that is not exactly what save/export writes."""
    from nscvf.method.shared import SharedBase

    shared = SharedBase.of(vlm)
    p = Path(source)
    label = p.name if p.is_file() else str(p)
    try:
        if p.is_file():
            with tempfile.TemporaryDirectory(prefix="nscvf-import-") as tmp:
                return _read_folder(shared, unpack(shared, p, Path(tmp)))
        if not p.is_dir():
            raise _Refused("no such file or folder; give a result folder (--out of `nscvf forget`) or an exported zip")
        return _read_folder(shared, p.resolve())
    except _Refused as e:
        raise InputError(f"{label}: {e}") from None


# ------------------------------------------------------------------------------------------ chain.json


def _shown(name: str) -> str:
    """A name from the file, safe to show on one line (escaped, cut short)."""
    s = ascii(name)
    return s if len(s) <= 60 else s[:57] + "...'"


def _json(data: bytes, what: str):
    """Strict JSON: UTF-8, no NaN/Infinity, finite numbers, bounded nesting."""

    def no_constant(c):
        raise ValueError(f"non-finite number {c}")

    def finite(s):
        v = float(s)
        if not math.isfinite(v):
            raise ValueError("non-finite number")
        return v

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=no_constant, parse_float=finite)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Refused(f"not a readable timeline ({what} is not valid JSON)") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise _Refused(f"not a readable timeline ({what} is nested too deeply)")
    return value


def _depth(v, d: int = 0) -> int:
    if d > MAX_JSON_DEPTH:
        return d
    if isinstance(v, dict):
        return max((_depth(x, d + 1) for x in v.values()), default=d + 1)
    if isinstance(v, list):
        return max((_depth(x, d + 1) for x in v), default=d + 1)
    return d


def _text(v, what: str, empty=True, none=False, pattern: str | None = None, limit: int = MAX_TEXT) -> str | None:
    if v is None and none:
        return None
    if not isinstance(v, str) or len(v) > limit or not v.isprintable() or (not v and not empty):
        raise _Refused(f"not a readable timeline ({what} must be a short line of text)")
    if pattern and v and not re.fullmatch(pattern, v):
        raise _Refused(f"not a readable timeline ({what} is not valid)")
    return v


def _check_value(v, hint, what: str) -> None:
    """``v`` (from JSON) has the type ``hint`` (int, float, str, bool, dict, list, or X | None)."""
    options = typing.get_args(hint) or (hint,)
    for t in options:
        if t is type(None) and v is None:
            return
        if t is bool and isinstance(v, bool):
            return
        if t is int and isinstance(v, int) and not isinstance(v, bool):
            return
        if t is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            return
        if t in (str, dict, list) and isinstance(v, t):
            return
    raise _Refused(f"not a readable timeline ({what} has the wrong type)")


def _fields(cls, d, what: str, required: bool) -> dict:
    """``d`` checked field by field against the dataclass ``cls``: unknown keys refused, types checked."""
    if not isinstance(d, dict):
        raise _Refused(f"not a readable timeline ({what} must be an object)")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise _Refused(f"not a readable timeline ({what} has unknown key(s) {', '.join(_shown(k) for k in unknown[:3])})")
    if required:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]  # fmt: skip
        if missing:
            raise _Refused(f"not a readable timeline ({what} lacks {', '.join(missing[:3])})")
    for k, v in d.items():
        _check_value(v, hints[k], f"{what} {k}")
    return d


def _settings(kind: str, d, what: str):
    """The settings object of a step of ``kind`` from its chain.json dict (never ``cls(**d)`` unchecked)."""
    if kind == "teach":
        from nscvf.method.teach import TeachConfig as cls
    else:
        cls = UnlearnConfig
    d = _fields(cls, d, what, required=False)
    try:
        cfg = cls(**d).validate()
    except InputError as e:
        raise _Refused(f"not a readable timeline ({what}: {e})") from None
    # What shapes the adapter, for both kinds (TeachConfig.validate checks only its budget).
    ranges = UnlearnConfig.fields_help()
    for f in ("lora_rank", "lora_alpha", "first_layer"):
        lo, hi = ranges[f]["lo"], ranges[f]["hi"]
        if not lo <= getattr(cfg, f) <= hi:
            raise _Refused(f"not a readable timeline ({what} {f} is out of range)")
    if (kind == "teach") != (cfg.modules == "visual+language") or (kind == "teach") != (cfg.method == "teach"):
        raise _Refused(f"not a readable timeline ({what}: method and modules do not fit a {kind} request)")
    return cfg


@dataclass
class _Meta:
    base_model: str
    base_fingerprint: str
    steps: list  # (name, kind, target, config, forget_fp)


def parse_chain_json(data: bytes) -> _Meta:
    """chain.json checked against the schema save writes (see :func:`step_record`)."""
    meta = _json(data, "chain.json")
    if not isinstance(meta, dict) or set(meta) != {"base_model", "base_fingerprint", "steps"}:
        raise _Refused("not a readable timeline (chain.json must hold exactly base_model, base_fingerprint and steps)")
    base_model = _text(meta["base_model"], "chain.json base_model", limit=1000)  # a name or a local path
    fingerprint = _text(meta["base_fingerprint"], "chain.json base_fingerprint", empty=False, pattern=r"[0-9a-f]{1,64}")
    steps = meta["steps"]
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        raise _Refused(f"not a readable timeline (chain.json steps must be a list of at most {MAX_STEPS} requests)")
    out = []
    for k, s in enumerate(steps, 1):
        what = f"chain.json step {k}"
        if not isinstance(s, dict) or set(s) != set(STEP_KEYS):
            raise _Refused(f"not a readable timeline ({what} must hold exactly {', '.join(STEP_KEYS)})")
        if s["name"] != step_name(k):
            raise _Refused(f"not a readable timeline ({what} must be named {step_name(k)})")
        if s["kind"] not in KINDS:
            raise _Refused(f"not a readable timeline ({what} kind must be forget or teach)")
        target = _text(s["target"], f"{what} target", none=True)
        forget_fp = _text(s["forget_fp"], f"{what} forget_fp", pattern=r"[0-9a-f]{1,64}")
        out.append((s["name"], s["kind"], target, _settings(s["kind"], s["config"], f"{what} config"), forget_fp))
    return _Meta(base_model, fingerprint, out)


def _check_base(shared, meta: _Meta) -> None:
    if meta.base_fingerprint != shared.fingerprint:
        raise _Refused(
            f"made for another base model ({_shown(meta.base_model)}, fingerprint {meta.base_fingerprint}); "
            f"this model is {shared.fingerprint}: load that model"
        )


# ------------------------------------------------------------------------------------------ adapters


def lora_shapes(shared, config) -> dict[str, tuple[int, ...]]:
    """The peft state dict keys and tensor shapes of a LoRA adapter with ``config`` on the base model."""
    from nscvf.method.lora import lora_config

    cfg = lora_config(shared.base_vlm, config)
    out = {}
    for t in sorted(cfg.target_modules):
        layer = shared.model.get_submodule(t)
        out[f"base_model.model.{t}.lora_A.weight"] = (cfg.r, layer.in_features)
        out[f"base_model.model.{t}.lora_B.weight"] = (layer.out_features, cfg.r)
    return out


def _adapter_bytes(shapes: dict) -> int:
    """At most how large adapter_model.safetensors of these shapes is (float32 data and its header)."""
    return sum(4 * math.prod(s) + 256 + len(k) for k, s in shapes.items()) + 4096


def _read_state(path: Path, rel: str, shapes: dict) -> dict:
    """The adapter's tensors from safetensors, after its header's names, dtypes and shapes were checked."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            if keys != set(shapes):
                raise _Refused(f"{rel} does not fit this model's LoRA layers for its settings (other tensor names)")
            for k in sorted(keys):
                sl = f.get_slice(k)
                if sl.get_dtype() not in TENSOR_DTYPES or tuple(sl.get_shape()) != shapes[k]:
                    raise _Refused(f"{rel} does not fit this model's LoRA layers for its settings (tensor shapes)")
            state = {k: f.get_tensor(k) for k in sorted(keys)}
    except _Refused:
        raise
    except Exception:  # noqa: BLE001  (safetensors raises its own error types for a damaged header or data)
        raise _Refused(f"not a readable timeline ({rel} is not a readable safetensors file)") from None
    import torch

    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise _Refused(f"not a readable timeline ({rel} holds non-finite weights)")
    return state


def _check_adapter_config(data: bytes, rel: str, config, shapes: dict) -> None:
    """adapter_config.json (what ``PeftModel.from_pretrained`` reads) says the same as chain.json."""
    d = _json(data, rel)
    targets = sorted({k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in shapes})
    if (
        not isinstance(d, dict)
        or d.get("peft_type") != "LORA"
        or d.get("r") != config.lora_rank
        or d.get("lora_alpha") != config.lora_alpha
        or not isinstance(d.get("target_modules"), list)
        or sorted(map(str, d["target_modules"])) != targets
    ):
        raise _Refused(f"not a readable timeline ({rel} does not match the step's settings in chain.json)")


# ------------------------------------------------------------------------------------------ a folder


def _inside(root: Path, rel: str, kind: str, required: bool = True) -> Path | None:
    """``root / rel`` if it is a plain file (kind "file") or folder ("dir") inside ``root`` with no symbolic
    link on the way; None if absent and not required."""
    p, parts = root, rel.split("/")
    for i, part in enumerate(parts):
        p = p / part
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if required:
                raise _Refused(f"not a readable timeline ({rel} is missing)") from None
            return None
        except OSError:
            raise _Refused(f"not a readable timeline ({rel} cannot be read)") from None
        if stat.S_ISLNK(st.st_mode):
            raise _Refused(f"refused: {'/'.join(parts[: i + 1])} is a symbolic link (a saved chain holds only plain files)")
    want = stat.S_ISREG if kind == "file" else stat.S_ISDIR
    if not want(st.st_mode) or not p.resolve().is_relative_to(root.resolve()):
        raise _Refused(f"refused: {rel} is not a plain {'file' if kind == 'file' else 'folder'}")
    return p


def _read_bytes(p: Path, rel: str, limit: int) -> bytes:
    """At most ``limit`` bytes of the plain file ``p`` (opened without following a link)."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise _Refused(f"refused: {rel} is not a plain file")
            data = f.read(limit + 1)
    except OSError:
        raise _Refused(f"not a readable timeline ({rel} cannot be read)") from None
    if len(data) > limit:
        size = f"{limit / 2**20:.0f} MB" if limit >= 2**20 else f"{limit / 1024:.0f} KB"
        raise _Refused(f"refused: {rel} is larger than a saved chain's can be ({size})")
    return data


def _png(data: bytes, rel: str, pixels: list[int]):
    """A protect image: a PNG at most WORK_SIZE a side, decoded only while ``pixels[0]`` (what the chain's
    images may still decode to) allows it."""
    from nscvf.images import WORK_SIZE, load_image_bytes

    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise _Refused(f"not a readable timeline ({rel} is not a PNG image)")
    w, h = struct.unpack(">II", data[16:24])
    if not (0 < w <= WORK_SIZE and 0 < h <= WORK_SIZE):
        raise _Refused(f"refused: {rel} is {w}x{h} pixels; a saved protect image is at most {WORK_SIZE} a side")
    pixels[0] -= w * h
    if pixels[0] < 0:
        raise _Refused(f"refused: its protect images hold more than {MAX_PROTECT_PIXELS >> 20} M pixels in all")
    try:
        return load_image_bytes(data, rel)
    except InputError as e:
        raise _Refused(f"not a readable timeline ({e})") from None


def _protect_images(root: Path, name: str, limit: int, pixels: list[int]) -> list:
    folder = _inside(root, f"{name}/protect", "dir", required=False)
    if folder is None:
        return []
    try:
        names = sorted((e.name for e in os.scandir(folder) if PNG_NAME.fullmatch(e.name)), key=lambda n: int(n[:-4]))
    except OSError:
        raise _Refused(f"not a readable timeline ({name}/protect cannot be read)") from None
    if len(names) > limit:
        raise _Refused(f"refused: {name} has {len(names)} protect images, more than its request can have ({limit})")
    out = []
    for n in names:
        rel = f"{name}/protect/{n}"
        out.append(_png(_read_bytes(_inside(root, rel, "file"), rel, MAX_PNG_BYTES), rel, pixels))
    return out


# What a request's records hold, as far as anything reads them (the outcome, the CLI, the app's views): a
# spec is a type, None, a tuple of alternatives, [spec] (a list of), or a dict of "key" / "?key" (optional)
# to specs, where a ``str`` key gives the spec of every other key (absent: other keys may hold anything).
ANY = object()
NUM = (int, float)
OPT_NUM = (None, int, float)
SCALAR = (None, bool, int, float, str)
_PROBES = {"forget": {"questions": [str], "answers": {str: [str]}}, "?text": {"questions": [str], "answers": [str]}}
_EVAL = (None, {"?summary": {str: OPT_NUM}, "?n_items": OPT_NUM, "?seconds": OPT_NUM})
_DRIFT = {"?mean": OPT_NUM, "?max": OPT_NUM, "?images": str}
RESULT_SPECS = {
    "probes_before": _PROBES,
    "probes_after": _PROBES,
    "eval_before": _EVAL,
    "eval_after": _EVAL,
    "null_space": {
        "?summary": {"?layers": int, "?constrained": bool, str: (None, bool, int, float)},
        "?layers": {str: {str: OPT_NUM}},
    },
    "retain_drift": _DRIFT,
    "retain_drift_base": _DRIFT,
    "embeddings": {"?groups": [str], "?labels": [str], "?before": [[NUM]], "?after": [[NUM]]},
    "losses": [{str: OPT_NUM}],
    "timings": {str: OPT_NUM},
    "cache": {str: SCALAR},
    "history": [{str: SCALAR}],
    "measures": {str: OPT_NUM},
}


def conforms(v, spec) -> bool:
    """Whether the JSON value ``v`` has the shape ``spec`` (see RESULT_SPECS)."""
    if spec is ANY:
        return True
    if isinstance(spec, tuple):
        return any(conforms(v, s) for s in spec)
    if spec is None:
        return v is None
    if isinstance(spec, list):
        return isinstance(v, list) and all(conforms(x, spec[0]) for x in v)
    if isinstance(spec, dict):
        if not isinstance(v, dict):
            return False
        named = {k.lstrip("?"): (k.startswith("?"), t) for k, t in spec.items() if isinstance(k, str)}
        if any(not optional and k not in v for k, (optional, _) in named.items()):
            return False
        other = spec.get(str, ANY)
        return all(conforms(x, named[k][1] if k in named else other) for k, x in v.items())
    if spec is bool:
        return isinstance(v, bool)
    if spec in (int, float):
        return isinstance(v, int if spec is int else (int, float)) and not isinstance(v, bool)
    return isinstance(v, spec)


def _check_record(d: dict, what: str) -> None:
    """The nested records of one request: their shapes (RESULT_SPECS) and what ties them together."""
    for key, spec in RESULT_SPECS.items():
        if key in d and not conforms(d[key], spec):
            raise _Refused(f"not a readable timeline ({what} {key} is not a record this library writes)")
    for key in ("probes_before", "probes_after"):
        forget = d[key]["forget"]
        answers = forget["answers"]
        if not forget["questions"] or any(len(answers.get(q, ())) != d["n_forget"] for q in forget["questions"]):
            raise _Refused(f"not a readable timeline ({what} {key} does not answer every question on its {d['n_forget']} images)")
    emb = d.get("embeddings") or {}
    lengths = {len(emb[k]) for k in ("groups", "labels", "before", "after") if k in emb}
    widths = {len(row) for k in ("before", "after") for row in emb.get(k, [])}
    if len(lengths) > 1 or len(widths) > 1:
        raise _Refused(f"not a readable timeline ({what} embeddings do not line up)")


def _results(data: bytes | None, meta: _Meta) -> list:
    """report.json's request records, each checked against UnlearnResult and against its step in chain.json."""
    from nscvf.method.result import UnlearnResult

    if data is None:
        return []
    report = _json(data, "report.json")
    if (
        not isinstance(report, dict)
        or not set(report) <= {"chain", "requests"}
        or not isinstance(report.get("requests", []), list)
    ):
        raise _Refused("not a readable timeline (report.json must hold chain and a list of requests)")
    requests = report.get("requests", [])
    if len(requests) > len(meta.steps):
        raise _Refused("not a readable timeline (report.json holds more requests than chain.json)")
    out = []
    for k, (r, (name, kind, target, cfg, _)) in enumerate(zip(requests, meta.steps), 1):
        what = f"report.json request {k}"
        d = _fields(UnlearnResult, r, what, required=True)
        if (d["step"], d["adapter_name"], d.get("kind", "forget"), d["target"], d["method"], d["config"]) != (
            k, name, kind, target, cfg.method, cfg.to_dict()
        ):  # fmt: skip
            raise _Refused(f"not a readable timeline ({what} does not match step {k} of chain.json)")
        _check_record(d, what)
        out.append(UnlearnResult(**d))
    return out


def _read_folder(shared, root: Path) -> SavedChain:
    if _inside(root, "chain.json", "file", required=False) is None:
        raise _Refused("not an unlearning result folder (no chain.json); use the --out folder of `nscvf forget`")
    meta = parse_chain_json(_read_bytes(root / "chain.json", "chain.json", MAX_CHAIN_JSON))
    _check_base(shared, meta)
    report = _inside(root, "report.json", "file", required=False)
    results = _results(None if report is None else _read_bytes(report, "report.json", _report_limit(meta)), meta)
    steps, pixels = [], [MAX_PROTECT_PIXELS]
    for i, (name, kind, target, cfg, forget_fp) in enumerate(meta.steps):
        shapes = lora_shapes(shared, cfg)
        rel = f"{name}/{ADAPTER_CONFIG}"
        _check_adapter_config(_read_bytes(_inside(root, rel, "file"), rel, _config_limit(shapes)), rel, cfg, shapes)
        rel = f"{name}/{ADAPTER_FILE}"
        path = _inside(root, rel, "file")
        if path.stat().st_size > _adapter_bytes(shapes):
            raise _Refused(f"refused: {rel} is larger than an adapter of its settings can be")
        state = _read_state(path, rel, shapes)
        protect = _protect_images(root, name, _protect_limit(kind, cfg), pixels)
        if i < len(results) and results[i].n_forget != len(protect):
            raise _Refused(
                f"not a readable timeline ({name} has {len(protect)} protect images, its record {results[i].n_forget})"
            )
        steps.append(SavedStep(name, kind, target, cfg, forget_fp, state, protect, results[i] if i < len(results) else None))
    return SavedChain(meta.base_model, meta.base_fingerprint, steps)


def _report_limit(meta: _Meta) -> int:
    return min(MAX_REPORT, MAX_CHAIN_JSON + MAX_REPORT_PER_STEP * max(1, len(meta.steps)))


def _config_limit(shapes: dict) -> int:
    return MAX_ADAPTER_CONFIG + sum(len(k) + 8 for k in shapes)


def _protect_limit(kind: str, cfg) -> int:
    return min(MAX_PROTECT_IMAGES, cfg.max_forget_images) if kind == "forget" else MAX_PROTECT_IMAGES


# ------------------------------------------------------------------------------------------ a zip


def _copy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, out) -> int:
    """Copy a member's bytes to ``out`` (a file or BytesIO), at most ``limit`` whatever its header says."""
    n = 0
    with z.open(info) as f:
        while chunk := f.read(1 << 20):
            n += len(chunk)
            if n > limit:
                raise _Refused(f"refused: {_shown(info.filename)} is larger than a saved chain's can be")
            out.write(chunk)
    return n


def _limit(meta: _Meta, shapes: dict, name: str) -> int | None:
    """The most bytes the member ``name`` of an export of these steps can have; None: no such member."""
    fixed = {"chain.json": MAX_CHAIN_JSON, "report.json": _report_limit(meta), "README.md": MAX_README * (1 + len(meta.steps))}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(
        r"request_([1-9][0-9]{0,3})/(adapter_model\.safetensors|adapter_config\.json|protect/([0-9]{3,4})\.png)", name
    )
    if m is None or int(m.group(1)) > len(meta.steps):
        return None
    k, file, index = int(m.group(1)), m.group(2), m.group(3)
    _, kind, _, cfg, _ = meta.steps[k - 1]
    if file == ADAPTER_FILE:
        return _adapter_bytes(shapes[k])
    if file == ADAPTER_CONFIG:
        return _config_limit(shapes[k])
    return MAX_PNG_BYTES if index == f"{int(index):03d}" and int(index) < _protect_limit(kind, cfg) else None


def unpack(shared, path: Path, into: Path) -> Path:
    """Extract an exported chain (zip) into ``into`` after checking every member (its name, its kind and its
    declared size against what an export of these requests can hold, the total against the free disk);
    README.md is not extracted."""
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise _Refused("not a zip file; export a chain with the app or UnlearningChain.export") from None
    except (OSError, EOFError, ValueError):
        raise _Refused("not a readable timeline (the zip is damaged)") from None
    try:
        with z:
            files = _checked_members(shared, z)
            for info, limit in files:
                dest = into.joinpath(*info.filename.split("/"))  # a name _limit accepted: request_<k>/... only
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as out:
                    _copy_member(z, info, limit, out)
    except _Refused:
        raise
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _Refused("refused: no disk space left to unpack it") from None
        raise _Refused("not a readable timeline (the zip is damaged)") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError, ValueError):
        raise _Refused("not a readable timeline (the zip is damaged)") from None
    return into


def _checked_members(shared, z: zipfile.ZipFile) -> list:
    """The members to extract, with their byte limits, once every member of ``z`` passed the checks."""
    infos = z.infolist()
    names = [i.filename for i in infos]
    if "chain.json" not in names:
        raise _Refused("not an exported unlearning chain (no chain.json inside)")
    if len(set(names)) != len(names):
        raise _Refused("refused: the zip names a file twice")
    buf = io.BytesIO()
    _copy_member(z, z.getinfo("chain.json"), MAX_CHAIN_JSON, buf)
    meta = parse_chain_json(buf.getvalue())
    _check_base(shared, meta)
    shapes = {k: lora_shapes(shared, s[3]) for k, s in enumerate(meta.steps, 1)}
    folders = {f"{s[0]}/" for s in meta.steps} | {f"{s[0]}/protect/" for s in meta.steps}
    files = []
    for info in infos:
        if info.is_dir() and info.filename in folders:
            continue
        limit = _limit(meta, shapes, info.filename)
        if limit is None:
            raise _Refused(f"refused: unexpected file {_shown(info.filename)} inside ({CONTENTS})")
        if stat.S_ISLNK(info.external_attr >> 16) or info.flag_bits & 0x1:
            raise _Refused(f"refused: {_shown(info.filename)} is a link or encrypted (an export holds plain files)")
        if info.file_size > limit:
            raise _Refused(f"refused: {_shown(info.filename)} would unpack to more than a saved chain's can hold")
        if info.filename != "README.md":
            files.append((info, limit))
    total = sum(i.file_size for i, _ in files)
    if total > MAX_UNPACKED:
        raise _Refused(f"refused: it would unpack to {total / 2**20:.0f} MB, above the {MAX_UNPACKED >> 20} MB limit")
    if total > shutil.disk_usage(tempfile.gettempdir()).free // 2:
        raise _Refused(f"refused: it would unpack to {total / 2**20:.0f} MB, more than the free disk space allows")
    return files
