"""A chain as one file: its saved folder (peft adapters, protected images, chain.json, report.json) plus a
model card (README.md with metadata), zipped. ``UnlearningChain.load`` and the CLI's ``--adapter`` /
``--continue-from`` accept the zip as they accept the folder (read by :mod:`nscvf.method.archive`, which
trusts nothing in it); a file made for another base model is refused.
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nscvf.method.outcome import assess
from nscvf.rates import pct


def library_version() -> str:
    """nscvf's version from the installed package's metadata (not ``nscvf.__version__``: importing the
    package face from here closed an import circle, nscvf -> method.chain -> method.export -> nscvf)."""
    try:
        return version("nscvf")
    except PackageNotFoundError:  # a plain checkout (a Space runs one): the package face's own version
        return sys.modules["nscvf"].__version__


def model_card(chain) -> str:
    """README.md for a saved chain: YAML metadata (base model, fingerprint, methods, targets, library) and
    each request's settings and measured numbers (from its result; nothing that was not measured)."""
    steps = chain.steps
    meta = [
        "---",
        "library_name: peft",
        f"base_model: {chain.shared.source}",
        "tags: [nscvf, machine-unlearning, lora]",
        f"nscvf_version: {library_version()}",
        f"base_fingerprint: {chain.shared.fingerprint}",
        f"methods: [{', '.join(sorted({s.config.method for s in steps}))}]",
        f"targets: [{', '.join(s.target or '?' for s in steps)}]",
        "---",
        "",
        "# NSCVF unlearning chain",
        "",
        f"{len(steps)} request(s) on `{chain.shared.source}`, each a LoRA adapter on the visual module (folder "
        "`request_<k>`; `PeftModel.from_pretrained(base, folder)` loads one). Load them all in order with "
        "`UnlearningChain.load(load_model(...), this_folder_or_zip)` or `nscvf ask --adapter`.",
        "",
    ]
    for k, s in enumerate(steps, 1):
        r = s.result
        meta.append(f"## request {k}: {s.target or 'unnamed concept'} ({s.config.method})")
        fields = ("steps", "lr", "lora_rank", "energy", "answer_weight", "seed")  # a teach request has no energy
        settings = {f: getattr(s.config, f) for f in fields if hasattr(s.config, f)}
        meta.append(f"- settings: {json.dumps(settings)}")
        if r is None:
            meta.append("- no measurements recorded")
            continue
        meta.append(f"- outcome: {assess(r.to_dict(), chain.domain.names_things).headline()}")
        meta.append(f"- steps run: {r.steps_run}; retain drift mean {r.retain_drift.get('mean')} max {r.retain_drift.get('max')}")
        meta.append(f"- text answers identical: {r.text_identical} (logits: {r.text_logits_identical})")
        summ = (r.eval_after or {}).get("summary") or {}
        for key in ("target_name_acc_heldout", "retain_acc", "fact_text_acc"):
            if summ.get(key) is not None:
                meta.append(f"- {key}: {pct(summ[key], unit='%')}")
    return "\n".join(meta) + "\n"


def export_chain(chain, path: str | Path) -> Path:
    """Save ``chain`` with its model card and zip it to ``path`` (a .zip file)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = chain.save(Path(tmp) / "chain")
        (folder / "README.md").write_text(model_card(chain))
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(folder).as_posix())
    return path
