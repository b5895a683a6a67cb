"""Importing a saved or exported chain trusts nothing in it (issue 22): hostile zips and folders are refused
with one line, nothing outside the archive is read, nothing but safetensors is deserialised, and a chain or
session already on the model is unchanged. A tiny random LLaVA; one real 2-request export (a forget and a
teach request) is mutated by hand and by a bounded hypothesis fuzz run."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import stat
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nscvf.errors import InputError
from nscvf.method import UnlearnConfig, UnlearningChain

CFG = UnlearnConfig(steps=3, stop_when_forgotten=False, evaluate="none", retain_batch=4)
FUZZ_CASES = 100


def _images(n, seed, side=40):
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(side, side, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny():
    from nscvf.models import wrap_model
    from nscvf.models.tiny import build_llava_clip

    return wrap_model(*build_llava_clip())


@dataclass
class Made:
    live: UnlearningChain  # a chain on the model whose state must never change
    folder: Path  # its saved folder
    zip: Path  # its export
    sentinel: Path  # another chain's saved folder elsewhere on the machine: must never be read or applied
    sentinel_state: dict
    root: Path


@pytest.fixture(scope="module")
def made(tiny, tmp_path_factory):
    from nscvf.method.teach import TeachConfig

    root = tmp_path_factory.mktemp("import")
    live = UnlearningChain(tiny)
    live.forget(_images(3, 5), _images(6, 1), CFG, target="Widget")
    live.teach(_images(3, 6), "Zoë", config=TeachConfig(steps=2, keep_images=4, keep_batch=2, min_steps=1, check_every=8))
    folder = live.save(root / "saved")
    # The sentinel: a saved chain elsewhere on the machine, its first adapter of distinctive random weights.
    sentinel = root / "elsewhere" / "chain"
    shutil.copytree(folder, sentinel)
    g = torch.Generator().manual_seed(7)
    state = {k: torch.randn(v.shape, generator=g) for k, v in live.adapter_state(1).items()}
    save_file(state, str(sentinel / "request_1" / "adapter_model.safetensors"))
    made = Made(live, folder, live.export(root / "timeline.zip"), sentinel, state, root)
    return made


# ------------------------------------------------------------------------------------ the guard


class _Watch:
    """What the importer touched: files under the sentinel folder (Python's open/listdir/scandir, by audit
    hook) and any unpickling (pickle.find_class, torch.load, numpy.load)."""

    roots: tuple[str, ...] = ()
    seen: list = []


def _audit(event, args):
    if not _Watch.roots:
        return
    if event == "pickle.find_class":
        _Watch.seen.append(("unpickled", args))
    elif event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        p = os.fsdecode(args[0])
        if any(os.path.realpath(p).startswith(r) for r in _Watch.roots):
            _Watch.seen.append((event, p))


sys.addaudithook(_audit)  # cannot be removed; a no-op outside a guarded load


@pytest.fixture
def guard(made, monkeypatch):
    """Fail the test if a load reads under the sentinel folder or deserialises anything but safetensors."""
    import numpy

    def trap(name):
        def call(*a, **k):
            _Watch.seen.append(("called", name))
            raise RuntimeError(f"{name} must not be called")

        return call

    import safetensors

    for mod, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (numpy, "load")):
        monkeypatch.setattr(mod, name, trap(f"{mod.__name__}.{name}"))
    real_open = safetensors.safe_open

    def safe_open(path, *a, **k):  # safetensors opens files in Rust, unseen by the audit hook
        _audit("open", (path,))
        return real_open(path, *a, **k)

    monkeypatch.setattr(safetensors, "safe_open", safe_open)
    _Watch.roots, _Watch.seen = (os.path.realpath(made.sentinel.parent),), []
    yield _Watch.seen
    _Watch.roots = ()
    assert not _Watch.seen, f"the importer touched what it must not: {_Watch.seen[:3]}"


def test_the_guard_sees_reads_outside_and_unpickling(made, guard):
    """The fuzz and the cases below rely on this watch: it must see what it is meant to catch."""
    import safetensors

    (made.sentinel / "chain.json").read_bytes()
    with safetensors.safe_open(str(made.sentinel / "request_1" / "adapter_model.safetensors"), "pt"):
        pass
    with pytest.raises(RuntimeError):
        torch.load(made.sentinel / "x")
    pickle.Unpickler(io.BytesIO(pickle.dumps(Path("x")))).load()
    assert [e for e, _ in guard] == ["open", "open", "called", "unpickled"], guard
    guard.clear()


def _state_probe(chain):
    return chain.state_fingerprint, chain.vlm.image_features(_images(2, 99))[1]


def _check_message(msg: str, tmp: Path) -> None:
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    assert str(tmp) not in msg and tempfile.gettempdir() + "/nscvf-import" not in msg, msg
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", msg), msg  # no exception class names


def refused(tiny, made, path, fragment: str) -> str:
    """Loading ``path`` raises one clear InputError containing ``fragment``; the live chain is unchanged."""
    fp, feats = _state_probe(made.live)
    adapters = set(made.live.shared.peft.peft_config)
    with pytest.raises(InputError) as e:
        UnlearningChain.load(tiny, path)
    msg = str(e.value)
    _check_message(msg.replace(str(path), path.name), made.root)  # a folder is named as given (the CLI's own path)
    assert fragment in msg, msg
    assert set(made.live.shared.peft.peft_config) == adapters, "a refused load left an adapter on the model"
    fp2, feats2 = _state_probe(made.live)
    assert fp2 == fp and torch.equal(feats, feats2)
    return msg


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path: Path, files) -> Path:
    """A zip of ``files``: a dict name -> bytes, or (name or ZipInfo, bytes) pairs (duplicates allowed)."""
    items = files.items() if isinstance(files, dict) else files
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": wanted here
        for name, data in items:
            z.writestr(name, data)
    return path


def chain_json(made, edit) -> bytes:
    meta = json.loads((made.folder / "chain.json").read_text())
    edit(meta)
    return json.dumps(meta).encode()


def _with(made, tmp_path, name: str, changes: dict | None = None) -> Path:
    """The real export with members replaced (bytes) or removed (None)."""
    files = members(made.zip)
    for k, v in (changes or {}).items():
        if v is None:
            files.pop(k)
        else:
            files[k] = v
    return write_zip(tmp_path / name, files)


# ------------------------------------------------------------------------------------ round trips


def test_real_export_and_folder_load_identically(tiny, made, guard, tmp_path, monkeypatch):
    probe = _images(3, 99)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a zip is unpacked, for the time of its loading
    for source in (made.zip, made.folder):
        chain = UnlearningChain.load(tiny, source)
        assert [s.kind for s in chain.steps] == ["forget", "teach"] and chain.taught == ["Zoë"]
        assert chain.state_fingerprint == made.live.state_fingerprint and len(chain.results) == 2
        assert torch.allclose(chain.vlm.image_features(probe)[1], made.live.vlm.image_features(probe)[1], atol=1e-6)
        assert [len(s.protect_images) for s in chain.steps] == [3, 3]
        chain.close()
    bad = _with(made, tmp_path, "bad.zip", {"request_2/adapter_model.safetensors": b"junk"})
    refused(tiny, made, bad, "not a readable safetensors file")  # refused after unpacking: the folder goes too
    assert [p.name for p in tmp_path.iterdir()] == ["bad.zip"]


def test_saving_over_an_older_save_leaves_no_stale_protect_image(tiny, made, guard, tmp_path):
    d = tmp_path / "again"
    shutil.copytree(made.folder, d)
    shutil.copy(d / "request_1" / "protect" / "000.png", d / "request_1" / "protect" / "003.png")  # an earlier 4-image save
    made.live.save(d)
    assert UnlearningChain.load(tiny, d).state_fingerprint == made.live.state_fingerprint


# ------------------------------------------------------------------------------------ names that point elsewhere


def test_absolute_step_name_does_not_load_an_adapter_from_elsewhere(tiny, made, guard, tmp_path):
    """The issue's 200-byte zip: only chain.json, the right fingerprint, a step named by an absolute path to
    another chain's adapter (commit 27894ac loaded and applied it)."""
    outside = str(made.sentinel / "request_1")
    evil = write_zip(tmp_path / "evil.zip", {"chain.json": chain_json(made, lambda m: m["steps"][0].update(name=outside))})
    msg = refused(tiny, made, evil, "step 1 must be named request_1")
    assert outside not in msg and msg.startswith("evil.zip: ")
    # The same in a folder given on the command line.
    d = tmp_path / "folder"
    shutil.copytree(made.folder, d)
    (d / "chain.json").write_bytes(chain_json(made, lambda m: m["steps"][0].update(name=outside)))
    refused(tiny, made, d, "step 1 must be named request_1")


@pytest.mark.parametrize(
    "name",
    ["../elsewhere/chain/request_1", "request_1/../../elsewhere/chain/request_1", "request.1", "request_1.", "req",
     "request_\uff11", "request_01", "request_2", "", 1, None, ["request_1"]],
)  # fmt: skip
def test_step_names_other_than_request_k_are_refused(tiny, made, guard, tmp_path, name):
    evil = _with(made, tmp_path, "names.zip", {"chain.json": chain_json(made, lambda m: m["steps"][0].update(name=name))})
    refused(tiny, made, evil, "step 1 must be named request_1")


def test_missing_step_folder_is_refused_not_passed_to_the_hub(tiny, made, guard, tmp_path):
    files = members(made.zip)
    only_chain = write_zip(tmp_path / "only.zip", {"chain.json": files["chain.json"]})
    refused(tiny, made, only_chain, "request_1/adapter_config.json is missing")
    no_weights = _with(made, tmp_path, "noweights.zip", {"request_2/adapter_model.safetensors": None})
    refused(tiny, made, no_weights, "request_2/adapter_model.safetensors is missing")


@pytest.mark.parametrize(
    "member",
    ["/etc/passwd", "../outside.txt", "request_1/../../x.png", "request_1\\adapter_model.safetensors", "./chain.json",
     "request_1/adapter_model.bin", "request_1/protect/000.jpg", "request_1/protect/5.png", "request_3/adapter_config.json",
     "request_1/protect/0000.png", "request_1/protect/\u0660\u0660\u0660.png", "__MACOSX/._chain.json", "request_1/x/"],
)  # fmt: skip
def test_members_an_export_never_holds_are_refused_before_extracting(tiny, made, guard, tmp_path, member):
    evil = write_zip(tmp_path / "extra.zip", {**members(made.zip), member: b"\x89PNG\r\n\x1a\n"})
    msg = refused(tiny, made, evil, "unexpected file")
    assert ascii(member)[:20] in msg or len(ascii(member)) > 60


# ------------------------------------------------------------------------------------ pickles


class _Payload:
    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle ran"))


def test_pickles_are_never_opened(tiny, made, guard, tmp_path):
    payload = _Payload()
    payload.marker = tmp_path / "ran.txt"
    data = pickle.dumps(payload)
    # In a zip: an adapter_model.bin is not a member an export holds.
    z = write_zip(tmp_path / "pickle.zip", {**members(made.zip), "request_1/adapter_model.bin": data})
    refused(tiny, made, z, "unexpected file 'request_1/adapter_model.bin'")
    # In a folder: only the pickle (the safetensors file gone), or a pickle named as the safetensors file.
    d = tmp_path / "folder"
    shutil.copytree(made.folder, d)
    (d / "request_1" / "adapter_model.safetensors").unlink()
    (d / "request_1" / "adapter_model.bin").write_bytes(data)
    refused(tiny, made, d, "request_1/adapter_model.safetensors is missing")
    (d / "request_1" / "adapter_model.safetensors").write_bytes(data)
    refused(tiny, made, d, "request_1/adapter_model.safetensors is not a readable safetensors file")
    z = _with(made, tmp_path, "named.zip", {"request_1/adapter_model.safetensors": data})
    refused(tiny, made, z, "not a readable safetensors file")
    assert not payload.marker.exists()


# ------------------------------------------------------------------------------------ symlinks


def test_symbolic_links_are_refused_in_folders_and_zips(tiny, made, guard, tmp_path):
    d = tmp_path / "linked"
    shutil.copytree(made.folder, d)
    shutil.rmtree(d / "request_1")
    (d / "request_1").symlink_to(made.sentinel / "request_1")  # the step's folder is another chain's
    refused(tiny, made, d, "request_1 is a symbolic link")
    (d / "request_1").unlink()
    shutil.copytree(made.folder / "request_1", d / "request_1")
    (d / "request_1" / "adapter_model.safetensors").unlink()
    (d / "request_1" / "adapter_model.safetensors").symlink_to(made.sentinel / "request_1" / "adapter_model.safetensors")
    refused(tiny, made, d, "request_1/adapter_model.safetensors is a symbolic link")
    (d / "request_1" / "adapter_model.safetensors").unlink()
    (d / "report.json").unlink()
    (d / "report.json").symlink_to(made.sentinel / "report.json")
    refused(tiny, made, d, "report.json is a symbolic link")
    # A zip member with the mode of a link (whose data is the link's target).
    info = zipfile.ZipInfo("request_1/protect/000.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    files = [(n, b) for n, b in members(made.zip).items() if n != info.filename]
    z = write_zip(tmp_path / "link.zip", [*files, (info, str(made.sentinel / "request_1" / "protect" / "000.png").encode())])
    refused(tiny, made, z, "is a link or encrypted")


# ------------------------------------------------------------------------------------ sizes


def test_zip_bombs_and_lying_sizes_are_refused_before_extracting(tiny, made, guard, tmp_path, monkeypatch):
    import nscvf.method.archive as archive

    written = []
    real_copy = archive._copy_member
    monkeypatch.setattr(
        archive, "_copy_member", lambda z, info, limit, out: written.append(info.filename) or real_copy(z, info, limit, out)
    )
    zeros = bytes(40 << 20)  # 40 MB of zeros: 40 kB deflated
    bomb = _with(made, tmp_path, "bomb.zip", {"request_1/protect/000.png": zeros})
    assert bomb.stat().st_size < 1 << 20
    refused(tiny, made, bomb, "would unpack to more than a saved chain's can hold")
    assert written == ["chain.json"], written  # only chain.json (1 MB at most) was read before the refusal
    big_json = _with(made, tmp_path, "bigjson.zip", {"chain.json": b" " * (2 << 20) + b"{}"})
    refused(tiny, made, big_json, "'chain.json' is larger than a saved chain's can be")
    big_adapter = _with(made, tmp_path, "bigadapter.zip", {"request_1/adapter_model.safetensors": bytes(1 << 20)})
    refused(tiny, made, big_adapter, "request_1/adapter_model.safetensors' would unpack to more")
    # A header that declares fewer bytes than the member holds: the reader stops at the declared size.
    true = members(made.zip)["report.json"]
    assert len(true) > 100
    src = _patched(_with(made, tmp_path, "lying.zip"), "report.json", 22, 24, 100, 4)  # uncompressed size: 100
    refused(tiny, made, src, "the zip is damaged")
    # The free disk space bounds it too.
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    written.clear()
    refused(tiny, made, made.zip, "more than the free disk space allows")
    assert written == ["chain.json"]


def _patched(path: Path, member: str, local: int, central: int, value: int, size: int) -> Path:
    """Overwrite a field of ``member``'s local header (at offset ``local``) and central-directory entry
    (``central``) with ``value`` (``size`` bytes): what zipfile would not write."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    at, name, i = [info.header_offset + local], member.encode(), raw.find(b"PK\x01\x02")
    while i != -1:
        n = int.from_bytes(raw[i + 28 : i + 30], "little")
        if raw[i + 46 : i + 46 + n] == name:
            at.append(i + central)
        i = raw.find(b"PK\x01\x02", i + 4)
    assert len(at) == 2
    for o in at:
        raw[o : o + size] = value.to_bytes(size, "little")
    path.write_bytes(bytes(raw))
    return path


def test_decoded_images_and_records_are_bounded_in_all(tiny, made, guard, monkeypatch):
    import nscvf.method.archive as archive

    monkeypatch.setattr(archive, "MAX_PROTECT_PIXELS", 5 * 40 * 40)  # the export's 6 images of 40x40: one too many
    refused(tiny, made, made.zip, "its protect images hold more than")
    monkeypatch.setattr(archive, "MAX_PROTECT_PIXELS", 6 * 40 * 40)
    UnlearningChain.load(tiny, made.zip).close()
    monkeypatch.setattr(archive, "MAX_REPORT", 1000)
    refused(tiny, made, made.zip, "'report.json' would unpack to more than a saved chain's can hold")
    refused(tiny, made, made.folder, "report.json is larger than a saved chain's can be")


def test_too_many_steps_or_images_are_refused(tiny, made, guard, tmp_path):
    many = chain_json(made, lambda m: m["steps"].extend([m["steps"][0]] * 120))
    refused(tiny, made, _with(made, tmp_path, "many.zip", {"chain.json": many}), "at most 100 requests")
    files = members(made.zip)
    png = files["request_1/protect/000.png"]
    cfg_small = chain_json(made, lambda m: m["steps"][0]["config"].update(max_forget_images=2))
    z = write_zip(tmp_path / "imgs.zip", {**files, "chain.json": cfg_small, "request_1/protect/002.png": png})
    refused(tiny, made, z, "unexpected file 'request_1/protect/002.png'")  # 3 images > max_forget_images=2
    big = io.BytesIO()
    _images(1, 3, side=600)[0].save(big, "PNG")
    refused(tiny, made, _with(made, tmp_path, "bigpng.zip", {"request_1/protect/000.png": big.getvalue()}), "600x600 pixels")
    jpeg = io.BytesIO()
    _images(1, 3)[0].save(jpeg, "JPEG")
    refused(tiny, made, _with(made, tmp_path, "jpeg.zip", {"request_1/protect/001.png": jpeg.getvalue()}), "is not a PNG image")


def test_an_export_from_before_the_settings_moved_still_loads(tiny, made, guard, tmp_path):
    """Exports written before issue 16 carry NPO's beta and the world's render counts in a forget step's
    settings (chain.json and report.json); those retired keys are dropped by name, nothing else is."""
    old = {"baseline_beta": 0.1, "region_size": 96, "retain_per_character": 8, "protect_per_character": 6}

    def chain(m):
        m["steps"][0]["config"].update(old)

    def report(r):
        r["requests"][0]["config"].update(old)

    path = _with(made, tmp_path, "old.zip", {"chain.json": chain_json(made, chain), "report.json": _report(made, report)})
    loaded = UnlearningChain.load(tiny, path)
    assert loaded.state_fingerprint == made.live.state_fingerprint and len(loaded.results) == 2
    loaded.close()
    still = _with(made, tmp_path, "evil.zip", {"chain.json": chain_json(made, lambda m: m["steps"][0]["config"].update(old, evil=1))})
    refused(tiny, made, still, "config has unknown key(s) 'evil'")


# ------------------------------------------------------------------------------------ schema


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda m: m["steps"][0]["config"].update(evil=1), "config has unknown key(s) 'evil'"),
        (lambda m: m["steps"][0]["config"].update(__class__="x"), "unknown key(s) '__class__'"),
        (lambda m: m["steps"][0].update(path="/tmp"), "must hold exactly name"),
        (lambda m: m.update(extra=1), "must hold exactly base_model"),
        (lambda m: m["steps"][0].update(kind="pickle"), "kind must be forget or teach"),
        (lambda m: m["steps"][0]["config"].update(lora_rank=9999), "lora_rank=9999 is out of range"),
        (lambda m: m["steps"][0]["config"].update(lora_rank=4.0), "lora_rank has the wrong type"),
        (lambda m: m["steps"][0]["config"].update(null_space=1), "null_space has the wrong type"),
        (lambda m: m["steps"][0]["config"].update(method="magic"), "unknown method 'magic'"),
        (lambda m: m["steps"][1]["config"].update(modules="visual"), "do not fit a teach request"),
        (lambda m: m["steps"][1]["config"].update(lora_alpha=1e9), "lora_alpha is out of range"),
        (lambda m: m["steps"][0].update(target="line\nbreak"), "target must be a short line of text"),
        (lambda m: m["steps"][0].update(target="x" * 500), "target must be a short line of text"),
        (lambda m: m["steps"][0].update(forget_fp="../../x"), "forget_fp is not valid"),
        (lambda m: m.update(base_fingerprint=None), "base_fingerprint must be a short line of text"),
        (lambda m: m.update(steps={"a": 1}), "steps must be a list"),
    ],
)
def test_chain_json_outside_the_schema_is_refused(tiny, made, guard, tmp_path, edit, fragment):
    refused(tiny, made, _with(made, tmp_path, "schema.zip", {"chain.json": chain_json(made, edit)}), fragment)


@pytest.mark.parametrize(
    "data",
    [b"{not json", b'{"base_model": NaN}', b"[" * 100000 + b"]" * 100000, b"\xff\xfe{}", b"[]", b"null", b'"x"',
     json.dumps({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}).encode(),
     b'{"base_model": 1e999}', b""],
)  # fmt: skip
def test_bad_json_is_refused(tiny, made, guard, tmp_path, data):
    refused(tiny, made, _with(made, tmp_path, "badjson.zip", {"chain.json": data}), "not a readable timeline")


def _report(made, edit) -> bytes:
    report = json.loads((made.folder / "report.json").read_text())
    edit(report)
    return json.dumps(report).encode()


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda r: r["requests"][0].update(evil=1), "report.json request 1 has unknown key(s) 'evil'"),
        (lambda r: r.update(evil=1), "report.json must hold chain and a list of requests"),
        (lambda r: r["requests"][0].update(n_forget="3"), "n_forget has the wrong type"),
        (lambda r: r["requests"][0].pop("probes_before"), "lacks probes_before"),
        (lambda r: r["requests"][0].update(adapter_name="/tmp/x"), "does not match step 1 of chain.json"),
        (lambda r: r["requests"][1].update(target="Other"), "does not match step 2 of chain.json"),
        (lambda r: r["requests"][0]["config"].update(lr=0.5), "does not match step 1 of chain.json"),
        (lambda r: r["requests"].extend(r["requests"]), "more requests than chain.json"),
        # The nested records the outcome, the CLI and the app read (a crafted one must not crash them later).
        (lambda r: r["requests"][0].update(probes_before={}), "probes_before is not a record this library writes"),
        (lambda r: r["requests"][0]["retain_drift"].update(mean="x"), "retain_drift is not a record"),
        (lambda r: r["requests"][0]["null_space"].update(summary={"layers": "5"}), "null_space is not a record"),
        (lambda r: r["requests"][1].update(eval_after={"summary": 3}), "eval_after is not a record"),
        (lambda r: r["requests"][0].update(n_forget=5), "does not answer every question on its 5 images"),
        (lambda r: r["requests"][1]["embeddings"]["labels"].pop(), "embeddings do not line up"),
    ],
)
def test_report_json_outside_the_schema_is_refused(tiny, made, guard, tmp_path, edit, fragment):
    refused(tiny, made, _with(made, tmp_path, "report.zip", {"report.json": _report(made, edit)}), fragment)


# ------------------------------------------------------------------------------------ tensors


def _safetensors(made, k: int, edit) -> bytes:
    from safetensors.torch import load_file, save

    state = load_file(str(made.folder / f"request_{k}" / "adapter_model.safetensors"))
    edit(state)
    return save({k: v.contiguous() for k, v in state.items()})


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda s: s.update({k: v[:4] if "lora_A" in k else v[:, :4] for k, v in s.items()}), "tensor shapes"),
        (lambda s: s.update({"base_model.model.model.language_model.evil.lora_A.weight": torch.zeros(8, 8)}), "other tensor names"),
        (lambda s: s.pop(next(iter(s))), "other tensor names"),
        (lambda s: s.update({k: v.to(torch.int32) for k, v in s.items()}), "tensor shapes"),
        (lambda s: s.update({k: v * float("nan") for k, v in s.items()}), "non-finite weights"),
    ],
)  # fmt: skip
def test_adapter_tensors_must_fit_the_models_lora_layers(tiny, made, guard, tmp_path, edit, fragment):
    data = _safetensors(made, 1, edit)
    refused(tiny, made, _with(made, tmp_path, "tensors.zip", {"request_1/adapter_model.safetensors": data}), fragment)


def test_adapter_config_must_match_chain_json(tiny, made, guard, tmp_path):
    cfg = json.loads((made.folder / "request_1" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["model.language_model.layers.0.self_attn.q_proj"]
    z = _with(made, tmp_path, "acfg.zip", {"request_1/adapter_config.json": json.dumps(cfg).encode()})
    refused(tiny, made, z, "request_1/adapter_config.json does not match")


def test_other_refusals_name_the_file_only(tiny, made, guard, tmp_path):
    from nscvf.models import wrap_model
    from nscvf.models.tiny import build_llava_clip

    refused(tiny, made, tmp_path / "nowhere", "no such file or folder")
    (tmp_path / "empty").mkdir()
    refused(tiny, made, tmp_path / "empty", "no chain.json")
    (tmp_path / "text.zip").write_text("hello")
    refused(tiny, made, tmp_path / "text.zip", "text.zip: not a zip file")
    dup = write_zip(tmp_path / "dup.zip", [*members(made.zip).items(), ("chain.json", b"{}")])
    refused(tiny, made, dup, "names a file twice")
    enc = _patched(_with(made, tmp_path, "enc.zip"), "report.json", 6, 8, 0x1, 2)  # general purpose flags: encrypted
    refused(tiny, made, enc, "is a link or encrypted")
    other = wrap_model(*build_llava_clip(seed=1))
    with pytest.raises(InputError, match="timeline.zip: made for another base model") as e:
        UnlearningChain.load(other, made.zip)
    _check_message(str(e.value), made.root)


# ------------------------------------------------------------------------------------ the CLI and the app


def test_cli_refuses_hostile_archives_with_one_line_and_exit_2(tmp_path, capsys, embedded, made):
    from nscvf import world
    from nscvf.cli import main

    img = tmp_path / "m.png"
    world.render(world.get_character("Mirel"), world.HELDOUT_SEED_BASE + 3).save(img)
    step = {"name": str(made.sentinel / "request_1"), "kind": "forget", "target": "Mirel",
            "config": UnlearnConfig().to_dict(), "forget_fp": ""}  # fmt: skip
    meta = {"base_model": "x", "base_fingerprint": embedded.fingerprint, "steps": [step]}

    def zip_of(name, edit=lambda m: None, extra=None):
        m = json.loads(json.dumps(meta))
        edit(m)
        return write_zip(tmp_path / name, {"chain.json": json.dumps(m).encode(), **(extra or {})})

    cases = [
        (zip_of("absolute.zip"), "step 1 must be named request_1"),
        (zip_of("missing.zip", lambda m: m["steps"][0].update(name="request_1")), "request_1/adapter_config.json is missing"),
        (zip_of("dotted.zip", lambda m: m["steps"][0].update(name="a.b")), "step 1 must be named request_1"),
        (zip_of("pickle.zip", lambda m: m["steps"][0].update(name="request_1"), {"request_1/adapter_model.bin": b"\x80\x04."}),
         "unexpected file 'request_1/adapter_model.bin'"),
    ]  # fmt: skip
    for path, fragment in cases:
        for argv in (["ask", "--adapter", str(path), "--image", str(img), "Who is this?"],
                     ["forget", "--character", "Mirel", "--continue-from", str(path), "--out", str(tmp_path / "o")]):  # fmt: skip
            assert main(argv) == 2, argv
            out = capsys.readouterr()
            err = out.err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"nscvf: error: {path.name}: ") and fragment in err[0], out.err
            _check_message(err[0], tmp_path)
            assert not out.out


def test_app_import_refuses_hostile_archives_and_keeps_the_session(tiny, made, tmp_path):
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from nscvf.cache import Cache
    from webapp.service import timeline
    from webapp.state import runtime
    from webapp.state.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "data", examples_dir=root / "assets" / "examples", model_dir=root / "assets" / "model"
    )
    rt = runtime.local(settings, tiny, Cache(tmp_path / "data" / "cache"), warm_up=False)
    sess = rt.sessions.get("visitor")
    chain, records = sess.chain, list(sess.records)
    outside = str(made.sentinel / "request_1")
    hostile = [
        write_zip(tmp_path / "evil.zip", {"chain.json": chain_json(made, lambda m: m["steps"][0].update(name=outside))}),
        _with(made, tmp_path, "pickle.zip", {"request_1/adapter_model.safetensors": b"\x80\x04K\x01."}),
        _with(
            made, tmp_path, "shapes.zip", {"request_1/adapter_model.safetensors": _safetensors(made, 1, lambda s: s.popitem())}
        ),
        _with(made, tmp_path, "keys.zip", {"report.json": _report(made, lambda r: r["requests"][0].update(evil=1))}),
    ]
    for path in hostile:
        with pytest.raises(InputError) as e:
            timeline.import_timeline(rt, sess, str(path))
        _check_message(str(e.value), tmp_path)
        assert str(e.value).startswith(path.name)
        assert sess.chain is chain and sess.records == records and not sess.busy
    out = timeline.import_timeline(rt, sess, str(made.zip))  # the session still imports a real export
    assert [r.target for r in out.records] == ["Widget", "Zoë"]


# ------------------------------------------------------------------------------------ fuzz


HOSTILE_NAMES = ["/etc/passwd", "../x", "request_1/../../elsewhere", "request_1\\..\\x", "request_1/protect/../../x.png",
                 "\u202echain.json", "request_１/adapter_config.json", "chain.json\x00", "request_1/adapter_model.bin",
                 "request_1/protect/000.png/", "a" * 300]  # fmt: skip


def test_fuzz_mutated_and_hostile_archives(tiny, made, guard, tmp_path, capsys):
    """Mutated real exports and hand-made hostile ones, a fixed number of cases: every load either gives
    the archive's own adapters or one InputError line; nothing under the sentinel folder is read, nothing
    but safetensors is deserialised (``guard``), and the live chain never changes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from safetensors.torch import load as st_load

    base = members(made.zip)
    names = sorted(base)
    sentinel = str(made.sentinel / "request_1")
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
        | st.sampled_from([sentinel, "../" * 5 + "etc", "request_1", "request_2", "teach", "forget", "nscvf"]),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    )  # fmt: skip

    def edit_json(data: bytes, draw) -> bytes:
        try:
            doc = json.loads(data)
        except ValueError:  # already broken by an earlier mutation
            return data
        node, path = doc, []
        for _ in range(draw(st.integers(0, 4))):  # walk down to a random node
            if isinstance(node, dict) and node:
                key = draw(st.sampled_from(sorted(node)))
            elif isinstance(node, list) and node:
                key = draw(st.integers(0, len(node) - 1))
            else:
                break
            path.append((node, key))
            node = node[key]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            return json.dumps(draw(json_values)).encode()
        parent, key = path[-1]
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            parent.pop(key)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_values)
        else:
            parent.append(draw(json_values))
        return json.dumps(doc).encode()

    @st.composite
    def archives(draw):
        files = [(n, base[n]) for n in names]
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["json", "json", "bytes", "rename", "add", "drop", "hostile"]))
            jsons = [j for j, (n, _) in enumerate(files) if n.endswith(".json")]
            i = draw(st.sampled_from(jsons)) if kind == "json" and jsons else draw(st.integers(0, len(files) - 1))
            name, data = files[i]
            if kind == "json" and name.endswith(".json"):
                files[i] = (name, edit_json(data, draw))
            elif kind == "bytes":
                buf = bytearray(data)
                for _ in range(draw(st.integers(1, 8))):
                    if buf:
                        buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
                cut = draw(st.integers(0, len(buf)))
                files[i] = (name, bytes(buf[:cut] if draw(st.booleans()) else buf))
            elif kind == "rename":
                files[i] = (draw(st.sampled_from(HOSTILE_NAMES + names)), data)
            elif kind == "add":
                payload = draw(st.sampled_from([pickle.dumps({"x": 1}), b"\x89PNG\r\n\x1a\n", bytes(4096), data]))
                files.append((draw(st.sampled_from(HOSTILE_NAMES + names)), payload))
            elif kind == "drop" and len(files) > 1:
                files.pop(i)
            elif kind == "hostile":  # hand-made: only chain.json, its step pointing at the sentinel
                meta = json.loads(base["chain.json"])
                meta["steps"][0]["name"] = draw(
                    st.sampled_from([sentinel, "../elsewhere/chain/request_1", "request_1/../request_1"])
                )
                files = [("chain.json", json.dumps(meta).encode())]
        return files

    count = {"cases": 0, "loaded": 0, "refused": 0}
    fp, feats = _state_probe(made.live)

    @settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(archives())
    def run(files):
        count["cases"] += 1
        path = tmp_path / "fuzz.zip"
        try:
            write_zip(path, files)
        except ValueError:  # a name zipfile itself cannot write
            return
        adapters = set(made.live.shared.peft.peft_config)
        try:
            chain = UnlearningChain.load(tiny, path)
        except InputError as e:
            count["refused"] += 1
            _check_message(str(e), made.root)
            assert set(made.live.shared.peft.peft_config) == adapters
            return
        count["loaded"] += 1
        own = dict(files)
        for k, step in enumerate(chain.steps, 1):  # the adapters are the archive's own, never the sentinel's
            theirs = st_load(own[f"request_{k}/adapter_model.safetensors"])
            assert all(torch.equal(step.adapter_state[n].float(), theirs[n].float()) for n in theirs)
        first = chain.steps[0].adapter_state if chain.steps else {}
        assert not any(torch.equal(first[n].float(), v) for n, v in made.sentinel_state.items() if n in first)
        chain.close()

    run()
    with capsys.disabled():
        print(f"\nfuzz: {count['cases']} archives ({count['loaded']} loaded, {count['refused']} refused)")
    assert count["cases"] >= FUZZ_CASES * 0.9 and count["refused"] > FUZZ_CASES / 2
    fp2, feats2 = _state_probe(made.live)
    assert fp2 == fp and torch.equal(feats, feats2)
