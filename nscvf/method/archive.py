"""Reading a saved chain (a folder by ``UnlearningChain.save``, a zip by ``UnlearningChain.export``) without
trusting anything in it: the file may come from anyone (the app's "Import a timeline", ``--adapter``).

Nothing in the file names a path: ``chain.json`` is checked first (:mod:`nscvf.method.archive_schema`), and
the reader builds every path itself from its validated step names, inside the folder, refusing symbolic
links. It reads only ``chain.json``, ``report.json``, each step's ``adapter_model.safetensors`` and
``adapter_config.json`` and its ``protect/NNN.png`` images; tensors are read with safetensors (never a
pickle) and must have exactly the shapes the base model's LoRA layers have for that step's settings. A zip is
checked member by member against what an export of its requests can hold (names, and sizes bounded by the
model's LoRA shapes and the steps' image counts) before anything is extracted, into a temporary folder
removed afterwards. Every refusal is one :class:`~nscvf.errors.InputError` line naming the file (never a
server path or an exception class).
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from nscvf.errors import InputError
from nscvf.images import WORK_SIZE, load_image_bytes
from nscvf.method.archive_schema import ChainMeta, Refused, parse_chain_json, parse_json, parse_report, shown
from nscvf.method.lora import lora_config

MAX_PROTECT_IMAGES = 4096  # per step (a forget step: at most its max_forget_images)
MAX_CHAIN_JSON = 1 << 20
MAX_README = 64 << 10  # per request, the model card (never read; only allowed in a zip)
MAX_REPORT_PER_STEP = 4 << 20  # report.json: numbers and plot points of each request (a quick one: 0.4 MB)
MAX_REPORT = 64 << 20  # report.json in all (parsed in memory)
MAX_PROTECT_PIXELS = 1 << 28  # decoded protect images in all (~0.8 GB RGB: 1024 images of 512x512)
MAX_PNG_BYTES = 2 << 20  # a protect image is at most WORK_SIZE a side (a 512x512 RGB PNG is ~0.8 MB)
MAX_ADAPTER_CONFIG = 64 << 10  # adapter_config.json, plus its target names
MAX_UNPACKED = 2 * 1024**3  # a whole archive, unpacked
ADAPTER_FILE = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME
TENSOR_DTYPES = ("F32", "F16", "BF16")
PNG_NAME = re.compile(r"[0-9]{3,4}\.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONTENTS = (
    "an export holds only chain.json, report.json, README.md and request_<k>/ folders of adapter_model.safetensors, "
    "adapter_config.json and protect/NNN.png"
)


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


def read_chain(vlm, source: str | os.PathLike) -> SavedChain:
    """The chain saved in ``source`` (a folder or an exported zip), validated for ``vlm``'s base model.
    InputError (one line, naming the file) for anything that is not exactly what save/export writes."""
    from nscvf.method.shared import SharedBase  # torch: shared imports torch; this module reads files without it

    shared = SharedBase.of(vlm)
    p = Path(source)
    label = p.name if p.is_file() else str(p)
    try:
        if p.is_file():
            with tempfile.TemporaryDirectory(prefix="nscvf-import-") as tmp:
                return _read_folder(shared, unpack(shared, p, Path(tmp)))
        if not p.is_dir():
            raise Refused("no such file or folder; give a result folder (--out of `nscvf forget`) or an exported zip")
        return _read_folder(shared, p.resolve())
    except Refused as e:
        raise InputError(f"{label}: {e}") from None


def _check_base(shared, meta: ChainMeta) -> None:
    if meta.base_fingerprint != shared.fingerprint:
        raise Refused(
            f"made for another base model ({shown(meta.base_model)}, fingerprint {meta.base_fingerprint}); "
            f"this model is {shared.fingerprint}: load that model"
        )


# ------------------------------------------------------------------------------------------ adapters


def lora_shapes(shared, config) -> dict[str, tuple[int, ...]]:
    """The peft state dict keys and tensor shapes of a LoRA adapter with ``config`` on the base model."""
    from nscvf.method.nullspace import conv_of  # torch: loaded with the model already

    cfg = lora_config(shared.base_vlm, config)
    out = {}
    for t in sorted(cfg.target_modules):
        layer = shared.model.get_submodule(t)
        conv = conv_of(layer)  # the photo model's tower (itself, or under an earlier step's LoRA): a conv LoRA pair
        if conv is not None:
            k = tuple(conv.kernel_size)
            out[f"base_model.model.{t}.lora_A.weight"] = (cfg.r, conv.in_channels, *k)
            out[f"base_model.model.{t}.lora_B.weight"] = (conv.out_channels, cfg.r, *(1,) * len(k))
            continue
        out[f"base_model.model.{t}.lora_A.weight"] = (cfg.r, layer.in_features)
        out[f"base_model.model.{t}.lora_B.weight"] = (layer.out_features, cfg.r)
    return out


def _adapter_bytes(shapes: dict) -> int:
    """At most how large adapter_model.safetensors of these shapes is (float32 data and its header)."""
    return sum(4 * math.prod(s) + 256 + len(k) for k, s in shapes.items()) + 4096


def _read_state(path: Path, rel: str, shapes: dict) -> dict:
    """The adapter's tensors from safetensors, after its header's names, dtypes and shapes were checked."""
    from safetensors import safe_open  # safetensors: only when an adapter is read

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            if keys != set(shapes):
                raise Refused(f"{rel} does not fit this model's LoRA layers for its settings (other tensor names)")
            for k in sorted(keys):
                sl = f.get_slice(k)
                if sl.get_dtype() not in TENSOR_DTYPES or tuple(sl.get_shape()) != shapes[k]:
                    raise Refused(f"{rel} does not fit this model's LoRA layers for its settings (tensor shapes)")
            state = {k: f.get_tensor(k) for k in sorted(keys)}
    except Refused:
        raise
    except Exception:  # noqa: BLE001  (safetensors raises its own error types for a damaged header or data)
        raise Refused(f"not a readable timeline ({rel} is not a readable safetensors file)") from None
    import torch  # torch: heavy, only when an adapter is read

    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise Refused(f"not a readable timeline ({rel} holds non-finite weights)")
    return state


def _check_adapter_config(data: bytes, rel: str, config, shapes: dict) -> None:
    """adapter_config.json (what ``PeftModel.from_pretrained`` reads) says the same as chain.json."""
    d = parse_json(data, rel)
    targets = sorted({k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in shapes})
    if (
        not isinstance(d, dict)
        or d.get("peft_type") != "LORA"
        or d.get("r") != config.lora_rank
        or d.get("lora_alpha") != config.lora_alpha
        or not isinstance(d.get("target_modules"), list)
        or sorted(map(str, d["target_modules"])) != targets
    ):
        raise Refused(f"not a readable timeline ({rel} does not match the step's settings in chain.json)")


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
                raise Refused(f"not a readable timeline ({rel} is missing)") from None
            return None
        except OSError:
            raise Refused(f"not a readable timeline ({rel} cannot be read)") from None
        if stat.S_ISLNK(st.st_mode):
            raise Refused(f"refused: {'/'.join(parts[: i + 1])} is a symbolic link (a saved chain holds only plain files)")
    want = stat.S_ISREG if kind == "file" else stat.S_ISDIR
    if not want(st.st_mode) or not p.resolve().is_relative_to(root.resolve()):
        raise Refused(f"refused: {rel} is not a plain {'file' if kind == 'file' else 'folder'}")
    return p


def _read_bytes(p: Path, rel: str, limit: int) -> bytes:
    """At most ``limit`` bytes of the plain file ``p`` (opened without following a link)."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise Refused(f"refused: {rel} is not a plain file")
            data = f.read(limit + 1)
    except OSError:
        raise Refused(f"not a readable timeline ({rel} cannot be read)") from None
    if len(data) > limit:
        size = f"{limit / 2**20:.0f} MB" if limit >= 2**20 else f"{limit / 1024:.0f} KB"
        raise Refused(f"refused: {rel} is larger than a saved chain's can be ({size})")
    return data


def _png(data: bytes, rel: str, pixels: list[int]):
    """A protect image: a PNG at most WORK_SIZE a side, decoded only while ``pixels[0]`` (what the chain's
    images may still decode to) allows it."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise Refused(f"not a readable timeline ({rel} is not a PNG image)")
    w, h = struct.unpack(">II", data[16:24])
    if not (0 < w <= WORK_SIZE and 0 < h <= WORK_SIZE):
        raise Refused(f"refused: {rel} is {w}x{h} pixels; a saved protect image is at most {WORK_SIZE} a side")
    pixels[0] -= w * h
    if pixels[0] < 0:
        raise Refused(f"refused: its protect images hold more than {MAX_PROTECT_PIXELS >> 20} M pixels in all")
    try:
        return load_image_bytes(data, rel)
    except InputError as e:
        raise Refused(f"not a readable timeline ({e})") from None


def _protect_images(root: Path, name: str, limit: int, pixels: list[int]) -> list:
    folder = _inside(root, f"{name}/protect", "dir", required=False)
    if folder is None:
        return []
    try:
        names = sorted((e.name for e in os.scandir(folder) if PNG_NAME.fullmatch(e.name)), key=lambda n: int(n[:-4]))
    except OSError:
        raise Refused(f"not a readable timeline ({name}/protect cannot be read)") from None
    if len(names) > limit:
        raise Refused(f"refused: {name} has {len(names)} protect images, more than its request can have ({limit})")
    out = []
    for n in names:
        rel = f"{name}/protect/{n}"
        out.append(_png(_read_bytes(_inside(root, rel, "file"), rel, MAX_PNG_BYTES), rel, pixels))
    return out


def _read_folder(shared, root: Path) -> SavedChain:
    if _inside(root, "chain.json", "file", required=False) is None:
        raise Refused("not an unlearning result folder (no chain.json); use the --out folder of `nscvf forget`")
    meta = parse_chain_json(_read_bytes(root / "chain.json", "chain.json", MAX_CHAIN_JSON))
    _check_base(shared, meta)
    report = _inside(root, "report.json", "file", required=False)
    results = parse_report(None if report is None else _read_bytes(report, "report.json", _report_limit(meta)), meta)
    steps, pixels = [], [MAX_PROTECT_PIXELS]
    for i, (name, kind, target, cfg, forget_fp) in enumerate(meta.steps):
        shapes = lora_shapes(shared, cfg)
        rel = f"{name}/{ADAPTER_CONFIG}"
        _check_adapter_config(_read_bytes(_inside(root, rel, "file"), rel, _config_limit(shapes)), rel, cfg, shapes)
        rel = f"{name}/{ADAPTER_FILE}"
        path = _inside(root, rel, "file")
        if path.stat().st_size > _adapter_bytes(shapes):
            raise Refused(f"refused: {rel} is larger than an adapter of its settings can be")
        state = _read_state(path, rel, shapes)
        protect = _protect_images(root, name, _protect_limit(kind, cfg), pixels)
        if i < len(results) and results[i].n_forget != len(protect):
            raise Refused(f"not a readable timeline ({name} has {len(protect)} protect images, its record {results[i].n_forget})")
        steps.append(SavedStep(name, kind, target, cfg, forget_fp, state, protect, results[i] if i < len(results) else None))
    return SavedChain(meta.base_model, meta.base_fingerprint, steps)


def _report_limit(meta: ChainMeta) -> int:
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
                raise Refused(f"refused: {shown(info.filename)} is larger than a saved chain's can be")
            out.write(chunk)
    return n


def _limit(meta: ChainMeta, shapes: dict, name: str) -> int | None:
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
        raise Refused("not a zip file; export a chain with the app or UnlearningChain.export") from None
    except (OSError, EOFError, ValueError):
        raise Refused("not a readable timeline (the zip is damaged)") from None
    try:
        with z:
            files = _checked_members(shared, z)
            for info, limit in files:
                dest = into.joinpath(*info.filename.split("/"))  # a name _limit accepted: request_<k>/... only
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as out:
                    _copy_member(z, info, limit, out)
    except Refused:
        raise
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise Refused("refused: no disk space left to unpack it") from None
        raise Refused("not a readable timeline (the zip is damaged)") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError, ValueError):
        raise Refused("not a readable timeline (the zip is damaged)") from None
    return into


def _checked_members(shared, z: zipfile.ZipFile) -> list:
    """The members to extract, with their byte limits, once every member of ``z`` passed the checks."""
    infos = z.infolist()
    names = [i.filename for i in infos]
    if "chain.json" not in names:
        raise Refused("not an exported unlearning chain (no chain.json inside)")
    if len(set(names)) != len(names):
        raise Refused("refused: the zip names a file twice")
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
            raise Refused(f"refused: unexpected file {shown(info.filename)} inside ({CONTENTS})")
        if stat.S_ISLNK(info.external_attr >> 16) or info.flag_bits & 0x1:
            raise Refused(f"refused: {shown(info.filename)} is a link or encrypted (an export holds plain files)")
        if info.file_size > limit:
            raise Refused(f"refused: {shown(info.filename)} would unpack to more than a saved chain's can hold")
        if info.filename != "README.md":
            files.append((info, limit))
    total = sum(i.file_size for i, _ in files)
    if total > MAX_UNPACKED:
        raise Refused(f"refused: it would unpack to {total / 2**20:.0f} MB, above the {MAX_UNPACKED >> 20} MB limit")
    if total > shutil.disk_usage(tempfile.gettempdir()).free // 2:
        raise Refused(f"refused: it would unpack to {total / 2**20:.0f} MB, more than the free disk space allows")
    return files
